package service

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestHealthcheck asks a listener as the container's HEALTHCHECK would:
// listen.<name> on every interface is asked on loopback; 200 passes, any
// other answer or none fails, naming what answered.
func TestHealthcheck(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "stream GERRIT_RAW: not found", http.StatusServiceUnavailable)
	})
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	port := ln.Addr().(*net.TCPAddr).Port

	write := func(listen string) string {
		p := filepath.Join(t.TempDir(), "gerritflow.yaml")
		if err := os.WriteFile(p, []byte("listen: { parser: \""+listen+"\" }\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	getenv := func(string) string { return "" }
	ctx := context.Background()
	all := write(fmt.Sprintf("0.0.0.0:%d", port))

	if err := Healthcheck(ctx, "parser", []string{"--config", all}, getenv); err != nil {
		t.Errorf("healthcheck of a live parser = %v", err)
	}
	if err := Healthcheck(ctx, "parser", []string{"--config", write(fmt.Sprintf(":%d", port))}, getenv); err != nil {
		t.Errorf("healthcheck with listen :%d = %v", port, err)
	}
	err = Healthcheck(ctx, "parser", []string{"--ready", "--config", all}, getenv)
	if err == nil || !strings.Contains(err.Error(), "503") || !strings.Contains(err.Error(), "GERRIT_RAW") {
		t.Errorf("healthcheck --ready of an unready parser = %v; want the 503 and its reason", err)
	}
	srv.Close()
	if err := Healthcheck(ctx, "parser", []string{"--config", all}, getenv); err == nil {
		t.Errorf("healthcheck with nothing listening passed")
	}
	if err := Healthcheck(ctx, "parser", nil, getenv); err == nil || !strings.Contains(err.Error(), "--config") {
		t.Errorf("healthcheck without a config = %v; want it to ask for --config", err)
	}
}
