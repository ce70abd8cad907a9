package main

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/gerritflow/gerritflow/pkg/kinesislocal"
	"github.com/gerritflow/gerritflow/pkg/natstest"
	"github.com/gerritflow/gerritflow/pkg/servicetest"
	"github.com/gerritflow/gerritflow/pkg/subject"
)

func TestRunServesReadyAndDrains(t *testing.T) {
	srv, js := natstest.JetStream(t)
	kin := kinesislocal.StartT(t, map[string]int{"gerrit-events": 1})
	addr := servicetest.FreeAddr(t)
	cfg := servicetest.WriteConfig(t, fmt.Sprintf(`nats: { url: %q }
kinesis: { stream: gerrit-events, endpoint: %q, start: trim_horizon, access_key_env: KEY, secret_key_env: SECRET, poll_interval: 100ms, lease_ttl: 3s }
listen: { bridge: %q }
`, srv.URL(), kin.Endpoint(), addr))
	env := servicetest.Env(map[string]string{"KEY": "local", "SECRET": "local"})
	stop := servicetest.Start(t, run, []string{"--config", cfg}, env, addr)
	if _, err := kin.Client().PutRecord(context.Background(), putInput("gerrit-events", `{"type":"ref-updated"}`)); err != nil {
		t.Fatal(err)
	}
	natstest.Collect(t, js, subject.Raw, 1, 20*time.Second)
	if err := stop(); err != nil {
		t.Fatalf("run after cancel = %v; want nil (clean drain)", err)
	}
	// A stream that does not exist stops the bridge at start, naming the key.
	wrong := servicetest.WriteConfig(t, fmt.Sprintf(`nats: { url: %q }
kinesis: { stream: no-such-stream, endpoint: %q, access_key_env: KEY, secret_key_env: SECRET }
`, srv.URL(), kin.Endpoint()))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := run(ctx, []string{"--config", wrong}, env); err == nil || !strings.Contains(err.Error(), "kinesis.stream") {
		t.Errorf("run(unknown stream) = %v; want an error naming kinesis.stream", err)
	}
	// The drain released the lease and kept the checkpoint.
	leases, err := js.KeyValue(context.Background(), "kinesis_leases")
	if err != nil {
		t.Fatal(err)
	}
	if lister, err := leases.ListKeys(context.Background()); err == nil {
		for k := range lister.Keys() {
			t.Errorf("lease %s left after a clean drain", k)
		}
	}
}

func TestRunRefusesBadConfig(t *testing.T) {
	srv, _ := natstest.JetStream(t)
	tests := []struct {
		name, yaml, env, want string
	}{
		{"bad start", "kinesis: { stream: s, start: sometimes }\n", "", "kinesis.start"},
		{"no stream", "kinesis: { endpoint: http://127.0.0.1:1, access_key_env: K, secret_key_env: S }\n", "K S", "kinesis.stream"},
		{"missing secret", "kinesis: { stream: s, endpoint: http://127.0.0.1:1, access_key_env: K, secret_key_env: S }\n", "K", "kinesis.secret_key_env"},
		{"lease ttl above the bucket's", "kinesis: { stream: s, endpoint: http://127.0.0.1:1, access_key_env: K, secret_key_env: S, lease_ttl: 5m }\n", "K S", "kinesis.lease_ttl"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := map[string]string{}
			for _, k := range strings.Fields(tt.env) {
				env[k] = "x"
			}
			cfg := servicetest.WriteConfig(t, fmt.Sprintf("nats: { url: %q }\n", srv.URL())+tt.yaml)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			if err := run(ctx, []string{"--config", cfg}, servicetest.Env(env)); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("run = %v; want an error naming %s", err, tt.want)
			}
		})
	}
	unprovisioned := natstest.Start(t)
	cfg := servicetest.WriteConfig(t, fmt.Sprintf("nats: { url: %q }\nkinesis: { stream: s }\n", unprovisioned.URL()))
	if err := run(context.Background(), []string{"--config", cfg}, servicetest.Env(nil)); err == nil || !strings.Contains(err.Error(), "not provisioned") {
		t.Errorf("run(unprovisioned) = %v; want a not-provisioned error", err)
	}
}
