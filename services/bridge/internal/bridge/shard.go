package bridge

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"
	"github.com/cenkalti/backoff/v5"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/time/rate"

	"github.com/gerritflow/gerritflow/pkg/telemetry"
)

// maxCallsPerSecond is Kinesis' GetRecords limit per shard.
const maxCallsPerSecond = 5

var errLeaseLost = errors.New("lease lost")

// noRetry makes one attempt per SDK call: the reader owns backoff and counts
// throttling itself.
func noRetry(o *kinesis.Options) { o.RetryMaxAttempts = 1 }

func newBackoff() *backoff.ExponentialBackOff {
	return &backoff.ExponentialBackOff{
		InitialInterval:     200 * time.Millisecond,
		RandomizationFactor: 0.5,
		Multiplier:          2,
		MaxInterval:         10 * time.Second,
	}
}

// shardRun is one leased shard: its reader goroutine, its acks and checkpoint.
type shardRun struct {
	b     *Bridge
	id    string
	key   string // ShardKey: lease and checkpoint key
	child bool   // a parent is still listed: no checkpoint means TRIM_HORIZON

	hard     context.Context // ends when the bridge is killed
	readCtx  context.Context // ends to stop reading (release, shutdown, lost lease)
	stopRead context.CancelFunc
	done     chan struct{} // closed when the run is over (lease released or abandoned)
	limiter  *rate.Limiter

	releasing bool // set by the coordinator's goroutine only

	leaseMu   sync.Mutex
	leaseRev  uint64
	renewedAt time.Time // when the last successful lease write was sent
	lost      bool      // taken over (CAS lost), or not renewed in time
	taken     bool      // lost to another replica's write: do not delete
	released  bool

	mu       sync.Mutex
	acks     acks
	idle     chan struct{} // closed when acks has nothing in flight
	read     uint64        // records read
	cpKick   chan struct{}
	cpStop   chan struct{}
	cpExited chan struct{}

	cpMu    sync.Mutex
	cpRev   uint64
	cpValue string
	cpCount uint64 // records covered by cpValue
}

func (b *Bridge) newShardRun(hard context.Context, id string, child bool, rev uint64, sent time.Time) *shardRun {
	s := &shardRun{
		b: b, id: id, key: b.shardKey(id), child: child, hard: hard,
		done:     make(chan struct{}),
		limiter:  rate.NewLimiter(maxCallsPerSecond, 1),
		leaseRev: rev, renewedAt: sent,
		cpKick: make(chan struct{}, 1), cpStop: make(chan struct{}), cpExited: make(chan struct{}),
	}
	s.readCtx, s.stopRead = context.WithCancel(hard)
	return s
}

// run reads the shard until it ends, is released, or its lease is lost, then
// finishes: after the last PubAck, the last checkpoint, then the lease goes.
func (s *shardRun) run() {
	defer close(s.done)
	defer s.b.wakeUp()
	stopRenew := s.keepLease()
	defer stopRenew()
	go s.checkpointer()
	end := s.readShard()
	defer func() {
		s.b.m.behind.DeleteLabelValues(s.id)
		s.b.m.cpLag.DeleteLabelValues(s.id)
	}()
	if s.hard.Err() != nil {
		s.stopCheckpointer()
		return // killed: no last checkpoint, no release (the test's kill -9)
	}
	if s.isLost() {
		s.stopCheckpointer()
		s.abandon()
		return
	}
	ctx, cancel := context.WithTimeout(s.hard, s.b.opts.DrainTimeout)
	defer cancel()
	idle := s.waitIdle(ctx)
	s.stopCheckpointer()
	s.mu.Lock()
	value, count := s.acks.done, s.acks.base
	s.mu.Unlock()
	if end && idle {
		value = ShardEnd
	}
	if !idle {
		s.b.log.Warn("shard drain timed out; checkpointing what was acked", "shard", s.id, "in_flight", s.inFlight())
	}
	wctx, wcancel := context.WithTimeout(context.WithoutCancel(s.hard), 10*time.Second)
	defer wcancel()
	if err := s.writeCheckpoint(wctx, value, count); err != nil {
		s.b.log.Warn("last checkpoint not written", "shard", s.id, telemetry.KeyErr, err)
		if errors.Is(err, errLeaseLost) {
			return
		}
	}
	if value == ShardEnd {
		s.b.log.Info("shard read to its end", "shard", s.id, telemetry.KeyDecision, "shard_end")
		s.b.relist.Store(true) // its children are eligible now
	}
	s.releaseLease(wctx)
}

// readShard is the GetRecords loop. It reports whether the shard ended.
func (s *shardRun) readShard() (end bool) {
	b := s.b
	cp, err := s.loadCheckpoint()
	if err != nil {
		return false
	}
	if cp == ShardEnd {
		return true
	}
	initial := ChooseIterator(cp, s.child, b.opts.Start)
	initialAt := time.Now()
	it, err := s.iterator(initial)
	if err != nil {
		return false
	}
	b.reading(s.id, true)
	defer b.reading(s.id, false)
	bo := newBackoff()
	for {
		if s.readCtx.Err() != nil {
			return false
		}
		validUntil, ok := s.leaseValid()
		if !ok {
			s.lose("lease not renewed in time", false)
			return false
		}
		if err := s.limiter.Wait(s.readCtx); err != nil {
			return false
		}
		callCtx, cancel := context.WithDeadline(s.readCtx, validUntil)
		out, err := b.kc.GetRecords(callCtx, &kinesis.GetRecordsInput{ShardIterator: it, Limit: aws.Int32(b.opts.BatchLimit)}, noRetry)
		cancel()
		if err != nil {
			switch Classify(err) {
			case ErrCanceled:
				continue // stopped, or the lease check at the top decides
			case ErrExpired:
				b.m.kinesisErrors.WithLabelValues("expired_iterator").Inc()
				b.log.Info("shard iterator expired; resuming from the checkpoint", "shard", s.id)
				if !s.waitIdle(s.readCtx) {
					return false
				}
				s.flushCheckpoint(s.readCtx)
				s.cpMu.Lock()
				cp := s.cpValue
				s.cpMu.Unlock()
				if it, err = s.iterator(Resume(cp, initial, initialAt)); err != nil {
					return false
				}
				continue
			case ErrThrottled:
				b.m.kinesisErrors.WithLabelValues("throttled").Inc()
			default:
				b.m.kinesisErrors.WithLabelValues("other").Inc()
			}
			d := bo.NextBackOff()
			b.log.Warn("GetRecords failed; backing off", "shard", s.id, telemetry.KeyErr, err, "in", d.String())
			sleep(s.readCtx, d)
			continue
		}
		bo.Reset()
		behind := aws.ToInt64(out.MillisBehindLatest)
		b.m.behind.WithLabelValues(s.id).Set(float64(behind))
		if !s.publish(out.Records) {
			return false
		}
		if out.NextShardIterator == nil {
			return true
		}
		it = out.NextShardIterator
		if behind > 0 || len(out.Records) >= int(b.opts.BatchLimit) {
			continue // behind: read again at once (the limiter still holds 5/s)
		}
		sleep(s.readCtx, b.opts.PollInterval)
	}
}

// Resume is where reading continues after an expired iterator, once
// everything read has been acked and checkpointed: after the checkpoint;
// else the first position again, where LATEST becomes the moment it was
// taken (records put since then must not be skipped).
func Resume(checkpoint string, initial Iterator, initialAt time.Time) Iterator {
	if checkpoint != "" && checkpoint != ShardEnd {
		return Iterator{Type: types.ShardIteratorTypeAfterSequenceNumber, Sequence: checkpoint}
	}
	if initial.Type == types.ShardIteratorTypeLatest {
		return Iterator{Type: types.ShardIteratorTypeAtTimestamp, Time: initialAt}
	}
	return initial
}

// iterator gets a shard iterator for pos; a rejected checkpoint falls back
// to the configured start (warning, metric).
func (s *shardRun) iterator(pos Iterator) (*string, error) {
	b := s.b
	bo := newBackoff()
	for {
		in := &kinesis.GetShardIteratorInput{StreamName: aws.String(b.opts.Stream), ShardId: aws.String(s.id), ShardIteratorType: pos.Type}
		switch pos.Type {
		case types.ShardIteratorTypeAfterSequenceNumber:
			in.StartingSequenceNumber = aws.String(pos.Sequence)
		case types.ShardIteratorTypeAtTimestamp:
			in.Timestamp = aws.Time(pos.Time)
		}
		out, err := b.kc.GetShardIterator(s.readCtx, in, noRetry)
		if err == nil {
			b.log.Info("reading shard", "shard", s.id, "from", pos.String())
			return out.ShardIterator, nil
		}
		kind := Classify(err)
		if kind == ErrCanceled || s.readCtx.Err() != nil {
			return nil, err
		}
		if kind == ErrRejected && pos.Type == types.ShardIteratorTypeAfterSequenceNumber {
			next := Fallback(s.child, b.opts.Start)
			b.m.fallbacks.Inc()
			b.log.Warn("checkpoint rejected; falling back", "shard", s.id, "checkpoint", pos.Sequence,
				"to", next.String(), telemetry.KeyErr, err)
			pos = next
			continue
		}
		if kind == ErrThrottled {
			b.m.kinesisErrors.WithLabelValues("throttled").Inc()
		} else {
			b.m.kinesisErrors.WithLabelValues("other").Inc()
		}
		d := bo.NextBackOff()
		b.log.Warn("GetShardIterator failed; backing off", "shard", s.id, telemetry.KeyErr, err, "in", d.String())
		if !sleep(s.readCtx, d) {
			return nil, s.readCtx.Err()
		}
	}
}

// publish sends the messages of one GetRecords batch.
func (s *shardRun) publish(recs []types.Record) bool {
	b := s.b
	for i, r := range recs {
		b.m.recordsIn.Inc()
		b.m.bytesIn.Add(float64(len(r.Data)))
		msgs := b.messages(s.id, r)
		s.mu.Lock()
		idx := s.acks.add(aws.ToString(r.SequenceNumber), len(msgs), i == len(recs)-1)
		s.read++
		if s.idle == nil {
			s.idle = make(chan struct{})
		}
		s.mu.Unlock()
		for _, m := range msgs {
			if !b.send(s, idx, m) {
				return false
			}
		}
	}
	s.updateLag()
	return true
}

// acked is called once per message's PubAck (or dead letter).
func (s *shardRun) acked(idx uint64) {
	s.mu.Lock()
	moved := s.acks.ack(idx)
	if s.acks.inFlight() == 0 && s.idle != nil {
		close(s.idle)
		s.idle = nil
	}
	s.mu.Unlock()
	if moved {
		select {
		case s.cpKick <- struct{}{}:
		default:
		}
	}
}

func (s *shardRun) inFlight() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.acks.inFlight()
}

// waitIdle waits until every record read has been acked.
func (s *shardRun) waitIdle(ctx context.Context) bool {
	s.mu.Lock()
	ch := s.idle
	s.mu.Unlock()
	if ch == nil {
		return true
	}
	select {
	case <-ch:
		return true
	case <-ctx.Done():
		return false
	}
}

// checkpointer writes the checkpoint each time the acked prefix passes the
// end of a GetRecords batch (coalescing: the latest mark wins).
func (s *shardRun) checkpointer() {
	defer close(s.cpExited)
	for {
		select {
		case <-s.cpStop:
			return
		case <-s.hard.Done():
			return
		case <-s.cpKick:
			s.flushMark(s.hard)
		}
	}
}

func (s *shardRun) stopCheckpointer() {
	close(s.cpStop)
	<-s.cpExited
}

func (s *shardRun) flushMark(ctx context.Context) {
	s.mu.Lock()
	value, count := s.acks.mark, s.acks.markCount
	s.mu.Unlock()
	s.checkpointNow(ctx, value, count)
}

// flushCheckpoint writes the whole acked prefix (after an expired iterator).
func (s *shardRun) flushCheckpoint(ctx context.Context) {
	s.mu.Lock()
	value, count := s.acks.done, s.acks.base
	s.mu.Unlock()
	s.checkpointNow(ctx, value, count)
}

func (s *shardRun) checkpointNow(ctx context.Context, value string, count uint64) {
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := s.writeCheckpoint(wctx, value, count); err != nil && !errors.Is(err, errLeaseLost) {
		s.b.log.Warn("checkpoint not written; the next batch will try again", "shard", s.id, telemetry.KeyErr, err)
	}
}

func (s *shardRun) updateLag() {
	s.mu.Lock()
	read := s.read
	s.mu.Unlock()
	s.cpMu.Lock()
	lag := read - s.cpCount
	s.cpMu.Unlock()
	s.b.m.cpLag.WithLabelValues(s.id).Set(float64(lag))
}

// loadCheckpoint reads the shard's checkpoint ("" if none), retrying until
// reading stops.
func (s *shardRun) loadCheckpoint() (string, error) {
	bo := newBackoff()
	for {
		ctx, cancel := context.WithTimeout(s.readCtx, 10*time.Second)
		e, err := s.b.checkpoints.Get(ctx, s.key)
		cancel()
		switch {
		case err == nil:
			s.cpMu.Lock()
			s.cpRev, s.cpValue = e.Revision(), string(e.Value())
			s.cpMu.Unlock()
			return string(e.Value()), nil
		case errors.Is(err, jetstream.ErrKeyNotFound):
			return "", nil
		}
		if s.readCtx.Err() != nil {
			return "", s.readCtx.Err()
		}
		d := bo.NextBackOff()
		s.b.log.Warn("read checkpoint failed; retrying", "shard", s.id, telemetry.KeyErr, err, "in", d.String())
		if !sleep(s.readCtx, d) {
			return "", s.readCtx.Err()
		}
	}
}

// writeCheckpoint stores value by compare-and-set on the revision this
// replica last wrote or read. Only the lease holder writes. A conflict with a
// checkpoint that is behind value (a former holder finishing late) is
// overtaken; one at or past value means another replica reads the shard.
func (s *shardRun) writeCheckpoint(ctx context.Context, value string, count uint64) error {
	s.cpMu.Lock()
	defer s.cpMu.Unlock()
	if value == "" || value == s.cpValue {
		return nil
	}
	if s.isLost() {
		return errLeaseLost
	}
	kv := s.b.checkpoints
	for attempt := 0; ; attempt++ {
		var rev uint64
		var err error
		if s.cpRev == 0 {
			rev, err = kv.Create(ctx, s.key, []byte(value))
		} else {
			rev, err = kv.Update(ctx, s.key, []byte(value), s.cpRev)
		}
		if err == nil {
			s.cpRev, s.cpValue, s.cpCount = rev, value, count
			s.b.m.checkpoints.Inc()
			s.mu.Lock() // lock order: cpMu, then mu
			read := s.read
			s.mu.Unlock()
			s.b.m.cpLag.WithLabelValues(s.id).Set(float64(read - count))
			return nil
		}
		if !isConflict(err) || attempt > 0 {
			return err
		}
		e, gerr := kv.Get(ctx, s.key)
		if gerr != nil {
			return gerr
		}
		if cur := string(e.Value()); cur == ShardEnd || (value != ShardEnd && !seqLess(cur, value)) {
			s.lose("checkpoint moved by another replica to "+cur, true)
			return errLeaseLost
		}
		s.cpRev = e.Revision()
	}
}

// seqLess compares two Kinesis sequence numbers (decimal, no leading zeros).
func seqLess(a, b string) bool {
	if len(a) != len(b) {
		return len(a) < len(b)
	}
	return a < b
}

// leaseValid reports whether this replica may still read: the lease was not
// lost and was renewed within 2/3 of the TTL. It returns the moment it stops
// being valid.
func (s *shardRun) leaseValid() (time.Time, bool) {
	s.leaseMu.Lock()
	defer s.leaseMu.Unlock()
	until := s.renewedAt.Add(s.b.opts.LeaseTTL * 2 / 3)
	return until, !s.lost && time.Now().Before(until)
}

func (s *shardRun) isLost() bool {
	s.leaseMu.Lock()
	defer s.leaseMu.Unlock()
	return s.lost
}

// lose stops reading at once: the lease belongs to someone else now (taken),
// or may soon (not renewed in time).
func (s *shardRun) lose(why string, taken bool) {
	s.leaseMu.Lock()
	first := !s.lost
	s.lost = true
	s.taken = s.taken || taken
	s.leaseMu.Unlock()
	s.stopRead()
	if first {
		s.b.m.leasesLost.Inc()
		s.b.log.Warn("lease lost; stopped reading", "shard", s.id, telemetry.KeyReason, why)
	}
}

// keepLease renews the lease every TTL/3 until the returned stop is called
// (after the release) or the bridge is killed. Each shard renews on its own,
// so a slow coordinator round never delays a renewal.
func (s *shardRun) keepLease() (stop func()) {
	ctx, cancel := context.WithCancel(s.hard)
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		t := time.NewTicker(s.b.opts.LeaseTTL / 3)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				rctx, rcancel := context.WithTimeout(ctx, s.b.opts.LeaseTTL/3)
				s.renew(rctx)
				rcancel()
			}
		}
	}()
	return func() { cancel(); <-exited }
}

// renew extends the lease by compare-and-set on its revision.
func (s *shardRun) renew(ctx context.Context) {
	s.leaseMu.Lock()
	defer s.leaseMu.Unlock()
	if s.lost || s.released {
		return
	}
	sent := time.Now()
	rev, err := s.b.leases.Update(ctx, s.key, s.b.leaseValue(s.id, sent), s.leaseRev)
	switch {
	case err == nil:
		s.leaseRev, s.renewedAt = rev, sent
	case isConflict(err):
		s.lost, s.taken = true, true
		s.stopRead()
		s.b.m.leasesLost.Inc()
		s.b.log.Warn("lease renewal lost its compare-and-set; stopped reading", "shard", s.id)
	default:
		s.b.log.Warn("lease renewal failed", "shard", s.id, telemetry.KeyErr, err)
	}
}

// releaseLease deletes the lease if this replica still holds its revision.
func (s *shardRun) releaseLease(ctx context.Context) {
	s.leaseMu.Lock()
	defer s.leaseMu.Unlock()
	if s.taken || s.released {
		return
	}
	s.released = true
	if err := s.b.leases.Delete(ctx, s.key, jetstream.LastRevision(s.leaseRev)); err != nil {
		s.b.log.Warn("lease not released; it will expire", "shard", s.id, telemetry.KeyErr, err)
		return
	}
	s.b.log.Info("lease released", "shard", s.id)
}

// abandon gives a lease that was not renewed in time back, if it is still
// this replica's revision, so that the shard need not wait for the TTL.
func (s *shardRun) abandon() {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(s.hard), 5*time.Second)
	defer cancel()
	s.releaseLease(ctx)
}
