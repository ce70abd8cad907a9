package bridge

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// entry is a KeyValueEntry with a key and a revision.
type entry struct {
	jetstream.KeyValueEntry
	key string
	rev uint64
}

func (e entry) Key() string      { return e.key }
func (e entry) Revision() uint64 { return e.rev }

func TestObserverExpiry(t *testing.T) {
	ttl := 2 * time.Second
	t0 := time.Unix(1000, 0)
	snap := func(revs map[string]uint64) map[string]jetstream.KeyValueEntry {
		m := map[string]jetstream.KeyValueEntry{}
		for k, r := range revs {
			m[k] = entry{key: k, rev: r}
		}
		return m
	}
	o := newObserver(ttl)
	o.observe(t0, snap(map[string]uint64{"a": 1, "b": 5}))
	steps := []struct {
		name    string
		at      time.Duration
		revs    map[string]uint64
		key     string
		expired bool
	}{
		{"first sight is never expired", 0, map[string]uint64{"a": 1, "b": 5}, "a", false},
		{"unchanged for less than a TTL", 1900 * time.Millisecond, map[string]uint64{"a": 1, "b": 6}, "a", false},
		{"unchanged for a TTL", 2 * time.Second, map[string]uint64{"a": 1, "b": 6}, "a", true},
		{"renewed: the TTL counts from the new revision", 3 * time.Second, map[string]uint64{"a": 1, "b": 6}, "b", false},
		{"renewed key expires a TTL after its renewal was seen", 3900 * time.Millisecond, map[string]uint64{"a": 1, "b": 6}, "b", true},
		{"a key that is gone is not expired (it is free)", 4 * time.Second, map[string]uint64{"b": 6}, "a", false},
		{"a key that comes back starts over", 4100 * time.Millisecond, map[string]uint64{"a": 9, "b": 6}, "a", false},
	}
	for _, st := range steps {
		now := t0.Add(st.at)
		o.observe(now, snap(st.revs))
		if got := o.expired(now, st.key); got != st.expired {
			t.Errorf("%s: expired(%s) at +%v = %v; want %v", st.name, st.key, st.at, got, st.expired)
		}
	}
}

func TestKeys(t *testing.T) {
	tests := []struct {
		key   string
		shard string
		ok    bool
	}{
		{"gerrit-events.shardId-000000000001", "shardId-000000000001", true},
		{"gerrit-events.members.host_2Eexample-1-ab", "", false}, // presence key
		{"other.shardId-000000000001", "", false},
		{"gerrit-events.a_2Eb", "a.b", true},
	}
	for _, tt := range tests {
		shard, ok := shardOfKey("gerrit-events", tt.key)
		if shard != tt.shard || ok != tt.ok {
			t.Errorf("shardOfKey(%q) = %q, %v; want %q, %v", tt.key, shard, ok, tt.shard, tt.ok)
		}
	}
	if got := memberKey("gerrit-events", "host.example-1-ab"); got != "gerrit-events.members.host_2Eexample-1-ab" {
		t.Errorf("memberKey = %q", got)
	}
	if got := MsgID("s", "shardId-1", "4960", -1); got != "s:shardId-1:4960" {
		t.Errorf("MsgID = %q", got)
	}
	if got := MsgID("s", "shardId-1", "4960", 2); got != "s:shardId-1:4960:2" {
		t.Errorf("MsgID with sub-index = %q", got)
	}
}

func TestSeqLess(t *testing.T) {
	tests := []struct {
		a, b string
		want bool
	}{
		{"", "1", true},
		{"9", "10", true},
		{"49680516764887369535040068879120397444346285150061985794", "49680516764887369535040068879121606370165899779236691970", true},
		{"49680516764887369535040068879121606370165899779236691970", "49680516764887369535040068879120397444346285150061985794", false},
		{"5", "5", false},
	}
	for _, tt := range tests {
		if got := seqLess(tt.a, tt.b); got != tt.want {
			t.Errorf("seqLess(%s, %s) = %v; want %v", tt.a, tt.b, got, tt.want)
		}
	}
}

func TestPermanent(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"client max payload", fmt.Errorf("publish: %w", nats.ErrMaxPayload), true},
		{"stream max_msg_size", fmt.Errorf("nats: %w", &jetstream.APIError{Code: 400, ErrorCode: jetstream.JSErrCodeStreamMessageExceedsMaximum, Description: "message size exceeds maximum allowed"}), true},
		{"timeout", jetstream.ErrAsyncPublishTimeout, false},
		{"no responders", nats.ErrNoResponders, false},
		{"other", errors.New("connection closed"), false},
	}
	for _, tt := range tests {
		if got := permanent(tt.err); got != tt.want {
			t.Errorf("permanent(%s) = %v; want %v", tt.name, got, tt.want)
		}
	}
	m := &nats.Msg{Data: make([]byte, 100), Header: nats.Header{"A": []string{"bc"}}}
	if got, want := msgSize(m), len("NATS/1.0\r\n")+len("A: bc\r\n")+2+100; got != want {
		t.Errorf("msgSize = %d; want %d", got, want)
	}
}
