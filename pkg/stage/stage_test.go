package stage_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/gerritflow/gerritflow/pkg/bus"
	"github.com/gerritflow/gerritflow/pkg/config"
	"github.com/gerritflow/gerritflow/pkg/natstest"
	"github.com/gerritflow/gerritflow/pkg/stage"
	"github.com/gerritflow/gerritflow/pkg/telemetry"
)

// harness runs one stage over a test stream "TEST" (in.>, out.>) with a
// consumer that redelivers fast.
type harness struct {
	t     *testing.T
	js    jetstream.JetStream
	spans *tracetest.InMemoryExporter
	tel   *telemetry.Telemetry
	done  chan error
	stop  context.CancelFunc
}

func newHarness(t *testing.T, maxDeliver int, h stage.Handler) *harness {
	t.Helper()
	_, js := natstest.JetStream(t)
	ctx := context.Background()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "TEST", Subjects: []string{"in.>", "out.>"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateConsumer(ctx, "TEST", jetstream.ConsumerConfig{
		Durable: "teststage", AckPolicy: jetstream.AckExplicitPolicy, FilterSubject: "in.>",
		AckWait: 5 * time.Second, MaxDeliver: maxDeliver, Metadata: map[string]string{stage.BackoffKey: "50ms"},
	}); err != nil {
		t.Fatal(err)
	}
	spans := tracetest.NewInMemoryExporter()
	tel, err := telemetry.Start(ctx, "teststage", config.Otel{}, "", telemetry.WithLogOutput(io.Discard), telemetry.WithSpanExporter(spans))
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	hs := &harness{t: t, js: js, spans: spans, tel: tel, done: make(chan error, 1), stop: stop}
	go func() {
		hs.done <- stage.Run(runCtx, js, stage.Spec{Service: "teststage", Stream: "TEST", Durable: "teststage",
			Concurrency: 4, DrainTimeout: 10 * time.Second}, h, tel)
	}()
	t.Cleanup(func() { hs.shutdown() })
	return hs
}

func (hs *harness) shutdown() error {
	hs.stop()
	select {
	case err := <-hs.done:
		hs.done <- err
		return err
	case <-time.After(15 * time.Second):
		hs.t.Fatal("stage.Run did not return after cancel")
		return nil
	}
}

func (hs *harness) publish(subject, id string, data string, h nats.Header) {
	hs.t.Helper()
	m := &nats.Msg{Subject: subject, Data: []byte(data), Header: h}
	if m.Header == nil {
		m.Header = nats.Header{}
	}
	if _, err := hs.js.PublishMsg(context.Background(), m, jetstream.WithMsgID(id)); err != nil {
		hs.t.Fatal(err)
	}
}

// pending waits until the consumer has nothing pending or unacked.
func (hs *harness) waitSettled() {
	hs.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		c, err := hs.js.Consumer(context.Background(), "TEST", "teststage")
		if err != nil {
			hs.t.Fatal(err)
		}
		info, err := c.Info(context.Background())
		if err != nil {
			hs.t.Fatal(err)
		}
		if info.NumPending == 0 && info.NumAckPending == 0 && info.NumRedelivered == 0 {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	hs.t.Fatal("consumer did not settle: messages left pending or unacked")
}

func echo(ctx context.Context, m stage.Msg) ([]stage.Out, error) {
	return []stage.Out{{Subject: "out." + strings.TrimPrefix(m.Subject, "in."), MsgID: "out-" + string(m.Data), Data: m.Data}}, nil
}

func TestOutputPublishedThenAcked(t *testing.T) {
	hs := newHarness(t, 3, stage.HandlerFunc(echo))
	tid, _ := trace.TraceIDFromHex("4bf92f3577b34da6a3ce929d0e0e4736")
	sid, _ := trace.SpanIDFromHex("00f067aa0ba902b7")
	h := nats.Header{}
	bus.Inject(trace.ContextWithSpanContext(context.Background(), trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled})), h)
	h.Set(bus.GerritChange, "1234")
	hs.publish("in.a", "1", "hello", h)

	got := natstest.Collect(t, hs.js, "out.a", 1, 10*time.Second)
	if string(got[0].Data()) != "hello" {
		t.Errorf("output data = %q; want hello", got[0].Data())
	}
	oh := got[0].Headers()
	if oh.Get(bus.MsgID) != "out-hello" || oh.Get(bus.GerritChange) != "1234" {
		t.Errorf("output headers = %v; want Msg-Id out-hello and Gerrit-Change carried over", oh)
	}
	tp := oh.Get("traceparent")
	if !strings.Contains(tp, tid.String()) {
		t.Errorf("output traceparent = %q; want trace %s continued", tp, tid)
	}
	hs.waitSettled()
	// The consumer span is the child of the producer's span and carries gerrit.change.
	var found bool
	for _, s := range hs.spans.GetSpans() {
		if s.Name == "process in.a" {
			found = true
			if s.Parent.SpanID() != sid || s.SpanKind != trace.SpanKindConsumer {
				t.Errorf("consumer span parent = %s kind %v; want %s consumer", s.Parent.SpanID(), s.SpanKind, sid)
			}
			var change bool
			for _, a := range s.Attributes {
				change = change || (a.Key == telemetry.AttrChange && a.Value.AsInt64() == 1234)
			}
			if !change {
				t.Errorf("consumer span attributes %v lack gerrit.change=1234", s.Attributes)
			}
		}
	}
	if !found {
		t.Error("no consumer span recorded")
	}
}

func TestTransientErrorIsRedelivered(t *testing.T) {
	var calls atomic.Int32
	hs := newHarness(t, 5, stage.HandlerFunc(func(ctx context.Context, m stage.Msg) ([]stage.Out, error) {
		if calls.Add(1) < 3 {
			return nil, errors.New("jenkins: 503")
		}
		if m.Delivered != 3 {
			return nil, stage.Permanent(fmt.Errorf("delivered = %d; want 3", m.Delivered))
		}
		return echo(ctx, m)
	}))
	hs.publish("in.b", "1", "x", nil)
	natstest.Collect(t, hs.js, "out.b", 1, 10*time.Second)
	hs.waitSettled()
	if n := natstest.Count(t, hs.js, "gerritflow.dlq.>"); n != 0 {
		t.Errorf("DLQ holds %d messages; want 0", n)
	}
}

func TestPermanentErrorGoesToDLQWithReason(t *testing.T) {
	var calls atomic.Int32
	hs := newHarness(t, 5, stage.HandlerFunc(func(ctx context.Context, m stage.Msg) ([]stage.Out, error) {
		calls.Add(1)
		return nil, stage.Permanent(errors.New("parse: change.number: want int"))
	}))
	hs.publish("in.c", "1", "garbage", nats.Header{bus.GerritProject: {"platform/core"}})
	got := natstest.Collect(t, hs.js, "gerritflow.dlq.teststage", 1, 10*time.Second)
	h := got[0].Headers()
	if h.Get(bus.Error) != "parse: change.number: want int" || h.Get(bus.Stage) != "teststage" ||
		h.Get(bus.OriginSubject) != "in.c" || h.Get(bus.OriginSequence) != "1" || h.Get(bus.GerritProject) != "platform/core" {
		t.Errorf("DLQ headers = %v", h)
	}
	if string(got[0].Data()) != "garbage" {
		t.Errorf("DLQ data = %q; want the original", got[0].Data())
	}
	hs.waitSettled()
	if n := calls.Load(); n != 1 {
		t.Errorf("handler called %d times; want 1 (permanent errors are not retried)", n)
	}
}

func TestLastDeliveryGoesToDLQ(t *testing.T) {
	var calls atomic.Int32
	hs := newHarness(t, 3, stage.HandlerFunc(func(ctx context.Context, m stage.Msg) ([]stage.Out, error) {
		calls.Add(1)
		return nil, errors.New("gerrit: 500")
	}))
	hs.publish("in.d", "1", "x", nil)
	got := natstest.Collect(t, hs.js, "gerritflow.dlq.teststage", 1, 10*time.Second)
	if got[0].Headers().Get(bus.OriginDelivered) != "3" {
		t.Errorf("DLQ origin delivered = %q; want 3", got[0].Headers().Get(bus.OriginDelivered))
	}
	hs.waitSettled()
	if n := calls.Load(); n != 3 {
		t.Errorf("handler called %d times; want 3 (max_deliver)", n)
	}
}

func TestNoAckBeforeOutputIsStored(t *testing.T) {
	var calls atomic.Int32
	hs := newHarness(t, 3, stage.HandlerFunc(func(ctx context.Context, m stage.Msg) ([]stage.Out, error) {
		calls.Add(1)
		// "nowhere.x" is held by no stream: the PubAck never comes.
		return []stage.Out{{Subject: "nowhere.x", MsgID: "n1", Data: m.Data}}, nil
	}))
	hs.publish("in.e", "1", "x", nil)
	got := natstest.Collect(t, hs.js, "gerritflow.dlq.teststage", 1, 15*time.Second)
	if !strings.Contains(got[0].Headers().Get(bus.Error), "nowhere.x") {
		t.Errorf("DLQ error = %q; want it to name the failed publish", got[0].Headers().Get(bus.Error))
	}
	if n := calls.Load(); n != 3 {
		t.Errorf("handler called %d times; want 3: the message must not be acked while its output failed", n)
	}
}

func TestDrainFinishesWorkInFlight(t *testing.T) {
	started := make(chan struct{})
	release := make(chan struct{})
	var once sync.Once
	hs := newHarness(t, 3, stage.HandlerFunc(func(ctx context.Context, m stage.Msg) ([]stage.Out, error) {
		once.Do(func() { close(started) })
		<-release
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return echo(ctx, m)
	}))
	hs.publish("in.f", "1", "x", nil)
	<-started
	stopped := make(chan error, 1)
	go func() { stopped <- hs.shutdown() }()
	time.Sleep(100 * time.Millisecond) // SIGTERM arrives while the handler works
	close(release)
	if err := <-stopped; err != nil {
		t.Fatalf("Run = %v", err)
	}
	if n := natstest.Count(t, hs.js, "out.f"); n != 1 {
		t.Errorf("out.f holds %d messages after drain; want 1", n)
	}
	c, _ := hs.js.Consumer(context.Background(), "TEST", "teststage")
	info, _ := c.Info(context.Background())
	if info.NumAckPending != 0 || info.AckFloor.Stream != 1 {
		t.Errorf("after drain: ack pending %d, ack floor %d; want 0 and 1", info.NumAckPending, info.AckFloor.Stream)
	}
}

// TestWorkLongerThanTheFirstRetryStepIsNotRedelivered: slow work is kept in
// progress, whatever the retry schedule says.
func TestWorkLongerThanTheFirstRetryStepIsNotRedelivered(t *testing.T) {
	var calls atomic.Int32
	hs := newHarness(t, 3, stage.HandlerFunc(func(ctx context.Context, m stage.Msg) ([]stage.Out, error) {
		calls.Add(1)
		time.Sleep(600 * time.Millisecond) // twelve times the 50ms first retry step
		return echo(ctx, m)
	}))
	hs.publish("in.g", "1", "slow", nil)
	natstest.Collect(t, hs.js, "out.g", 1, 10*time.Second)
	hs.waitSettled()
	if n := calls.Load(); n != 1 {
		t.Errorf("handler called %d times; want 1 (no redelivery while it works)", n)
	}
}

func TestBackoffSchedule(t *testing.T) {
	got := stage.Backoff(jetstream.ConsumerConfig{Metadata: map[string]string{stage.BackoffKey: "1s, 5s,1m"}})
	if want := []time.Duration{time.Second, 5 * time.Second, time.Minute}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("Backoff = %v; want %v", got, want)
	}
	if got := stage.Backoff(jetstream.ConsumerConfig{BackOff: []time.Duration{time.Second}}); len(got) != 1 {
		t.Errorf("Backoff without metadata = %v; want the server-side schedule", got)
	}
}
