package main

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/gerritflow/gerritflow/pkg/natstest"
	"github.com/gerritflow/gerritflow/pkg/servicetest"
)

func TestRunServesReadyAndDrains(t *testing.T) {
	srv, _ := natstest.JetStream(t)
	addr := servicetest.FreeAddr(t)
	cfg := servicetest.WriteConfig(t, fmt.Sprintf("nats: { url: %q }\nlisten: { parser: %q }\n", srv.URL(), addr))
	stop := servicetest.Start(t, run, []string{"--config", cfg}, servicetest.Env(nil), addr)
	if err := stop(); err != nil {
		t.Fatalf("run after cancel = %v; want nil (clean drain)", err)
	}
}

func TestRunRefusesBadConfigAndMissingStreams(t *testing.T) {
	srv := natstest.Start(t) // nothing provisioned
	bad := servicetest.WriteConfig(t, "nats: { url: x }\nparser: { max_event_bytes: -1 }\n")
	if err := run(context.Background(), []string{"--config", bad}, servicetest.Env(nil)); err == nil || !strings.Contains(err.Error(), "parser.max_event_bytes") {
		t.Errorf("run(bad config) = %v; want an error naming parser.max_event_bytes", err)
	}
	good := servicetest.WriteConfig(t, fmt.Sprintf("nats: { url: %q }\n", srv.URL()))
	if err := run(context.Background(), []string{"--config", good}, servicetest.Env(nil)); err == nil || !strings.Contains(err.Error(), "not provisioned") {
		t.Errorf("run(unprovisioned) = %v; want a not-provisioned error", err)
	}
}
