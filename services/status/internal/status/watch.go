package status

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/gerritflow/gerritflow/pkg/telemetry"
	"github.com/gerritflow/gerritflow/streams"
)

// Buckets are the KV buckets the page watches.
type Buckets struct {
	BuildSets, Builds, Votes jetstream.KeyValue
}

// OpenBuckets binds to the three buckets (provisioned beforehand).
func OpenBuckets(ctx context.Context, js jetstream.JetStream) (Buckets, error) {
	var b Buckets
	for name, kv := range map[string]*jetstream.KeyValue{
		streams.BucketBuildSets: &b.BuildSets, streams.BucketBuilds: &b.Builds, streams.BucketVotes: &b.Votes,
	} {
		var err error
		if *kv, err = js.KeyValue(ctx, name); err != nil {
			return Buckets{}, fmt.Errorf("open kv %s: %w", name, err)
		}
	}
	return b, nil
}

type applyFunc func(key string, value []byte, op Op, at, now time.Time) error

// Run watches the buckets until ctx ends: one watcher per bucket for the
// whole process, whatever the number of browsers. It first takes in what
// the buckets hold (WatchAll delivers the current values, then a marker),
// calls ready, then applies updates as they come and pushes them to the
// browsers every FlushEvery. When Run returns, the event streams are closed.
//
// The initial values are read bucket by bucket: build sets first, so that a
// vote or build of a build set that is not listed (finished long ago) is
// dropped as it arrives instead of being held until the end of the load.
func (s *Server) Run(ctx context.Context, b Buckets, ready func()) error {
	defer s.Close()
	start := time.Now()
	type source struct {
		kv    jetstream.KeyValue
		apply applyFunc
		w     jetstream.KeyWatcher
	}
	srcs := []*source{
		{kv: b.BuildSets, apply: s.model.ApplySet},
		{kv: b.Votes, apply: s.model.ApplyVote},
		{kv: b.Builds, apply: s.model.ApplyBuild},
	}
	for _, src := range srcs {
		w, err := src.kv.WatchAll(ctx)
		if err != nil {
			return fmt.Errorf("watch kv %s: %w", src.kv.Bucket(), err)
		}
		defer func() { _ = w.Stop() }()
		src.w = w
		for initial := true; initial; {
			select {
			case e, ok := <-w.Updates():
				switch {
				case !ok:
					return s.closedErr(ctx, src.kv.Bucket())
				case e == nil:
					initial = false
				default:
					s.apply(src.kv.Bucket(), src.apply, e)
				}
			case <-ctx.Done():
				return nil
			}
		}
		s.mu.Lock()
		s.model.Prune(s.set.Now())
		s.mu.Unlock()
	}

	s.mu.Lock()
	s.model.TakeDirty() // browsers that loaded the page before get a reset
	s.version++
	s.ring = nil
	s.loaded = true
	c := s.counts()
	s.mu.Unlock()
	s.log.Info("status loaded", "in_flight", c.InFlight, "finished", c.Finished, "took", time.Since(start).String())
	ready()

	flush := time.NewTicker(s.set.FlushEvery)
	defer flush.Stop()
	prune := time.NewTicker(s.set.PruneEvery)
	defer prune.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case e, ok := <-srcs[0].w.Updates():
			if err := s.update(ctx, srcs[0].kv, srcs[0].apply, e, ok); err != nil {
				return err
			}
		case e, ok := <-srcs[1].w.Updates():
			if err := s.update(ctx, srcs[1].kv, srcs[1].apply, e, ok); err != nil {
				return err
			}
		case e, ok := <-srcs[2].w.Updates():
			if err := s.update(ctx, srcs[2].kv, srcs[2].apply, e, ok); err != nil {
				return err
			}
		case <-flush.C:
			s.flush()
		case <-prune.C:
			s.mu.Lock()
			if n := s.model.Prune(s.set.Now()); n > 0 {
				s.log.Debug("pruned build sets", "dropped", n)
			}
			s.mu.Unlock()
		}
	}
}

func (s *Server) update(ctx context.Context, kv jetstream.KeyValue, apply applyFunc, e jetstream.KeyValueEntry, ok bool) error {
	if !ok {
		return s.closedErr(ctx, kv.Bucket())
	}
	if e != nil {
		s.apply(kv.Bucket(), apply, e)
	}
	return nil
}

func (s *Server) closedErr(ctx context.Context, bucket string) error {
	if ctx.Err() != nil {
		return nil
	}
	return fmt.Errorf("watch kv %s: %w", bucket, errWatchClosed)
}

func (s *Server) apply(bucket string, apply applyFunc, e jetstream.KeyValueEntry) {
	op := OpPut
	if e.Operation() != jetstream.KeyValuePut {
		op = OpDelete
	}
	s.updates.WithLabelValues(bucket).Inc()
	s.mu.Lock()
	err := apply(e.Key(), e.Value(), op, e.Created(), s.set.Now())
	s.mu.Unlock()
	if err != nil {
		// A record no stage could write: not shown, counted, and said once.
		s.bad.WithLabelValues(bucket).Inc()
		s.log.Warn("record not shown", telemetry.KeyErr, err)
	}
}
