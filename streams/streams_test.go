package streams_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/gerritflow/gerritflow/pkg/natstest"
	"github.com/gerritflow/gerritflow/streams"
)

func TestDefinitionsDecodeStrictly(t *testing.T) {
	s, err := streams.Load()
	if err != nil {
		t.Fatalf("Load = %v", err)
	}
	if len(s.Streams) != 5 || len(s.Consumers) != 5 || len(s.Buckets) != 6 {
		t.Fatalf("Load = %d streams, %d consumers, %d buckets; want 5, 5, 6", len(s.Streams), len(s.Consumers), len(s.Buckets))
	}
	for _, c := range s.Streams {
		// Event streams keep what an operator needs to replay.
		if c.Retention != jetstream.LimitsPolicy || c.Storage != jetstream.FileStorage {
			t.Errorf("stream %s: retention %v storage %v; want limits on file", c.Name, c.Retention, c.Storage)
		}
		if c.MaxAge < 7*24*time.Hour {
			t.Errorf("stream %s: max_age %v; want at least 7 days", c.Name, c.MaxAge)
		}
		if c.Duplicates < 2*time.Minute {
			t.Errorf("stream %s: duplicate_window %v; want at least the 2m default", c.Name, c.Duplicates)
		}
	}
	for _, c := range s.Consumers {
		cfg := c.Config
		if cfg.AckPolicy != jetstream.AckExplicitPolicy {
			t.Errorf("consumer %s: ack policy %v; want explicit", cfg.Durable, cfg.AckPolicy)
		}
		// A server-side backoff would become the ack wait of each delivery
		// (1s for the first): the stage applies the schedule itself.
		if len(cfg.BackOff) > 0 {
			t.Errorf("consumer %s: server-side backoff %v; put the schedule in metadata %q", cfg.Durable, cfg.BackOff, "gerritflow.backoff")
		}
		if cfg.Metadata["gerritflow.backoff"] == "" {
			t.Errorf("consumer %s: no retry schedule in metadata gerritflow.backoff", cfg.Durable)
		}
		if len(cfg.FilterSubjects) == 0 {
			t.Errorf("consumer %s: no filter subjects", cfg.Durable)
		}
	}
	for _, name := range []string{"parser", "trigger", "monitor", "voter", "voter-replay"} {
		if _, ok := s.ConsumerFor(name); !ok {
			t.Errorf("no durable consumer %s", name)
		}
	}
}

func TestProvisionIsIdempotentAndCheckFindsGaps(t *testing.T) {
	srv := natstest.Start(t)
	_, js := srv.Connect(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	need := streams.Need{Streams: []string{streams.GerritRaw}, Consumers: []string{"parser"}, Buckets: []string{streams.BucketBuilds}}
	err := streams.Check(ctx, js, need)
	if err == nil {
		t.Fatal("Check before Provision = nil; want an error naming what is missing")
	}
	for _, want := range []string{"stream GERRIT_RAW", "consumer parser", "kv builds"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Check error %q does not name %q", err, want)
		}
	}
	for i := 0; i < 2; i++ {
		if err := streams.Provision(ctx, js); err != nil {
			t.Fatalf("Provision #%d = %v", i+1, err)
		}
	}
	if err := streams.Check(ctx, js, need); err != nil {
		t.Fatalf("Check after Provision = %v", err)
	}
	names := js.StreamNames(ctx)
	n := 0
	for range names.Name() {
		n++
	}
	// 5 streams + 6 KV buckets (each a KV_ stream): Provision twice created nothing more.
	if n != 11 {
		t.Errorf("streams after two Provisions = %d; want 11", n)
	}
	kv, err := js.KeyValue(ctx, streams.BucketBuildSets)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Create(ctx, "k", []byte("1")); err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Create(ctx, "k", []byte("2")); err == nil {
		t.Error("second Create = nil; want ErrKeyExists (first writer wins)")
	}
}

func TestProvisionReplicasOnOneServerNamesTheLimit(t *testing.T) {
	srv := natstest.Start(t)
	_, js := srv.Connect(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// One server cannot hold three copies: the error must say which stream.
	err := streams.ProvisionReplicas(ctx, js, 3)
	if err == nil || !strings.Contains(err.Error(), "provision stream") {
		t.Fatalf("ProvisionReplicas(3) on one server = %v; want an error naming the stream", err)
	}
	if err := streams.ProvisionReplicas(ctx, js, 1); err != nil {
		t.Fatalf("ProvisionReplicas(1) = %v", err)
	}
}

// TestBucketStreamIsWhatNATSGoCreates provisions each bucket definition, and
// variations of it that use every field BucketStream maps, once through
// nats.go's CreateKeyValue and once as BucketStream's stream, on two servers,
// and compares the stream configurations the servers hold. At one replica they
// must be equal (direct gets on, as nats.go makes them); a bucket bound from
// either works the same.
func TestBucketStreamIsWhatNATSGoCreates(t *testing.T) {
	_, viaKV := natstest.JetStream(t)
	_, viaStream := natstest.JetStream(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	set, err := streams.Load()
	if err != nil {
		t.Fatal(err)
	}
	cases := append([]jetstream.KeyValueConfig(nil), set.Buckets...)
	cases = append(cases,
		jetstream.KeyValueConfig{Bucket: "defaults"},
		jetstream.KeyValueConfig{Bucket: "short_ttl", TTL: 30 * time.Second, History: 5, Storage: jetstream.MemoryStorage},
		jetstream.KeyValueConfig{Bucket: "limits", MaxBytes: 1 << 20, MaxValueSize: 4096, Compression: true,
			Description: "d", Metadata: map[string]string{"owner": "gerritflow"}},
	)
	for _, c := range cases {
		if _, err := viaKV.CreateKeyValue(ctx, c); err != nil {
			t.Fatalf("CreateKeyValue(%s) = %v", c.Bucket, err)
		}
		if _, err := viaStream.CreateStream(ctx, streams.BucketStream(c)); err != nil {
			t.Fatalf("CreateStream(BucketStream(%s)) = %v", c.Bucket, err)
		}
		a, err := viaKV.Stream(ctx, "KV_"+c.Bucket)
		if err != nil {
			t.Fatal(err)
		}
		b, err := viaStream.Stream(ctx, "KV_"+c.Bucket)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(a.CachedInfo().Config, b.CachedInfo().Config); diff != "" {
			t.Errorf("bucket %s: BucketStream differs from nats.go's KV stream (-nats.go +BucketStream):\n%s", c.Bucket, diff)
		}
		kv, err := viaStream.KeyValue(ctx, c.Bucket)
		if err != nil {
			t.Fatalf("KeyValue(%s) on BucketStream's stream = %v", c.Bucket, err)
		}
		if _, err := kv.Create(ctx, "k", []byte("v")); err != nil {
			t.Fatalf("%s: Create = %v", c.Bucket, err)
		}
		if e, err := kv.Get(ctx, "k"); err != nil || string(e.Value()) != "v" {
			t.Fatalf("%s: Get = %v, %v", c.Bucket, e, err)
		}
	}
	if got := streams.BucketStream(jetstream.KeyValueConfig{Bucket: "x", Replicas: 3}); got.AllowDirect {
		t.Errorf("BucketStream at three replicas allows direct gets; reads could come from a lagging follower")
	}
}
