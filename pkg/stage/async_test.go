package stage_test

import (
	"context"
	"io"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/gerritflow/gerritflow/pkg/config"
	"github.com/gerritflow/gerritflow/pkg/natstest"
	"github.com/gerritflow/gerritflow/pkg/stage"
	"github.com/gerritflow/gerritflow/pkg/telemetry"
)

type asyncFunc func(ctx context.Context, m stage.Msg, done func([]stage.Out, error))

func (f asyncFunc) Start(ctx context.Context, m stage.Msg, done func([]stage.Out, error)) {
	f(ctx, m, done)
}

func asyncSetup(t *testing.T) jetstream.JetStream {
	t.Helper()
	_, js := natstest.JetStream(t)
	ctx := context.Background()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "TEST", Subjects: []string{"in.>", "out.>"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateConsumer(ctx, "TEST", jetstream.ConsumerConfig{
		Durable: "teststage", AckPolicy: jetstream.AckExplicitPolicy, FilterSubject: "in.>",
		AckWait: 1 * time.Second, MaxDeliver: 5,
	}); err != nil {
		t.Fatal(err)
	}
	return js
}

func runAsync(t *testing.T, js jetstream.JetStream, h stage.AsyncHandler) (stop func()) {
	t.Helper()
	tel, err := telemetry.Start(context.Background(), "teststage", config.Otel{}, "", telemetry.WithLogOutput(io.Discard))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- stage.RunAsync(ctx, js, stage.Spec{Service: "teststage", Stream: "TEST", Durable: "teststage", Concurrency: 2, DrainTimeout: 5 * time.Second}, h, tel)
	}()
	var stopped bool
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("RunAsync = %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Fatal("RunAsync did not return")
		}
	}
	t.Cleanup(stop)
	return stop
}

func TestAsyncWorkOutlivesAckWaitAndCompletesOnce(t *testing.T) {
	js := asyncSetup(t)
	var starts atomic.Int32
	runAsync(t, js, asyncFunc(func(ctx context.Context, m stage.Msg, done func([]stage.Out, error)) {
		starts.Add(1)
		go func() {
			time.Sleep(2500 * time.Millisecond) // longer than AckWait (1s)
			done([]stage.Out{{Subject: "out.x", MsgID: "o1", Data: m.Data}}, nil)
			done(nil, nil) // a second call is ignored
		}()
	}))
	if _, err := js.PublishMsg(context.Background(), &nats.Msg{Subject: "in.x", Data: []byte("b")}); err != nil {
		t.Fatal(err)
	}
	natstest.Collect(t, js, "out.x", 1, 10*time.Second)
	time.Sleep(300 * time.Millisecond)
	if n := starts.Load(); n != 1 {
		t.Errorf("Start called %d times; want 1 (the message must be kept in progress, not redelivered)", n)
	}
	c, _ := js.Consumer(context.Background(), "TEST", "teststage")
	info, _ := c.Info(context.Background())
	if info.NumAckPending != 0 || info.AckFloor.Stream != 1 {
		t.Errorf("ack pending %d, floor %d; want 0, 1", info.NumAckPending, info.AckFloor.Stream)
	}
}

func TestAsyncUnfinishedWorkIsReleasedToAnotherReplica(t *testing.T) {
	js := asyncSetup(t)
	started := make(chan struct{}, 1)
	var cancelled atomic.Bool
	stop := runAsync(t, js, asyncFunc(func(ctx context.Context, m stage.Msg, done func([]stage.Out, error)) {
		started <- struct{}{}
		go func() {
			<-ctx.Done() // never finishes on its own
			cancelled.Store(true)
			done([]stage.Out{{Subject: "out.y", MsgID: "late", Data: m.Data}}, nil)
		}()
	}))
	if _, err := js.PublishMsg(context.Background(), &nats.Msg{Subject: "in.y", Data: []byte("b")}); err != nil {
		t.Fatal(err)
	}
	<-started
	stop()
	if !cancelled.Load() {
		time.Sleep(100 * time.Millisecond)
	}
	if !cancelled.Load() {
		t.Error("the handler's context was not cancelled at stop")
	}
	var delivered atomic.Uint64
	got := make(chan struct{})
	runAsync(t, js, asyncFunc(func(ctx context.Context, m stage.Msg, done func([]stage.Out, error)) {
		delivered.Store(m.Delivered)
		done([]stage.Out{{Subject: "out.y", MsgID: "o2", Data: m.Data}}, nil)
		close(got)
	}))
	select {
	case <-got:
	case <-time.After(10 * time.Second):
		t.Fatal("the released message never reached the second replica")
	}
	if d := delivered.Load(); d != 2 {
		t.Errorf("second replica got delivery %d; want 2", d)
	}
	natstest.Collect(t, js, "out.y", 1, 5*time.Second)
	if n := natstest.Count(t, js, "out.y"); n != 1 {
		t.Errorf("out.y holds %d; want 1 (the stopped replica's late done is ignored)", n)
	}
}
