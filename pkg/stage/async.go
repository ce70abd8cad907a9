package stage

import (
	"context"
	"sync"
	"time"

	"github.com/gerritflow/gerritflow/pkg/telemetry"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace"
)

// An AsyncHandler takes on work that outlives the call, such as following a
// Jenkins build for an hour. Start registers the work and returns at once;
// the work calls done exactly once when it is finished. Until then the loop
// keeps the message in progress, so the broker assigns each piece of work to
// one replica at a time: if the replica dies, AckWait expires and another
// replica receives the message and takes the work over. done's outputs and
// error are handled as a Handler's are (publish, then ack; redeliver; DLQ).
//
// ctx is cancelled when the stage stops; the messages of unfinished work are
// then released for immediate redelivery to another replica, and later
// calls of done are ignored.
type AsyncHandler interface {
	Start(ctx context.Context, m Msg, done func(outs []Out, err error))
}

// RunAsync is Run for an AsyncHandler. spec.MaxPending bounds the unfinished
// work of this replica (default 10 000); the consumer's max_ack_pending must
// allow replicas × MaxPending.
func RunAsync(ctx context.Context, js jetstream.JetStream, spec Spec, h AsyncHandler, tel *telemetry.Telemetry) error {
	r, err := newRunner(ctx, js, spec, nil, tel)
	if err != nil {
		return err
	}
	max := spec.MaxPending
	if max <= 0 {
		max = 10000
	}
	actx, cancel := context.WithCancel(r.base)
	r.async = &asyncState{h: h, ctx: actx, cancel: cancel, slots: make(chan struct{}, max), pending: map[*delivery]struct{}{}}
	stop := make(chan struct{})
	defer close(stop)
	go r.keepAsyncAlive(stop)
	return r.run(ctx)
}

type asyncState struct {
	h       AsyncHandler
	ctx     context.Context // cancelled when the stage stops
	cancel  context.CancelFunc
	slots   chan struct{} // MaxPending
	mu      sync.Mutex
	pending map[*delivery]struct{}
	closed  bool
	// finishing counts done calls publishing and acking right now.
	finishing sync.WaitGroup
}

func (r *runner) startAsync(full *delivery) {
	a := r.async
	// The work may last hours and there may be thousands of it: hold only the
	// consumer span's context, not the span. Spans made from it are still its
	// children; the span itself ends once the work is taken on (a build's wait
	// is not one span: the handler makes short spans of its own).
	ctx := trace.ContextWithSpanContext(a.ctx, full.span.SpanContext())
	d := &delivery{jm: full.jm, md: full.md, msg: full.msg, ctx: ctx, span: trace.SpanFromContext(ctx), start: full.start}
	a.mu.Lock()
	a.pending[d] = struct{}{}
	a.mu.Unlock()
	var once sync.Once
	a.h.Start(ctx, d.msg, func(outs []Out, err error) {
		once.Do(func() {
			a.mu.Lock()
			_, live := a.pending[d]
			delete(a.pending, d)
			closed := a.closed
			if live && !closed {
				a.finishing.Add(1) // the drain waits for this publish and ack
			}
			a.mu.Unlock()
			if !live || closed {
				return // released at shutdown: another replica owns it now
			}
			defer a.finishing.Done()
			defer func() { <-a.slots }()
			ctx, cancel := context.WithTimeout(trace.ContextWithSpanContext(r.base, d.span.SpanContext()), r.spec.HandleTimeout)
			defer cancel()
			r.finish(ctx, d, outs, err)
		})
	})
	full.span.End()
}

// keepAsyncAlive marks every unfinished message in progress every AckWait/3,
// from one goroutine whatever their number.
func (r *runner) keepAsyncAlive(stop <-chan struct{}) {
	t := time.NewTicker(r.ackWait / 3)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		r.async.mu.Lock()
		msgs := make([]jetstream.Msg, 0, len(r.async.pending))
		for d := range r.async.pending {
			msgs = append(msgs, d.jm)
		}
		r.async.mu.Unlock()
		for _, m := range msgs {
			_ = m.InProgress()
		}
	}
}

// releaseAsync hands every unfinished message back to the broker for
// immediate redelivery (another replica takes the work over).
func (r *runner) releaseAsync() int {
	a := r.async
	a.mu.Lock()
	a.closed = true
	ds := make([]*delivery, 0, len(a.pending))
	for d := range a.pending {
		ds = append(ds, d)
	}
	a.pending = map[*delivery]struct{}{}
	a.mu.Unlock()
	a.cancel()
	for _, d := range ds {
		r.settle(d.jm.Nak(), "nak", nil)
	}
	finished := make(chan struct{})
	go func() { a.finishing.Wait(); close(finished) }()
	select {
	case <-finished:
	case <-time.After(r.spec.DrainTimeout):
		r.log.Warn("work finishing at shutdown did not complete; it will be redelivered")
	}
	return len(ds)
}
