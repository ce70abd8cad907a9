package telemetry

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/trace"

	"github.com/gerritflow/gerritflow/pkg/config"
)

func TestServerMetricsHealthReady(t *testing.T) {
	tel, err := Start(context.Background(), "voter", config.Otel{}, "127.0.0.1:0", WithLogOutput(io.Discard))
	if err != nil {
		t.Fatal(err)
	}
	defer tel.Shutdown(context.Background())
	a := tel.Counter("votes_total", "votes", "outcome")
	b := tel.Counter("votes_total", "votes", "outcome") // a second handler in one process
	a.WithLabelValues("posted").Inc()
	b.WithLabelValues("posted").Inc()
	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + tel.Addr() + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	if code, _ := get("/readyz"); code != http.StatusServiceUnavailable {
		t.Errorf("/readyz before Ready = %d; want 503", code)
	}
	tel.Ready()
	if code, _ := get("/readyz"); code != http.StatusOK {
		t.Errorf("/readyz after Ready = %d; want 200", code)
	}
	tel.AddReadyCheck(func(context.Context) error { return io.ErrUnexpectedEOF })
	if code, body := get("/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "unexpected EOF") {
		t.Errorf("/readyz with a failing check = %d %q; want 503 naming the cause", code, body)
	}
	if code, _ := get("/healthz"); code != http.StatusOK {
		t.Errorf("/healthz = %d", code)
	}
	_, metrics := get("/metrics")
	if !strings.Contains(metrics, `gerritflow_voter_votes_total{outcome="posted"} 2`) {
		t.Errorf("/metrics lacks the shared counter at 2:\n%s", metrics)
	}
}

func TestLogLinesAreJSONWithTraceID(t *testing.T) {
	var buf bytes.Buffer
	tel, err := Start(context.Background(), "parser", config.Otel{}, "", WithLogOutput(&buf))
	if err != nil {
		t.Fatal(err)
	}
	ctx, span := tel.Tracer.Start(context.Background(), "x")
	tel.Logger.InfoContext(ctx, "decision", KeyDecision, "skip", KeyChange, 12)
	span.End()
	var line map[string]any
	if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
		t.Fatalf("log line is not JSON: %q", buf.String())
	}
	want := trace.SpanContextFromContext(ctx).TraceID().String()
	if line["service"] != "parser" || line[KeyTraceID] != want || line[KeyDecision] != "skip" {
		t.Errorf("log line = %v; want service parser, trace_id %s, decision skip", line, want)
	}
}
