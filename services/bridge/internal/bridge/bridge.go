// Package bridge reads Gerrit's stream events from the shards of a Kinesis
// stream and republishes each record on gerrit.raw, with Kinesis Client
// Library semantics built on NATS alone:
//
//   - Leases (bucket kinesis_leases, key <stream>.<shard>) spread the shards
//     over the replicas: taken with Create (first wins), renewed by Update on
//     the revision every TTL/3, taken over only after they expired (Update on
//     the revision seen), deleted with their last revision when given up.
//     Each replica also keeps a presence key <stream>.members.<replica> so
//     that the others count it before it holds anything.
//   - Checkpoints (bucket kinesis_checkpoints, same key) hold the last
//     sequence number whose messages were all PubAcked, in read order, or
//     SHARD_END; only the lease holder writes them, by compare-and-set.
//   - A child shard is read only after its parents reached SHARD_END.
//
// The decisions (Assign, Eligible, Target, ChooseIterator, Fallback, Resume,
// Classify, Deaggregate, the acks tracker) are pure and table-tested; the rest
// is effects.
package bridge

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/gerritflow/gerritflow/pkg/config"
	"github.com/gerritflow/gerritflow/pkg/subject"
	"github.com/gerritflow/gerritflow/pkg/telemetry"
	"github.com/gerritflow/gerritflow/streams"
)

// Needs is what the bridge binds to (streams.Check).
var Needs = streams.Need{
	Streams: []string{streams.GerritRaw, streams.DLQ},
	Buckets: []string{streams.BucketLeases, streams.BucketCheckpoints},
}

// Kinesis is what the bridge needs from the Kinesis API (*kinesis.Client).
type Kinesis interface {
	ListShards(ctx context.Context, in *kinesis.ListShardsInput, opts ...func(*kinesis.Options)) (*kinesis.ListShardsOutput, error)
	GetShardIterator(ctx context.Context, in *kinesis.GetShardIteratorInput, opts ...func(*kinesis.Options)) (*kinesis.GetShardIteratorOutput, error)
	GetRecords(ctx context.Context, in *kinesis.GetRecordsInput, opts ...func(*kinesis.Options)) (*kinesis.GetRecordsOutput, error)
}

// Options tune a Bridge; zero values take the defaults.
type Options struct {
	Stream       string
	Start        Start
	PollInterval time.Duration // GetRecords interval of a caught-up shard (1s)
	MaxInFlight  int           // publishes awaiting their PubAck, whole replica (256)
	LeaseTTL     time.Duration // 30s; at most the kinesis_leases bucket's TTL
	ListInterval time.Duration // ListShards period, to find new shards (10s)
	BatchLimit   int32         // GetRecords Limit (1000)
	DrainTimeout time.Duration // wait for in-flight PubAcks at release/shutdown (20s)
	// MaxPayload lowers the size above which a record goes to the DLQ
	// (0 = the server's max_payload).
	MaxPayload int
	// ReplicaID names this replica ("" = hostname-pid-random).
	ReplicaID string
}

// OptionsFrom maps the kinesis section of the config.
func OptionsFrom(k config.Kinesis) Options {
	return Options{
		Stream:       k.Stream,
		Start:        Start{Type: k.Start, Time: k.StartTime},
		PollInterval: k.PollInterval.D(),
		MaxInFlight:  k.MaxInFlight,
		LeaseTTL:     k.LeaseTTL.D(),
	}
}

func (o *Options) defaults() {
	if o.PollInterval <= 0 {
		o.PollInterval = time.Second
	}
	if o.MaxInFlight <= 0 {
		o.MaxInFlight = 256
	}
	if o.LeaseTTL <= 0 {
		o.LeaseTTL = 30 * time.Second
	}
	if o.ListInterval <= 0 {
		o.ListInterval = 10 * time.Second
	}
	if o.BatchLimit <= 0 {
		o.BatchLimit = 1000
	}
	if o.DrainTimeout <= 0 {
		o.DrainTimeout = 20 * time.Second
	}
	if o.Start.Type == "" {
		o.Start.Type = "latest"
	}
	if o.ReplicaID == "" {
		o.ReplicaID = replicaID()
	}
}

// Bridge is one replica.
type Bridge struct {
	opts        Options
	kc          Kinesis
	js          jetstream.JetStream // own async-publish settings
	leases      jetstream.KeyValue
	checkpoints jetstream.KeyValue
	tel         *telemetry.Telemetry
	log         *slog.Logger
	m           *metrics
	sem         chan struct{} // the in-flight window
	maxPayload  int
	inflight    sync.WaitGroup // PubAck waiters
	wake        chan struct{}
	relist      atomic.Bool

	// Owned by Run's goroutine.
	shards    []Shard
	listedAt  time.Time
	held      map[string]*shardRun
	obs       *observer
	memberRev uint64

	killMu sync.Mutex
	kill   context.CancelFunc
	// onReading, when set (tests), is told when a shard's reading starts and stops.
	onReading func(shard string, reading bool)
}

// New binds a bridge to the buckets and the Kinesis stream's client.
func New(ctx context.Context, js jetstream.JetStream, kc Kinesis, opts Options, tel *telemetry.Telemetry) (*Bridge, error) {
	opts.defaults()
	if opts.Stream == "" {
		return nil, errors.New("kinesis.stream: required")
	}
	leases, err := js.KeyValue(ctx, streams.BucketLeases)
	if err != nil {
		return nil, fmt.Errorf("open kv %s: %w", streams.BucketLeases, err)
	}
	st, err := leases.Status(ctx)
	if err != nil {
		return nil, fmt.Errorf("kv %s status: %w", streams.BucketLeases, err)
	}
	if ttl := st.TTL(); ttl > 0 && opts.LeaseTTL > ttl {
		return nil, fmt.Errorf("kinesis.lease_ttl: %v exceeds the %s bucket's TTL %v (the bucket would drop live leases)", opts.LeaseTTL, streams.BucketLeases, ttl)
	}
	checkpoints, err := js.KeyValue(ctx, streams.BucketCheckpoints)
	if err != nil {
		return nil, fmt.Errorf("open kv %s: %w", streams.BucketCheckpoints, err)
	}
	pub, err := jetstream.New(js.Conn(),
		jetstream.WithPublishAsyncMaxPending(opts.MaxInFlight),
		jetstream.WithPublishAsyncTimeout(30*time.Second))
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	maxPayload := int(js.Conn().MaxPayload())
	if opts.MaxPayload > 0 && (maxPayload <= 0 || opts.MaxPayload < maxPayload) {
		maxPayload = opts.MaxPayload
	}
	b := &Bridge{
		opts: opts, kc: kc, js: pub, leases: leases, checkpoints: checkpoints, tel: tel,
		log:        tel.Logger.With("stream", opts.Stream, "replica", opts.ReplicaID),
		m:          newMetrics(tel),
		sem:        make(chan struct{}, opts.MaxInFlight),
		maxPayload: maxPayload,
		wake:       make(chan struct{}, 1),
		held:       map[string]*shardRun{},
		obs:        newObserver(opts.LeaseTTL),
	}
	return b, nil
}

// ID is this replica's identity in the leases.
func (b *Bridge) ID() string { return b.opts.ReplicaID }

// Run reads until ctx ends, then shuts down gracefully: stop reading, wait
// for the in-flight PubAcks, write the last checkpoints, release the leases.
func (b *Bridge) Run(ctx context.Context) error {
	hard, kill := context.WithCancel(context.WithoutCancel(ctx))
	defer kill()
	b.killMu.Lock()
	b.kill = kill
	b.killMu.Unlock()
	if err := b.listShards(hard); err != nil {
		var nf *types.ResourceNotFoundException
		if errors.As(err, &nf) {
			return fmt.Errorf("kinesis.stream: %w", err)
		}
		b.log.Warn("ListShards failed; will retry", telemetry.KeyErr, err)
	}
	if err := b.heartbeat(hard); err != nil {
		return err
	}
	b.log.Info("bridge started", "lease_ttl", b.opts.LeaseTTL.String(), "max_in_flight", b.opts.MaxInFlight,
		"start", b.opts.Start.Type, "max_payload", b.maxPayload)
	tick := time.NewTicker(b.opts.LeaseTTL / 3)
	defer tick.Stop()
	b.step(hard)
	for {
		select {
		case <-hard.Done(): // killed (tests): no last checkpoint, no release
			b.waitRuns()
			return nil
		case <-ctx.Done():
			return b.shutdown(hard, tick)
		case <-tick.C:
			b.step(hard)
		case <-b.wake:
			b.step(hard)
		}
	}
}

// shutdown releases every shard (each drains, checkpoints and keeps renewing
// its lease until it deletes it), then removes this replica's presence key.
func (b *Bridge) shutdown(hard context.Context, tick *time.Ticker) error {
	b.tel.NotReady()
	b.log.Info("draining", "shards", len(b.held))
	for _, s := range b.held {
		s.releasing = true
		s.stopRead()
	}
	deadline := time.NewTimer(b.opts.DrainTimeout + 15*time.Second)
	defer deadline.Stop()
	for b.reap(); len(b.held) > 0; b.reap() {
		select {
		case <-tick.C:
		case <-b.wake:
		case <-deadline.C:
			b.log.Warn("shutdown timed out; remaining leases will expire", "shards", len(b.held))
			b.Kill()
			b.waitRuns()
		}
	}
	ctx, cancel := context.WithTimeout(hard, 5*time.Second)
	defer cancel()
	if b.memberRev != 0 {
		if err := b.leases.Delete(ctx, memberKey(b.opts.Stream, b.opts.ReplicaID), jetstream.LastRevision(b.memberRev)); err != nil {
			b.log.Warn("presence key not removed; it will expire", telemetry.KeyErr, err)
		}
	}
	b.inflight.Wait()
	b.log.Info("drained")
	return nil
}

// Kill stops the replica at once, as kill -9 would: no last checkpoint, no
// release; its leases expire. For tests of takeover.
func (b *Bridge) Kill() {
	b.killMu.Lock()
	defer b.killMu.Unlock()
	if b.kill != nil {
		b.kill()
	}
}

func (b *Bridge) waitRuns() {
	for _, s := range b.held {
		<-s.done
	}
	b.inflight.Wait()
	b.held = map[string]*shardRun{}
}

func (b *Bridge) wakeUp() {
	select {
	case b.wake <- struct{}{}:
	default:
	}
}

func (b *Bridge) reading(shard string, on bool) {
	if b.onReading != nil {
		b.onReading(shard, on)
	}
}

// reap forgets the runs that are over.
func (b *Bridge) reap() {
	for id, s := range b.held {
		select {
		case <-s.done:
			delete(b.held, id)
		default:
		}
	}
	b.m.leases.Set(float64(len(b.held)))
}

// step is one round of the coordinator: announce, list, look, decide, act.
// (Each shard renews its own lease, see keepLease.)
func (b *Bridge) step(ctx context.Context) {
	b.reap()
	if err := b.heartbeat(ctx); err != nil {
		b.log.Warn("presence not renewed", telemetry.KeyErr, err)
	}
	now := time.Now()
	listed := false
	if b.relist.Swap(false) || now.Sub(b.listedAt) >= b.opts.ListInterval {
		if err := b.listShards(ctx); err != nil {
			b.log.Warn("ListShards failed; keeping the last listing", telemetry.KeyErr, err)
		} else {
			listed = true
		}
	}
	if b.shards == nil {
		return
	}
	sctx, cancel := context.WithTimeout(ctx, b.opts.LeaseTTL/3)
	defer cancel()
	prefix := subject.Token(b.opts.Stream)
	leaseEntries, err := snapshot(sctx, b.leases, prefix+".>")
	if err != nil {
		b.log.Warn("read leases failed", telemetry.KeyErr, err)
		return
	}
	cpEntries, err := snapshot(sctx, b.checkpoints, prefix+".*")
	if err != nil {
		b.log.Warn("read checkpoints failed", telemetry.KeyErr, err)
		return
	}
	now = time.Now()
	b.obs.observe(now, leaseEntries)
	v := View{
		Self: b.opts.ReplicaID, Shards: b.shards,
		Finished: map[string]bool{}, Leases: map[string]Lease{},
		Held: map[string]bool{}, Releases: map[string]bool{},
	}
	for k, e := range cpEntries {
		if id, ok := shardOfKey(b.opts.Stream, k); ok && string(e.Value()) == ShardEnd {
			v.Finished[id] = true
		}
	}
	if listed {
		b.forgetTrimmed(sctx, cpEntries)
	}
	memberPrefix := prefix + "." + memberToken + "."
	for k, e := range leaseEntries {
		var lv leaseValue
		_ = json.Unmarshal(e.Value(), &lv) // an unreadable value has no owner: it only expires
		if len(k) > len(memberPrefix) && k[:len(memberPrefix)] == memberPrefix {
			if !b.obs.expired(now, k) && lv.Owner != "" {
				v.Members = append(v.Members, lv.Owner)
			}
			continue
		}
		if id, ok := shardOfKey(b.opts.Stream, k); ok {
			v.Leases[id] = Lease{Owner: lv.Owner, Expired: b.obs.expired(now, k)}
		}
	}
	for id, s := range b.held {
		v.Held[id] = true
		if s.releasing {
			v.Releases[id] = true
		}
	}
	plan := Assign(v)
	for _, id := range plan.Release {
		s := b.held[id]
		b.log.Info("releasing shard to rebalance", "shard", id, telemetry.KeyDecision, "release",
			"held", len(b.held), "target", Target(len(Eligible(v.Shards, v.Finished)), v.Members, v.Self))
		s.releasing = true
		s.stopRead()
	}
	for _, id := range plan.Take {
		b.acquire(ctx, id, leaseEntries[b.shardKey(id)], v.Leases[id])
	}
	b.m.leases.Set(float64(len(b.held)))
}

// forgetTrimmed deletes the SHARD_END checkpoints of shards that the
// listing just made no longer holds: Kinesis dropped them after the
// retention period, nothing reads them again, and a child no longer waits for
// a parent that is not listed (Eligible). Without this, every resharding
// would leave keys behind for good. The delete is on the revision read, so a
// replica with an older listing cannot remove a key that changed since; a
// checkpoint short of SHARD_END is kept: it marks records the bridge never
// read (the shard expired first), which an operator should see.
func (b *Bridge) forgetTrimmed(ctx context.Context, cps map[string]jetstream.KeyValueEntry) {
	listed := make(map[string]bool, len(b.shards))
	for _, sh := range b.shards {
		listed[sh.ID] = true
	}
	for k, e := range cps {
		id, ok := shardOfKey(b.opts.Stream, k)
		if !ok || listed[id] || string(e.Value()) != ShardEnd {
			continue
		}
		err := b.checkpoints.Purge(ctx, k, jetstream.LastRevision(e.Revision()))
		switch {
		case isConflict(err):
			continue // another replica was first
		case err != nil:
			b.log.Warn("checkpoint of a trimmed shard not deleted", "shard", id, telemetry.KeyErr, err)
			continue
		}
		b.m.trimmed.Inc()
		b.log.Info("checkpoint of a trimmed shard deleted", "shard", id, telemetry.KeyDecision, "forget")
	}
}

// acquire takes a free lease: Create when there is none, Update on the
// revision seen when it expired. Losing the race is normal.
func (b *Bridge) acquire(ctx context.Context, id string, cur jetstream.KeyValueEntry, prev Lease) {
	key := b.shardKey(id)
	actx, cancel := context.WithTimeout(ctx, b.opts.LeaseTTL/3)
	defer cancel()
	sent := time.Now()
	val := b.leaseValue(id, sent)
	var rev uint64
	var err error
	if cur == nil {
		rev, err = b.leases.Create(actx, key, val)
	} else {
		rev, err = b.leases.Update(actx, key, val, cur.Revision())
	}
	if isConflict(err) {
		b.log.Debug("lease taken by another replica first", "shard", id)
		return
	}
	if err != nil {
		b.log.Warn("lease not acquired", "shard", id, telemetry.KeyErr, err)
		return
	}
	child := false
	parents := map[string]bool{}
	for _, sh := range b.shards {
		if sh.ID == id {
			for _, p := range sh.Parents {
				parents[p] = true
			}
		}
	}
	for _, sh := range b.shards {
		if parents[sh.ID] {
			child = true
		}
	}
	args := []any{"shard", id, telemetry.KeyDecision, "acquire"}
	if cur != nil {
		args = append(args, "taken_over_from", prev.Owner)
	}
	b.log.Info("lease acquired", args...)
	s := b.newShardRun(ctx, id, child, rev, sent) // ctx is Run's: it ends only on Kill
	b.held[id] = s
	go s.run()
}

func (b *Bridge) shardKey(id string) string { return subject.ShardKey(b.opts.Stream, id) }

func (b *Bridge) leaseValue(shard string, now time.Time) []byte {
	v, _ := json.Marshal(leaseValue{Owner: b.opts.ReplicaID, Expires: now.Add(b.opts.LeaseTTL).UTC(), Stream: b.opts.Stream, Shard: shard})
	return v
}

// heartbeat writes this replica's presence key (Create, then Update on its
// revision; a lost revision, e.g. after the bucket's TTL dropped it, starts over).
func (b *Bridge) heartbeat(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, b.opts.LeaseTTL/3)
	defer cancel()
	key := memberKey(b.opts.Stream, b.opts.ReplicaID)
	v, _ := json.Marshal(leaseValue{Owner: b.opts.ReplicaID, Expires: time.Now().Add(b.opts.LeaseTTL).UTC(), Stream: b.opts.Stream, Held: len(b.held)})
	var rev uint64
	var err error
	if b.memberRev != 0 {
		rev, err = b.leases.Update(ctx, key, v, b.memberRev)
	}
	if b.memberRev == 0 || isConflict(err) {
		rev, err = b.leases.Create(ctx, key, v)
	}
	if err != nil {
		return fmt.Errorf("announce replica %s in %s: %w", b.opts.ReplicaID, streams.BucketLeases, err)
	}
	b.memberRev = rev
	return nil
}

// listShards refreshes the shard listing (all pages, one attempt each).
func (b *Bridge) listShards(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, b.opts.LeaseTTL/3)
	defer cancel()
	var shards []Shard
	in := &kinesis.ListShardsInput{StreamName: aws.String(b.opts.Stream)}
	for {
		out, err := b.kc.ListShards(ctx, in, noRetry)
		if err != nil {
			if Classify(err) == ErrThrottled {
				b.m.kinesisErrors.WithLabelValues("throttled").Inc()
			} else {
				b.m.kinesisErrors.WithLabelValues("other").Inc()
			}
			return fmt.Errorf("list shards of %s: %w", b.opts.Stream, err)
		}
		for _, s := range out.Shards {
			sh := Shard{ID: aws.ToString(s.ShardId)}
			for _, p := range []*string{s.ParentShardId, s.AdjacentParentShardId} {
				if aws.ToString(p) != "" {
					sh.Parents = append(sh.Parents, aws.ToString(p))
				}
			}
			shards = append(shards, sh)
		}
		if out.NextToken == nil {
			break
		}
		in = &kinesis.ListShardsInput{NextToken: out.NextToken}
	}
	sort.Slice(shards, func(i, j int) bool { return shards[i].ID < shards[j].ID })
	if len(shards) != len(b.shards) {
		b.log.Info("shards listed", "count", len(shards))
	}
	b.shards, b.listedAt = shards, time.Now()
	return nil
}

func replicaID() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "bridge"
	}
	var r [4]byte
	_, _ = rand.Read(r[:])
	return fmt.Sprintf("%s-%d-%s", host, os.Getpid(), hex.EncodeToString(r[:]))
}
