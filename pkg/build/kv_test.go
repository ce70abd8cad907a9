package build_test

import (
	"context"
	"errors"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/gerritflow/gerritflow/pkg/build"
	"github.com/gerritflow/gerritflow/pkg/natstest"
	"github.com/gerritflow/gerritflow/streams"
)

func TestUpdateCreatesUpdatesAndRetriesConflicts(t *testing.T) {
	_, js := natstest.JetStream(t)
	ctx := context.Background()
	kv, err := js.KeyValue(ctx, streams.BucketChanges)
	if err != nil {
		t.Fatal(err)
	}
	// Absent and declined: nothing written.
	if _, err := build.Update(ctx, kv, "p.1", func(c *build.Change, exists bool) bool { return false }); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Fatalf("declined create = %v; want ErrKeyNotFound", err)
	}
	got, err := build.Update(ctx, kv, "p.1", func(c *build.Change, exists bool) bool {
		c.Number, c.Latest = 1, 1
		return !exists
	})
	if err != nil || got.Latest != 1 {
		t.Fatalf("create = %+v, %v", got, err)
	}
	// A writer slipping in between the read and the write is seen, and the
	// change decided again on its value: never a blind overwrite.
	calls := 0
	got, err = build.Update(ctx, kv, "p.1", func(c *build.Change, exists bool) bool {
		calls++
		if calls == 1 {
			e, _ := kv.Get(ctx, "p.1")
			if _, err := kv.Update(ctx, "p.1", build.Encode(build.Change{Number: 1, Latest: 5}), e.Revision()); err != nil {
				t.Fatal(err)
			}
		}
		c.Latest++
		return true
	})
	if err != nil || got.Latest != 6 || calls != 2 {
		t.Errorf("update after a concurrent write = %+v, %v after %d calls; want latest 6 after 2", got, err, calls)
	}
}
