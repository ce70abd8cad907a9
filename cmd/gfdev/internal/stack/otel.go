package stack

import (
	"fmt"
	"os"
	"strings"
)

// otelConfig is the otel section the services get from the environment of
// gfdev: with OTEL_EXPORTER_OTLP_ENDPOINT set (e.g. http://127.0.0.1:4317, a
// Jaeger started with `docker compose up jaeger`), every service exports its
// spans there; OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf picks OTLP/HTTP
// (port 4318) over gRPC. An otel section in Options.ExtraConfig wins.
func (s *Stack) otelConfig() string {
	endpoint := os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT")
	if endpoint == "" || strings.Contains("\n"+s.opts.ExtraConfig, "\notel:") {
		return ""
	}
	protocol := "grpc"
	if strings.HasPrefix(os.Getenv("OTEL_EXPORTER_OTLP_PROTOCOL"), "http") {
		protocol = "http"
	}
	return fmt.Sprintf("otel:    { endpoint: %q, protocol: %s }\n", endpoint, protocol)
}
