package bridge

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/gerritflow/gerritflow/pkg/subject"
)

// leaseValue is the value of a lease, and of a replica's presence key, in
// the kinesis_leases bucket. Expires is informational (gfctl, operators):
// replicas decide expiry by observation, see observer.
type leaseValue struct {
	Owner   string    `json:"owner"`
	Expires time.Time `json:"expires"`
	Stream  string    `json:"stream"`
	Shard   string    `json:"shard,omitempty"`
	Held    int       `json:"held,omitempty"` // presence keys: shards held
}

// memberToken is the middle token of presence keys:
// <stream>.members.<replica>, three tokens, never a ShardKey (two tokens).
const memberToken = "members"

func memberKey(stream, id string) string {
	return subject.Token(stream) + "." + memberToken + "." + subject.Token(id)
}

// isConflict reports a lost compare-and-set (Create on an existing key,
// Update or Delete with a stale revision).
func isConflict(err error) bool {
	return errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch)
}

// observer decides lease expiry the way the KCL does: a key whose revision
// has not changed for a whole TTL, as seen by this replica's monotonic clock,
// is expired. No wall clocks are compared across machines. A holder renews
// every TTL/3 and stops reading on its own 2/3 TTL after its last successful
// renewal was sent, so it has stopped before any observer, who counts the TTL
// from a later moment (when it saw the revision), may take the shard over.
type observer struct {
	ttl  time.Duration
	seen map[string]sighting
}

type sighting struct {
	rev   uint64
	since time.Time
}

func newObserver(ttl time.Duration) *observer {
	return &observer{ttl: ttl, seen: map[string]sighting{}}
}

// observe records the revisions of one snapshot and forgets keys that are gone.
func (o *observer) observe(now time.Time, entries map[string]jetstream.KeyValueEntry) {
	for k := range o.seen {
		if _, ok := entries[k]; !ok {
			delete(o.seen, k)
		}
	}
	for k, e := range entries {
		if s, ok := o.seen[k]; !ok || s.rev != e.Revision() {
			o.seen[k] = sighting{rev: e.Revision(), since: now}
		}
	}
}

// expired reports whether key has shown the same revision for a TTL.
func (o *observer) expired(now time.Time, key string) bool {
	s, ok := o.seen[key]
	return ok && now.Sub(s.since) >= o.ttl
}

// snapshot reads every live key of kv under filter (one watcher, initial
// values only).
func snapshot(ctx context.Context, kv jetstream.KeyValue, filter string) (map[string]jetstream.KeyValueEntry, error) {
	w, err := kv.Watch(ctx, filter, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, fmt.Errorf("watch %s %s: %w", kv.Bucket(), filter, err)
	}
	defer w.Stop() //nolint:errcheck
	out := map[string]jetstream.KeyValueEntry{}
	for {
		select {
		case e, ok := <-w.Updates():
			if !ok {
				return nil, fmt.Errorf("watch %s %s: closed", kv.Bucket(), filter)
			}
			if e == nil {
				return out, nil
			}
			out[e.Key()] = e
		case <-ctx.Done():
			return nil, fmt.Errorf("watch %s %s: %w", kv.Bucket(), filter, ctx.Err())
		}
	}
}

// shardOfKey returns the shard id of a lease or checkpoint key of stream.
func shardOfKey(stream, key string) (string, bool) {
	prefix := subject.Token(stream) + "."
	if !strings.HasPrefix(key, prefix) {
		return "", false
	}
	rest := key[len(prefix):]
	if strings.Contains(rest, ".") {
		return "", false // a presence key
	}
	id, err := subject.Untoken(rest)
	return id, err == nil
}
