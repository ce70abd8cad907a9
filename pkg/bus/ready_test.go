package bus_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/gerritflow/gerritflow/pkg/bus"
	"github.com/gerritflow/gerritflow/pkg/natstest"
	"github.com/gerritflow/gerritflow/streams"
)

func TestReadyNeedsConnectionAndStreams(t *testing.T) {
	srv := natstest.Start(t)
	nc, js := srv.Connect(t)
	need := streams.Need{Streams: []string{streams.GerritRaw}, Consumers: []string{"parser"}}
	ready := bus.Ready(js, need)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	if err := ready(ctx); err == nil || !strings.Contains(err.Error(), "stream GERRIT_RAW") || !strings.Contains(err.Error(), "consumer parser") {
		t.Errorf("ready before provisioning = %v; want an error naming stream GERRIT_RAW and consumer parser", err)
	}
	if err := streams.Provision(ctx, js); err != nil {
		t.Fatal(err)
	}
	if err := ready(ctx); err != nil {
		t.Errorf("ready after provisioning = %v; want nil", err)
	}
	nc.Close()
	if err := ready(ctx); err == nil || !strings.Contains(err.Error(), "nats") {
		t.Errorf("ready with the connection closed = %v; want an error naming nats", err)
	}
}
