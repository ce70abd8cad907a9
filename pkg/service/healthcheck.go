package service

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/gerritflow/gerritflow/pkg/config"
)

// Healthcheck is `<service> healthcheck [--ready] --config PATH`: it asks the
// running service on listen.<name> for /healthz (or /readyz with --ready)
// and fails unless the answer is 200. The images are distroless, with no
// shell and no HTTP client, so this is the container's HEALTHCHECK (compose);
// Kubernetes probes the same endpoints over HTTP itself. A listen address
// on every interface (0.0.0.0, [::], ":9102") is asked on loopback.
func Healthcheck(ctx context.Context, name string, args []string, getenv func(string) string) error {
	fs := flag.NewFlagSet(name+" healthcheck", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	ready := fs.Bool("ready", false, "ask /readyz (NATS connected, everything bound exists) instead of /healthz")
	path := fs.String("config", getenv("GERRITFLOW_CONFIG"), "path of the YAML config")
	timeout := fs.Duration("timeout", 3*time.Second, "how long to wait for the answer")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("healthcheck: %w (flags: --config PATH, --ready, --timeout D)", err)
	}
	if *path == "" {
		return config.ErrNoConfig
	}
	cfg, err := config.LoadFile(*path)
	if err != nil {
		return err
	}
	addr := cfg.Listen.For(name)
	if addr == "" {
		return fmt.Errorf("healthcheck: listen.%s is not set", name)
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("healthcheck: listen.%s %q: %w", name, addr, err)
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	endpoint := "/healthz"
	if *ready {
		endpoint = "/readyz"
	}
	url := "http://" + net.JoinHostPort(host, port) + endpoint
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("healthcheck: %w", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("healthcheck: %s answered %d: %s", url, resp.StatusCode, body)
	}
	return nil
}
