package stage_test

import (
	"context"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/gerritflow/gerritflow/pkg/config"
	"github.com/gerritflow/gerritflow/pkg/natstest"
	"github.com/gerritflow/gerritflow/pkg/stage"
	"github.com/gerritflow/gerritflow/pkg/telemetry"
)

// TestConsumerLagGauges scrapes /metrics of a running stage: a backlog the
// handler cannot keep up with shows in the consumer gauges, and they fall
// back to zero once it is worked off.
func TestConsumerLagGauges(t *testing.T) {
	_, js := natstest.JetStream(t)
	ctx := context.Background()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "LAG", Subjects: []string{"lag.>"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateConsumer(ctx, "LAG", jetstream.ConsumerConfig{Durable: "lagstage", AckPolicy: jetstream.AckExplicitPolicy, AckWait: 10 * time.Second}); err != nil {
		t.Fatal(err)
	}
	const n = 20
	for i := range n {
		if _, err := js.Publish(ctx, "lag.in", []byte("x"), jetstream.WithMsgID(strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
	}
	tel, err := telemetry.Start(ctx, "lagstage", config.Otel{}, "127.0.0.1:0", telemetry.WithLogOutput(io.Discard))
	if err != nil {
		t.Fatal(err)
	}
	defer tel.Shutdown(ctx)
	release := make(chan struct{})
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- stage.Run(runCtx, js, stage.Spec{Service: "lagstage", Stream: "LAG", Durable: "lagstage", Concurrency: 2,
			LagInterval: 50 * time.Millisecond, DrainTimeout: 5 * time.Second},
			stage.HandlerFunc(func(ctx context.Context, m stage.Msg) ([]stage.Out, error) {
				<-release
				return nil, nil
			}), tel)
	}()
	defer func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("Run = %v", err)
		}
	}()

	gauge := func(name string) (float64, bool) {
		resp, err := http.Get("http://" + tel.Addr() + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		prefix := "gerritflow_lagstage_" + name + `{consumer="lagstage"} `
		for _, line := range strings.Split(string(body), "\n") {
			if v, ok := strings.CutPrefix(line, prefix); ok {
				f, err := strconv.ParseFloat(v, 64)
				return f, err == nil
			}
		}
		return 0, false
	}
	waitGauges := func(what string, ok func(pending, ackPending float64) bool) {
		t.Helper()
		var p, a float64
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			var okP, okA bool
			p, okP = gauge("consumer_pending_messages")
			a, okA = gauge("consumer_ack_pending_messages")
			if _, okR := gauge("consumer_redelivered_messages"); okP && okA && okR && ok(p, a) {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Fatalf("consumer gauges never showed %s: pending %v, ack pending %v", what, p, a)
	}
	waitGauges("the backlog", func(p, a float64) bool { return p > 0 && a >= 2 && p+a == n })
	close(release)
	waitGauges("the backlog worked off", func(p, a float64) bool { return p == 0 && a == 0 })
}
