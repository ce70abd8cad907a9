package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/gerritflow/gerritflow/pkg/natstest"
	"github.com/gerritflow/gerritflow/pkg/servicetest"
	"github.com/gerritflow/gerritflow/streams"
)

func gfctl(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	root := newRoot(func(string) string { return "" }, &out)
	root.SetArgs(args)
	err := root.ExecuteContext(context.Background())
	return out.String(), err
}

func TestProvisionTwiceThenServicesCanBind(t *testing.T) {
	srv := natstest.Start(t)
	for i := 0; i < 2; i++ {
		out, err := gfctl(t, "provision", "--nats", srv.URL())
		if err != nil || !strings.Contains(out, "provisioned 5 streams, 5 consumers, 6 KV buckets") {
			t.Fatalf("gfctl provision #%d = %q, %v", i+1, out, err)
		}
	}
	_, js := srv.Connect(t)
	if err := streams.Check(context.Background(), js, streams.Need{Streams: []string{streams.CIVotes}, Consumers: []string{"voter"}, Buckets: []string{streams.BucketVotes}}); err != nil {
		t.Errorf("Check after gfctl provision = %v", err)
	}
}

func TestConfigCheckNamesTheKey(t *testing.T) {
	good := servicetest.WriteConfig(t, "nats: { url: nats://127.0.0.1:4222 }\n")
	bad := servicetest.WriteConfig(t, "vote: { notify: LOUD }\n")
	out, err := gfctl(t, "config", "check", good, bad)
	if err == nil || !strings.Contains(out, good+": ok") || !strings.Contains(out, "vote.notify") {
		t.Errorf("gfctl config check = %q, %v; want good ok, bad naming vote.notify, and an error", out, err)
	}
}
