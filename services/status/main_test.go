package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/gerritflow/gerritflow/pkg/natstest"
	"github.com/gerritflow/gerritflow/pkg/servicetest"
)

func TestRunServesReadyAndDrains(t *testing.T) {
	srv, _ := natstest.JetStream(t)
	addr := servicetest.FreeAddr(t)
	cfg := servicetest.WriteConfig(t, fmt.Sprintf("nats: { url: %q }\nlisten: { status: %q }\nstatus: { jaeger_url: http://127.0.0.1:16686 }\n", srv.URL(), addr))
	stop := servicetest.Start(t, run, []string{"--config", cfg}, servicetest.Env(nil), addr)

	// The page and the telemetry routes share the one listen address.
	for path, want := range map[string]string{"/": "gerritflow status", "/metrics": "gerritflow_status_buildsets", "/healthz": "ok", "/api/buildsets": `"buildsets":[]`} {
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), want) {
			t.Errorf("GET %s = %d %.200q; want 200 containing %q", path, resp.StatusCode, body, want)
		}
	}

	// An open event stream must not hold the drain up: it is closed at shutdown.
	resp, err := http.Get("http://" + addr + "/api/events")
	if err != nil {
		t.Fatalf("GET /api/events: %v", err)
	}
	defer resp.Body.Close()
	if err := stop(); err != nil {
		t.Fatalf("run after cancel = %v; want nil (clean drain)", err)
	}
	if _, err := io.ReadAll(resp.Body); err != nil {
		t.Errorf("event stream after shutdown: %v; want a clean end", err)
	}
}

func TestRunRefusesBadConfigAndMissingBuckets(t *testing.T) {
	srv := natstest.Start(t) // nothing provisioned
	bad := servicetest.WriteConfig(t, "nats: { url: x }\nstatus: { recent: -1m }\n")
	if err := run(context.Background(), []string{"--config", bad}, servicetest.Env(nil)); err == nil || !strings.Contains(err.Error(), "status.recent") {
		t.Errorf("run(bad config) = %v; want an error naming status.recent", err)
	}
	good := servicetest.WriteConfig(t, fmt.Sprintf("nats: { url: %q }\n", srv.URL()))
	err := run(context.Background(), []string{"--config", good}, servicetest.Env(nil))
	if err == nil || !strings.Contains(err.Error(), "not provisioned") || !strings.Contains(err.Error(), "kv buildsets") {
		t.Errorf("run(unprovisioned) = %v; want a not-provisioned error naming kv buildsets", err)
	}
}
