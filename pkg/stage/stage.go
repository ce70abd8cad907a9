// Package stage runs one pipeline stage: a durable pull consumer feeding a
// Handler. All of the ack policy lives here, written once: a message is acked
// only after the handler's effect and every output's PubAck are durable;
// transient errors are redelivered with backoff; permanent errors, and the last
// delivery, go to gerritflow.dlq.<service> with the reason.
package stage

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	semconv "go.opentelemetry.io/otel/semconv/v1.40.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/gerritflow/gerritflow/pkg/bus"
	"github.com/gerritflow/gerritflow/pkg/config"
	"github.com/gerritflow/gerritflow/pkg/subject"
	"github.com/gerritflow/gerritflow/pkg/telemetry"
)

// Msg is one delivery, as a handler sees it. It cannot be acked by the handler.
type Msg struct {
	Subject   string
	Data      []byte
	Header    nats.Header
	Delivered uint64 // 1 on first delivery
	StreamSeq uint64
	Time      time.Time // when the stream stored it
	// Log is the service logger with the message's change, patch set, project and trace id.
	Log *slog.Logger
}

// Out is one message to publish. MsgID is required (Nats-Msg-Id); the loop
// adds the trace context and carries the input's Gerrit-* headers over.
type Out struct {
	Subject, MsgID string
	Data           []byte
	Header         nats.Header
}

// A Handler does one message's work. It returns the messages to publish; nil,
// nil means "nothing to do". Wrap an error with Permanent when redelivery
// cannot help.
type Handler interface {
	Handle(ctx context.Context, m Msg) ([]Out, error)
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, m Msg) ([]Out, error)

// Handle calls f.
func (f HandlerFunc) Handle(ctx context.Context, m Msg) ([]Out, error) { return f(ctx, m) }

// Spec names the consumer a stage reads and how it runs.
type Spec struct {
	Service string // "parser"; also names the DLQ subject
	Stream  string
	Durable string
	// Concurrency is how many messages one replica handles at once (default 8).
	Concurrency int
	// HandleTimeout bounds one message's work (default 2m).
	HandleTimeout time.Duration
	// DrainTimeout bounds the wait for in-flight work at shutdown (default 25s,
	// under Kubernetes' default 30s grace period).
	DrainTimeout time.Duration
	// MaxPending bounds an AsyncHandler's unfinished work (RunAsync).
	MaxPending int
	// LagInterval is how often the loop reads its consumer's info for the
	// consumer_*_messages gauges (default 15s).
	LagInterval time.Duration
}

// Run consumes until ctx ends, then drains: it stops pulling, lets in-flight
// handlers finish and returns. Handlers run on a context detached from ctx, so
// SIGTERM never aborts work half-done.
func Run(ctx context.Context, js jetstream.JetStream, spec Spec, h Handler, tel *telemetry.Telemetry) error {
	r, err := newRunner(ctx, js, spec, h, tel)
	if err != nil {
		return err
	}
	return r.run(ctx)
}

type runner struct {
	js      jetstream.JetStream
	spec    Spec
	h       Handler
	tel     *telemetry.Telemetry
	log     *slog.Logger
	cons    jetstream.Consumer
	base    context.Context
	ackWait time.Duration
	maxDel  int
	backoff []time.Duration

	sem   chan struct{}
	wg    sync.WaitGroup
	async *asyncState // set by RunAsync

	msgs     *prometheus.CounterVec // by outcome
	outs     *prometheus.CounterVec // by subject
	seconds  prometheus.ObserverVec // by outcome
	inFlight prometheus.Gauge
	// consumer lag, as the server counts it for the durable (all replicas)
	pending, ackPending, redelivered prometheus.Gauge
}

func newRunner(ctx context.Context, js jetstream.JetStream, spec Spec, h Handler, tel *telemetry.Telemetry) (*runner, error) {
	if spec.Concurrency <= 0 {
		spec.Concurrency = 8
	}
	if spec.HandleTimeout <= 0 {
		spec.HandleTimeout = 2 * time.Minute
	}
	if spec.DrainTimeout <= 0 {
		spec.DrainTimeout = 25 * time.Second
	}
	if spec.LagInterval <= 0 {
		spec.LagInterval = 15 * time.Second
	}
	cons, err := js.Consumer(ctx, spec.Stream, spec.Durable)
	if err != nil {
		return nil, fmt.Errorf("bind consumer %s on %s (run gfctl provision): %w", spec.Durable, spec.Stream, err)
	}
	info := cons.CachedInfo()
	r := &runner{
		js: js, spec: spec, h: h, tel: tel, cons: cons,
		log:     tel.Logger.With("consumer", spec.Durable),
		base:    context.WithoutCancel(ctx),
		ackWait: info.Config.AckWait,
		maxDel:  info.Config.MaxDeliver,
		backoff: Backoff(info.Config),
		sem:     make(chan struct{}, spec.Concurrency),
	}
	if r.ackWait <= 0 {
		r.ackWait = 30 * time.Second
	}
	if need := spec.Concurrency; info.Config.MaxAckPending > 0 && info.Config.MaxAckPending < need {
		return nil, fmt.Errorf("consumer %s: max_ack_pending %d is below this replica's concurrency %d", spec.Durable, info.Config.MaxAckPending, need)
	}
	// Labelled by consumer: one service may run several loops (the voter does).
	c := prometheus.Labels{"consumer": spec.Durable}
	r.msgs = tel.Counter("messages_total", "Messages handled, by consumer and outcome (ack, nak, dlq, term).", "consumer", "outcome").MustCurryWith(c)
	r.outs = tel.Counter("published_total", "Messages published, by consumer and subject.", "consumer", "subject").MustCurryWith(c)
	r.seconds = tel.Histogram("handle_seconds", "Time to handle one message, publish its outputs and ack it.", "consumer", "outcome").MustCurryWith(c)
	r.inFlight = tel.Gauge("in_flight", "Messages being handled now, by consumer.", "consumer").With(c)
	r.pending = tel.Gauge("consumer_pending_messages",
		"Messages of the stream not yet delivered to the consumer (its num_pending: the backlog), by consumer.", "consumer").With(c)
	r.ackPending = tel.Gauge("consumer_ack_pending_messages",
		"Messages delivered and not yet acked (num_ack_pending), by consumer.", "consumer").With(c)
	r.redelivered = tel.Gauge("consumer_redelivered_messages",
		"Messages delivered more than once and not yet acked (num_redelivered), by consumer.", "consumer").With(c)
	return r, nil
}

// watchLag sets the consumer_*_messages gauges from the consumer's info at
// once and then every LagInterval, until stop is closed. A failed read keeps
// the last values (a broker outage shows in the logs and in /readyz).
func (r *runner) watchLag(stop <-chan struct{}) {
	t := time.NewTicker(r.spec.LagInterval)
	defer t.Stop()
	for {
		ctx, cancel := context.WithTimeout(r.base, 5*time.Second)
		info, err := r.cons.Info(ctx)
		cancel()
		if err != nil {
			r.log.Debug("read consumer info", telemetry.KeyErr, err)
		} else {
			r.pending.Set(float64(info.NumPending))
			r.ackPending.Set(float64(info.NumAckPending))
			r.redelivered.Set(float64(info.NumRedelivered))
		}
		select {
		case <-stop:
			return
		case <-t.C:
		}
	}
}

func (r *runner) run(ctx context.Context) error {
	cc, err := r.cons.Consume(r.dispatch,
		// A small pull buffer: a large one lets AckWait expire in the buffer.
		jetstream.PullMaxMessages(r.spec.Concurrency),
		jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
			r.log.Warn("consume", telemetry.KeyErr, err)
		}))
	if err != nil {
		return fmt.Errorf("consume %s: %w", r.spec.Durable, err)
	}
	stopLag := make(chan struct{})
	defer close(stopLag)
	go r.watchLag(stopLag)
	r.log.Info("consuming", "stream", r.spec.Stream, "concurrency", r.spec.Concurrency,
		"ack_wait", r.ackWait.String(), "max_deliver", r.maxDel)
	<-ctx.Done()
	r.tel.NotReady() // /readyz fails first
	cc.Drain()       // no new pulls; buffered messages are still handled
	done := make(chan struct{})
	go func() {
		<-cc.Closed()
		r.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		r.log.Info("drained")
	case <-time.After(r.spec.DrainTimeout):
		r.log.Warn("drain timed out; unacked messages will be redelivered", "timeout", r.spec.DrainTimeout.String())
	}
	if r.async != nil {
		n := r.releaseAsync()
		r.log.Info("released unfinished work to other replicas", "messages", n)
	}
	return nil
}

// dispatch is called by nats.go one message at a time; it blocks while
// Concurrency handlers run, which holds back further pulls.
func (r *runner) dispatch(jm jetstream.Msg) {
	if r.async != nil {
		r.async.slots <- struct{}{} // released when the work is done
	}
	r.sem <- struct{}{}
	r.wg.Add(1)
	go func() {
		defer func() { <-r.sem; r.wg.Done() }()
		r.process(jm)
	}()
}

// delivery is one message being handled.
type delivery struct {
	jm    jetstream.Msg
	md    *jetstream.MsgMetadata
	msg   Msg
	ctx   context.Context // carries the consumer span
	span  trace.Span
	start time.Time
}

func (r *runner) process(jm jetstream.Msg) {
	d, ok := r.begin(jm)
	if !ok {
		return
	}
	if r.async != nil {
		r.startAsync(d)
		return
	}
	defer d.span.End()
	ctx, cancel := context.WithTimeout(d.ctx, r.spec.HandleTimeout)
	defer cancel()
	stop := r.keepAlive(jm)
	defer stop()
	outs, err := r.h.Handle(ctx, d.msg)
	r.finish(ctx, d, outs, err)
}

// begin reads the delivery's metadata and opens its consumer span.
func (r *runner) begin(jm jetstream.Msg) (*delivery, bool) {
	md, err := jm.Metadata()
	if err != nil { // not a JetStream delivery: nothing sane to redo
		r.msgs.WithLabelValues("term").Inc()
		r.settle(jm.Term(), "term", err)
		return nil, false
	}
	// r.base is detached from the run context: SIGTERM must not abort work in flight.
	ctx, span := r.startSpan(r.base, jm, md)
	log := r.msgLogger(ctx, jm.Headers(), md)
	return &delivery{jm: jm, md: md, ctx: ctx, span: span, start: time.Now(), msg: Msg{
		Subject: jm.Subject(), Data: jm.Data(), Header: jm.Headers(),
		Delivered: md.NumDelivered, StreamSeq: md.Sequence.Stream, Time: md.Timestamp, Log: log,
	}}, true
}

// finish publishes the outputs and acks, or settles the failure: redeliver
// with backoff, or dead-letter a permanent error and the last delivery.
func (r *runner) finish(ctx context.Context, d *delivery, outs []Out, err error) {
	r.inFlight.Inc()
	defer r.inFlight.Dec()
	outcome := "ack"
	defer func() {
		r.msgs.WithLabelValues(outcome).Inc()
		r.seconds.WithLabelValues(outcome).Observe(time.Since(d.start).Seconds())
	}()
	if err == nil {
		if err = Publish(ctx, r.js, r.tel.Tracer, d.jm.Headers(), outs); err == nil {
			for _, o := range outs {
				r.outs.WithLabelValues(o.Subject).Inc()
			}
			err = d.jm.DoubleAck(ctx) // the effect is durable: now ack
		}
	}
	if err == nil {
		return
	}
	d.span.RecordError(err)
	d.span.SetStatus(codes.Error, err.Error())
	if IsPermanent(err) || (r.maxDel > 0 && d.md.NumDelivered >= uint64(r.maxDel)) {
		outcome = "dlq"
		r.deadLetter(ctx, d.msg.Log, d.jm, d.md, err)
		return
	}
	outcome = "nak"
	delay := r.delay(d.md.NumDelivered)
	d.msg.Log.Warn("will retry", telemetry.KeyErr, err, "delivered", d.md.NumDelivered, "delay", delay.String())
	r.settle(d.jm.NakWithDelay(delay), "nak", err)
}

// BackoffKey is the consumer metadata key holding the retry schedule, e.g.
// "1s,5s,15s,30s,1m,2m,5m" (the last step repeats).
//
// The schedule is not the consumer's server-side backoff: when that is set,
// nats-server replaces ack_wait with its first step (1s), so every message in
// flight would need an InProgress every 333ms (thirty thousand a second for
// the monitor's ten thousand builds), and a crashed replica's work would move
// after one second. The stage keeps ack_wait for work in progress and applies
// the schedule itself with NakWithDelay.
const BackoffKey = "gerritflow.backoff"

// Backoff is a consumer's retry schedule: its metadata's, else its
// server-side backoff, else 1s.
func Backoff(c jetstream.ConsumerConfig) []time.Duration {
	var steps []time.Duration
	for _, f := range strings.Split(c.Metadata[BackoffKey], ",") {
		if d, err := time.ParseDuration(strings.TrimSpace(f)); err == nil && d > 0 {
			steps = append(steps, d)
		}
	}
	if len(steps) == 0 {
		steps = c.BackOff
	}
	return steps
}

func (r *runner) delay(delivered uint64) time.Duration {
	if len(r.backoff) == 0 {
		return time.Second
	}
	i := int(delivered) - 1
	if i >= len(r.backoff) {
		i = len(r.backoff) - 1
	}
	if i < 0 {
		i = 0
	}
	return r.backoff[i]
}

// keepAlive tells the server the message is still being worked on every
// AckWait/3, so long work is not redelivered to another replica meanwhile.
func (r *runner) keepAlive(jm jetstream.Msg) (stop func()) {
	done := make(chan struct{})
	var once sync.Once
	go func() {
		t := time.NewTicker(r.ackWait / 3)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				_ = jm.InProgress()
			}
		}
	}()
	return func() { once.Do(func() { close(done) }) }
}

// deadLetter publishes the message to the service's DLQ with the reason and
// terminates it. If the DLQ publish fails the message is redelivered instead:
// nothing is lost.
func (r *runner) deadLetter(ctx context.Context, log *slog.Logger, jm jetstream.Msg, md *jetstream.MsgMetadata, cause error) {
	h := nats.Header{}
	for k, v := range jm.Headers() {
		if k != bus.MsgID {
			h[k] = append([]string(nil), v...)
		}
	}
	h.Set(bus.Error, cause.Error())
	h.Set(bus.Stage, r.spec.Service)
	h.Set(bus.OriginSubject, jm.Subject())
	h.Set(bus.OriginSequence, strconv.FormatUint(md.Sequence.Stream, 10))
	h.Set(bus.OriginDelivered, strconv.FormatUint(md.NumDelivered, 10))
	out := Out{
		Subject: subject.DLQ(r.spec.Service),
		MsgID:   fmt.Sprintf("dlq.%s.%s.%d", r.spec.Service, md.Stream, md.Sequence.Stream),
		Data:    jm.Data(),
		Header:  h,
	}
	if err := Publish(ctx, r.js, r.tel.Tracer, nil, []Out{out}); err != nil {
		log.Error("dead-letter publish failed; will redeliver", telemetry.KeyErr, err, telemetry.KeyReason, cause.Error())
		r.settle(jm.NakWithDelay(r.delay(md.NumDelivered)), "nak", err)
		return
	}
	log.Error("dead-lettered", telemetry.KeyDecision, "dlq", telemetry.KeyReason, cause.Error(),
		"permanent", IsPermanent(cause), "delivered", md.NumDelivered)
	r.settle(jm.TermWithReason(truncate(cause.Error(), 200)), "term", cause)
}

func (r *runner) settle(err error, what string, cause error) {
	if err != nil {
		r.log.Warn(what+" failed; the server will redeliver after ack_wait", telemetry.KeyErr, err, "cause", fmt.Sprint(cause))
	}
}

func (r *runner) startSpan(ctx context.Context, jm jetstream.Msg, md *jetstream.MsgMetadata) (context.Context, trace.Span) {
	h := jm.Headers()
	ctx = bus.Extract(ctx, h)
	attrs := []attribute.KeyValue{
		semconv.MessagingSystemKey.String("nats"),
		semconv.MessagingDestinationName(jm.Subject()),
		semconv.MessagingOperationTypeProcess,
		semconv.MessagingOperationName("process"),
		semconv.MessagingConsumerGroupName(r.spec.Durable),
		semconv.MessagingMessageBodySize(len(jm.Data())),
		attribute.Int64("messaging.nats.stream_sequence", int64(md.Sequence.Stream)),
		attribute.Int64("messaging.nats.delivered", int64(md.NumDelivered)),
	}
	if id := h.Get(bus.MsgID); id != "" {
		attrs = append(attrs, semconv.MessagingMessageID(id))
	}
	attrs = append(attrs, ChangeAttrs(h)...)
	return r.tel.Tracer.Start(ctx, "process "+jm.Subject(), trace.WithSpanKind(trace.SpanKindConsumer), trace.WithAttributes(attrs...))
}

// ChangeAttrs returns the gerrit.*, ci.* and replay span attributes found in h.
func ChangeAttrs(h nats.Header) []attribute.KeyValue {
	change, _ := strconv.Atoi(h.Get(bus.GerritChange))
	patchset, _ := strconv.Atoi(h.Get(bus.GerritPatchset))
	attrs := telemetry.ChangeAttrs(h.Get(bus.GerritProject), change, patchset)
	if v := h.Get(bus.GerritEventType); v != "" {
		attrs = append(attrs, telemetry.AttrEventType.String(v))
	}
	if v := h.Get(bus.Replay); v != "" {
		attrs = append(attrs, telemetry.AttrReplay.String(v))
	}
	if v := h.Get(bus.BuildSet); v != "" {
		attrs = append(attrs, telemetry.AttrBuildSet.String(v))
	}
	if v := h.Get(bus.Job); v != "" {
		attrs = append(attrs, telemetry.AttrJob.String(v))
	}
	return attrs
}

func (r *runner) msgLogger(ctx context.Context, h nats.Header, md *jetstream.MsgMetadata) *slog.Logger {
	args := []any{"seq", md.Sequence.Stream}
	if v := h.Get(bus.GerritChange); v != "" {
		args = append(args, telemetry.KeyChange, v)
	}
	if v := h.Get(bus.GerritPatchset); v != "" {
		args = append(args, telemetry.KeyPatchset, v)
	}
	if v := h.Get(bus.GerritProject); v != "" {
		args = append(args, telemetry.KeyProject, v)
	}
	if v := h.Get(bus.BuildSet); v != "" {
		args = append(args, telemetry.KeyBuildSet, v)
	}
	if sc := trace.SpanContextFromContext(ctx); sc.HasTraceID() {
		args = append(args, telemetry.KeyTraceID, sc.TraceID().String())
	}
	return r.log.With(args...)
}

// Publish sends outs asynchronously and waits for every PubAck. Each output
// gets its Nats-Msg-Id, a producer span whose context goes into its headers,
// and the Gerrit-* headers of in (the message it derives from) where it has
// none of its own. A duplicate PubAck is success.
func Publish(ctx context.Context, js jetstream.JetStream, tracer trace.Tracer, in nats.Header, outs []Out) error {
	if len(outs) == 0 {
		return nil
	}
	futures := make([]jetstream.PubAckFuture, 0, len(outs))
	for _, o := range outs {
		if o.MsgID == "" {
			return fmt.Errorf("publish %s: output without MsgID", o.Subject)
		}
		m := &nats.Msg{Subject: o.Subject, Data: o.Data, Header: nats.Header{}}
		for k, v := range o.Header {
			m.Header[k] = v
		}
		for _, k := range []string{bus.GerritChange, bus.GerritPatchset, bus.GerritProject} {
			if m.Header.Get(k) == "" && in.Get(k) != "" {
				m.Header.Set(k, in.Get(k))
			}
		}
		m.Header.Set(bus.MsgID, o.MsgID)
		_, span := tracer.Start(ctx, "send "+o.Subject, trace.WithSpanKind(trace.SpanKindProducer),
			trace.WithAttributes(append([]attribute.KeyValue{
				semconv.MessagingSystemKey.String("nats"),
				semconv.MessagingDestinationName(o.Subject),
				semconv.MessagingOperationTypeSend,
				semconv.MessagingOperationName("send"),
				semconv.MessagingMessageID(o.MsgID),
				semconv.MessagingMessageBodySize(len(o.Data)),
			}, ChangeAttrs(m.Header)...)...))
		bus.Inject(trace.ContextWithSpan(ctx, span), m.Header)
		f, err := js.PublishMsgAsync(m)
		span.End()
		if err != nil {
			return fmt.Errorf("publish %s %s: %w", o.Subject, o.MsgID, err)
		}
		futures = append(futures, f)
	}
	var errs []error
	for _, f := range futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			errs = append(errs, fmt.Errorf("publish %s %s: %w", f.Msg().Subject, f.Msg().Header.Get(bus.MsgID), err))
		case <-ctx.Done():
			return fmt.Errorf("publish: waiting for PubAck: %w", ctx.Err())
		}
	}
	return errors.Join(errs...)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

// Tuned returns s with the operator's settings of the stages config applied.
func (s Spec) Tuned(c config.Stages) Spec {
	if c.Concurrency > 0 {
		s.Concurrency = c.Concurrency
	}
	if c.HandleTimeout > 0 {
		s.HandleTimeout = c.HandleTimeout.D()
	}
	if c.DrainTimeout > 0 {
		s.DrainTimeout = c.DrainTimeout.D()
	}
	return s
}

// Loop is one consumer of a service that runs several (the voter does).
type Loop struct {
	Spec    Spec
	Handler Handler
}

// RunAll runs every loop until ctx ends or one fails, then drains them all.
func RunAll(ctx context.Context, js jetstream.JetStream, tel *telemetry.Telemetry, loops ...Loop) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make(chan error, len(loops))
	for _, l := range loops {
		go func() {
			err := Run(ctx, js, l.Spec, l.Handler, tel)
			cancel() // one loop ending stops the others
			errs <- err
		}()
	}
	var all []error
	for range loops {
		all = append(all, <-errs)
	}
	return errors.Join(all...)
}
