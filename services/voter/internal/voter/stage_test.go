package voter

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/gerritflow/gerritflow/pkg/build"
	"github.com/gerritflow/gerritflow/pkg/config"
	"github.com/gerritflow/gerritflow/pkg/natstest"
	"github.com/gerritflow/gerritflow/pkg/stage"
	"github.com/gerritflow/gerritflow/pkg/subject"
	"github.com/gerritflow/gerritflow/pkg/telemetry"
	"github.com/gerritflow/gerritflow/streams"
)

// The voter as it runs: the provisioned durable consumer on CI_BUILDS, the
// stage loop, the duplicate window of CI_VOTES.
func TestStageTwoCompletionsOneVote(t *testing.T) {
	f := newFixture(t)
	n, shas := f.upload(1)
	set := f.seed(n, 1, shas[0], "unit:SUCCESS", "lint:SUCCESS")
	tel, err := telemetry.Start(context.Background(), "voter", config.Otel{}, "", telemetry.WithLogOutput(f.logs))
	if err != nil {
		t.Fatal(err)
	}
	v := New(testVote(), f.gc, f.sets, f.builds, f.vote, tel)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	spec := Spec
	spec.Concurrency, spec.DrainTimeout = 4, 10*time.Second
	go func() { done <- stage.Run(ctx, f.js, spec, v, tel) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("stage.Run = %v; want nil after drain", err)
			}
		case <-time.After(20 * time.Second):
			t.Error("stage.Run did not return after cancel")
		}
	})

	for _, job := range []string{"unit", "lint"} {
		m := f.completed(set, job, "")
		msg := &nats.Msg{Subject: subject.BuildsCompleted, Data: m.Data, Header: m.Header}
		if _, err := f.js.PublishMsg(context.Background(), msg, jetstream.WithMsgID(subject.BuildKey(set.ID, job)+".completed")); err != nil {
			t.Fatal(err)
		}
	}

	got := natstest.Collect(t, f.js, subject.VotesPosted, 1, 15*time.Second)
	var vote build.Vote
	if err := build.Decode(got[0].Data(), &vote); err != nil || vote.State != build.VotePosted || vote.BuildSet != set.ID {
		t.Errorf("ci.votes.posted = %+v, %v; want posted for %s", vote, err, set.ID)
	}
	waitSettled(t, f.js)
	if c := natstest.Count(t, f.js, subject.VotesPosted); c != 1 {
		t.Errorf("ci.votes.posted holds %d messages; want 1", c)
	}
	if r := f.g.ReviewsFor(n); len(r) != 1 {
		t.Errorf("Gerrit got %d reviews; want 1", len(r))
	}
}

// waitSettled waits until the voter's consumer has nothing pending or unacked.
func waitSettled(t *testing.T, js jetstream.JetStream) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		c, err := js.Consumer(context.Background(), streams.CIBuilds, "voter")
		if err != nil {
			t.Fatal(err)
		}
		info, err := c.Info(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if info.NumPending == 0 && info.NumAckPending == 0 {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatal("consumer voter did not settle: messages left pending or unacked")
}
