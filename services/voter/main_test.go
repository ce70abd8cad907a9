package main

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/gerritflow/gerritflow/pkg/gerritsim"
	"github.com/gerritflow/gerritflow/pkg/natstest"
	"github.com/gerritflow/gerritflow/pkg/servicetest"
)

func writeConfig(t *testing.T, natsURL, gerritURL, listen string, extra string) string {
	t.Helper()
	return servicetest.WriteConfig(t, fmt.Sprintf(
		"nats: { url: %q }\ngerrit: { url: %q, user: ci, password_env: GERRIT_HTTP_PASSWORD }\nlisten: { voter: %q }\n%s",
		natsURL, gerritURL, listen, extra))
}

var env = servicetest.Env(map[string]string{"GERRIT_HTTP_PASSWORD": gerritsim.DefaultPassword})

func TestRunServesReadyAndDrains(t *testing.T) {
	srv, _ := natstest.JetStream(t)
	g := gerritsim.Start(t)
	addr := servicetest.FreeAddr(t)
	stop := servicetest.Start(t, run, []string{"--config", writeConfig(t, srv.URL(), g.URL(), addr, "")}, env, addr)
	if err := stop(); err != nil {
		t.Fatalf("run after cancel = %v; want nil (clean drain)", err)
	}
}

func TestRunRefusesBadConfig(t *testing.T) {
	srv, _ := natstest.JetStream(t)
	g := gerritsim.Start(t)
	tests := []struct {
		name, extra string
		getenv      func(string) string
		wantKey     string
	}{
		{"bad outdated", "vote: { outdated: always }\n", env, "vote.outdated"},
		{"positive failure", "vote: { success: 1, failure: 1 }\n", env, "vote.failure"},
		{"no password", "", servicetest.Env(nil), "gerrit.password_env"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := run(context.Background(), []string{"--config", writeConfig(t, srv.URL(), g.URL(), "", tt.extra)}, tt.getenv)
			if err == nil || !strings.Contains(err.Error(), tt.wantKey) {
				t.Errorf("run = %v; want an error naming %s", err, tt.wantKey)
			}
		})
	}
}

func TestRunRefusesMissingStreams(t *testing.T) {
	srv := natstest.Start(t) // nothing provisioned
	g := gerritsim.Start(t)
	err := run(context.Background(), []string{"--config", writeConfig(t, srv.URL(), g.URL(), "", "")}, env)
	if err == nil || !strings.Contains(err.Error(), "not provisioned") || !strings.Contains(err.Error(), "kv votes") {
		t.Errorf("run(unprovisioned) = %v; want a not-provisioned error naming kv votes", err)
	}
}
