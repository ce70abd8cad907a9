package trigger

import (
	"context"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/gerritflow/gerritflow/pkg/config"
	"github.com/gerritflow/gerritflow/pkg/jenkins"
	"github.com/gerritflow/gerritflow/pkg/jenkinssim"
	"github.com/gerritflow/gerritflow/pkg/natstest"
	"github.com/gerritflow/gerritflow/pkg/stage"
	"github.com/gerritflow/gerritflow/pkg/telemetry"
)

// BenchmarkTriggerScaling measures events/s through the trigger with one and
// with two replicas, side by side in one run, against a Jenkins that answers
// every request in 50 ms (make bench-trigger). Each replica handles 8
// messages at once. Its last output line is "one=<x> two=<y> ratio=<y/x>".
func BenchmarkTriggerScaling(b *testing.B) {
	const events = 400
	var one, two float64
	for i := 0; i < b.N; i++ {
		one = triggerRate(b, 1, events)
		two = triggerRate(b, 2, events)
	}
	b.ReportMetric(one, "events/s-1")
	b.ReportMetric(two, "events/s-2")
	b.ReportMetric(two/one, "ratio")
	fmt.Printf("one=%.1f two=%.1f ratio=%.2f\n", one, two, two/one)
}

func triggerRate(b *testing.B, replicas, events int) float64 {
	b.Helper()
	_, js := natstest.JetStream(b)
	jk := jenkinssim.Start(b, jenkinssim.Options{User: "ci", Token: "t", Latency: 50 * time.Millisecond})
	jk.AddJob("unit", "GERRITFLOW_BUILD_ID", "GERRIT_CHANGE_NUMBER")
	ctx := context.Background()
	cfg, err := config.Parse(strings.NewReader(`
jenkins: { url: ` + jk.URL() + `, user: ci, max_concurrent: 16 }
jobs: [ { name: unit, jenkins_job: unit, events: [ { type: patchset-created } ], projects: [ "platform/core" ] } ]
`))
	if err != nil {
		b.Fatal(err)
	}
	// Publish every event first, then measure draining them.
	for c := 1; c <= events; c++ {
		data := fmt.Sprintf(`{"type":"patchset-created","eventCreatedOn":%d,"change":{"project":"platform/core","branch":"main","number":%d,"id":"I%040d","subject":"s"},"patchSet":{"number":1,"revision":"%040d","ref":"refs/changes/%02d/%d/1"},"uploader":{"name":"A","username":"a"}}`,
			1700000000+c, c, c, c, c%100, c)
		if _, err := js.PublishMsg(ctx, &nats.Msg{Subject: "gerrit.events.patchset-created", Data: []byte(data)}, jetstream.WithMsgID(fmt.Sprint(c))); err != nil {
			b.Fatal(err)
		}
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{}, replicas)
	start := time.Now()
	for r := 0; r < replicas; r++ {
		tel, err := telemetry.Start(ctx, "trigger", config.Otel{}, "", telemetry.WithLogOutput(io.Discard))
		if err != nil {
			b.Fatal(err)
		}
		client, err := jenkins.New(ctx, jk.URL(), "ci", "t", nil)
		if err != nil {
			b.Fatal(err)
		}
		buckets, err := openBuckets(ctx, js)
		if err != nil {
			b.Fatal(err)
		}
		h, err := New(cfg, client, nil, buckets, tel)
		if err != nil {
			b.Fatal(err)
		}
		go func() {
			_ = stage.Run(runCtx, js, Spec.Tuned(config.Stages{Concurrency: 8}), h, tel)
			done <- struct{}{}
		}()
	}
	deadline := time.Now().Add(5 * time.Minute)
	for natstest.Count(b, js, "ci.builds.triggered") < events {
		if time.Now().After(deadline) {
			b.Fatalf("%d replicas: %d of %d events triggered after 5 minutes", replicas, natstest.Count(b, js, "ci.builds.triggered"), events)
		}
		time.Sleep(20 * time.Millisecond)
	}
	elapsed := time.Since(start)
	stop()
	for r := 0; r < replicas; r++ {
		<-done
	}
	if n := jk.BuildRequests("unit"); n != events {
		b.Fatalf("%d replicas: Jenkins got %d build requests for %d events", replicas, n, events)
	}
	return float64(events) / elapsed.Seconds()
}
