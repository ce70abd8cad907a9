package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/gerritflow/gerritflow/pkg/natstest"
	"github.com/gerritflow/gerritflow/streams"
)

// TestProvisionR3OnAThreeNodeCluster runs `gfctl provision --replicas 3`
// (twice) against three nats-servers routed into one JetStream cluster, and
// checks what the cluster then holds: every stream and bucket with a leader
// and two current followers, buckets without direct gets, and KV reads through
// a server that is not the bucket's leader seeing every acknowledged write.
func TestProvisionR3OnAThreeNodeCluster(t *testing.T) {
	c := natstest.StartCluster(t, 3)
	for i := 0; i < 2; i++ {
		out, err := gfctl(t, "provision", "--replicas", "3", "--nats", c.URLs())
		if err != nil || !strings.Contains(out, "provisioned 5 streams, 5 consumers, 6 KV buckets") {
			t.Fatalf("gfctl provision --replicas 3 #%d = %q, %v", i+1, out, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	js := connect(t, c.Servers[2])

	set, err := streams.Load()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range set.Streams {
		names = append(names, s.Name)
	}
	for _, b := range set.Buckets {
		names = append(names, "KV_"+b.Bucket)
	}
	for _, name := range names {
		st, err := js.Stream(ctx, name)
		if err != nil {
			t.Fatalf("stream %s: %v", name, err)
		}
		info, err := waitReplicated(ctx, st)
		if err != nil {
			t.Errorf("stream %s: %v", name, err)
			continue
		}
		if info.Config.Replicas != 3 {
			t.Errorf("stream %s: %d replicas; want 3", name, info.Config.Replicas)
		}
		if kv := strings.HasPrefix(name, "KV_"); kv && info.Config.AllowDirect {
			t.Errorf("bucket stream %s allows direct gets at R3: a follower could answer a read with an old value", name)
		}
	}
	for _, cons := range set.Consumers {
		ci, err := js.Consumer(ctx, cons.Stream, cons.Config.Durable)
		if err != nil {
			t.Fatalf("consumer %s: %v", cons.Config.Durable, err)
		}
		if info := ci.CachedInfo(); info.Cluster == nil || len(info.Cluster.Replicas) != 2 {
			t.Errorf("consumer %s: cluster %+v; want a leader and two replicas (consumers follow their stream's R3)", cons.Config.Durable, info.Cluster)
		}
	}
	need := streams.Need{Streams: []string{streams.GerritRaw, streams.CIBuilds}, Consumers: []string{"parser", "voter", "voter-replay"},
		Buckets: []string{streams.BucketBuilds, streams.BucketVotes, streams.BucketLeases}}
	if err := streams.Check(ctx, js, need); err != nil {
		t.Errorf("Check through a follower = %v", err)
	}

	// Read-your-writes across servers: write through one server, read
	// through another that is not the leader of KV_builds.
	st, err := js.Stream(ctx, "KV_builds")
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var writer, reader *server.Server
	for _, s := range c.Servers {
		switch {
		case s.Name() == info.Cluster.Leader:
		case writer == nil:
			writer = s
		default:
			reader = s
		}
	}
	wkv, err := connect(t, writer).KeyValue(ctx, streams.BucketBuilds)
	if err != nil {
		t.Fatal(err)
	}
	rkv, err := connect(t, reader).KeyValue(ctx, streams.BucketBuilds)
	if err != nil {
		t.Fatal(err)
	}
	const writes = 300
	stale := 0
	for i := 0; i < writes; i++ {
		key := fmt.Sprintf("b%d", i%7)
		rev, err := wkv.Put(ctx, key, []byte(strconv.Itoa(i)))
		if err != nil {
			t.Fatalf("Put #%d: %v", i, err)
		}
		e, err := rkv.Get(ctx, key)
		if err != nil {
			t.Fatalf("Get #%d through %s: %v", i, reader.Name(), err)
		}
		if e.Revision() != rev {
			stale++
		}
	}
	if stale > 0 {
		t.Errorf("%d of %d reads through follower %s returned an older revision than the write just acknowledged", stale, writes, reader.Name())
	}
}

// connect opens a JetStream connection to one server only.
func connect(t *testing.T, s *server.Server) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(s.ClientURL(), nats.DontRandomize(), nats.NoReconnect())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// waitReplicated waits until st has a leader and two current followers.
func waitReplicated(ctx context.Context, st jetstream.Stream) (*jetstream.StreamInfo, error) {
	for {
		info, err := st.Info(ctx)
		if err != nil {
			return nil, err
		}
		current := 0
		if info.Cluster != nil {
			for _, p := range info.Cluster.Replicas {
				if p.Current {
					current++
				}
			}
		}
		if info.Cluster != nil && info.Cluster.Leader != "" && current == 2 {
			return info, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("no leader with two current followers: %+v", info.Cluster)
		case <-time.After(100 * time.Millisecond):
		}
	}
}
