package monitor

import (
	"context"
	"fmt"

	"golang.org/x/time/rate"
)

// budget bounds the load one replica puts on Jenkins: at most max calls at
// once, started at most rps per second (burst 1, so calls are spread evenly).
// It waits on the injected clock, so tests can run it on fake time.
type budget struct {
	clock Clock
	lim   *rate.Limiter
	slots chan struct{}
}

func newBudget(clock Clock, rps float64, maxConcurrent int) *budget {
	return &budget{clock: clock, lim: rate.NewLimiter(rate.Limit(rps), 1), slots: make(chan struct{}, max(maxConcurrent, 1))}
}

// acquire waits for a concurrency slot, then for the rate limiter, and
// returns the release of the slot. The slot is taken first so that calls
// start exactly at the limiter's pace, never in a burst when slots free up.
func (b *budget) acquire(ctx context.Context) (release func(), err error) {
	select {
	case b.slots <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	release = func() { <-b.slots }
	now := b.clock.Now()
	r := b.lim.ReserveN(now, 1)
	if !r.OK() {
		release()
		return nil, fmt.Errorf("jenkins budget: rate limit %v cannot admit a call", b.lim.Limit())
	}
	if d := r.DelayFrom(now); d > 0 {
		select {
		case <-b.clock.After(d):
		case <-ctx.Done():
			r.CancelAt(b.clock.Now())
			release()
			return nil, ctx.Err()
		}
	}
	return release, nil
}
