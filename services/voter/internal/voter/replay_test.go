package voter

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/gerritflow/gerritflow/pkg/build"
	"github.com/gerritflow/gerritflow/pkg/bus"
	"github.com/gerritflow/gerritflow/pkg/config"
	"github.com/gerritflow/gerritflow/pkg/natstest"
	"github.com/gerritflow/gerritflow/pkg/stage"
	"github.com/gerritflow/gerritflow/pkg/subject"
	"github.com/gerritflow/gerritflow/pkg/telemetry"
	"github.com/gerritflow/gerritflow/streams"
)

// voteReplay is the ci.votes.replay message gfctl publishes for a
// ci.votes.posted output: the same body, the replay headers.
func (f *fixture) voteReplay(posted stage.Out, replay string) stage.Msg {
	h := nats.Header{}
	for k, v := range posted.Header {
		h[k] = v
	}
	if replay != "" {
		h.Set(bus.Replay, replay)
		h.Set(bus.ReplayOf, "7")
	}
	return stage.Msg{Subject: "ci.votes.replay", Data: posted.Data, Header: h, Delivered: 1,
		Log: slog.New(slog.NewJSONHandler(f.logs, nil))}
}

func TestVoteReplayPostsAgainOncePerReplayID(t *testing.T) {
	f := newFixture(t)
	v := f.voter(testVote())
	n, shas := f.upload(1)
	set := f.seed(n, 1, shas[0], "unit:SUCCESS", "lint:FAILURE")
	posted := handle(t, v, f.completed(set, "lint", ""))
	if len(posted) != 1 {
		t.Fatalf("Handle = %v; want the ci.votes.posted output", posted)
	}
	f.g.Wipe() // Gerrit lost the vote

	replays := v.Replays()
	outs, err := replays.Handle(context.Background(), f.voteReplay(posted[0], "r1"))
	if err != nil {
		t.Fatalf("Replays().Handle = %v; want the vote posted again", err)
	}
	reviews := f.g.ReviewsFor(n)
	if len(reviews) != 1 {
		t.Fatalf("Gerrit got %d reviews after the replay; want 1", len(reviews))
	}
	r := reviews[0]
	if r.Revision != shas[0] || r.Input.Labels["Verified"] != -1 || !strings.HasSuffix(r.Input.Message, Marker(set.ID, "r1")) {
		t.Errorf("replayed review = %v on %s: %q; want Verified -1 on %s ending with the replay marker", r.Input.Labels, r.Revision, r.Input.Message, shas[0])
	}
	key := VotesKey(set.ID, "r1")
	if len(outs) != 1 || outs[0].Subject != subject.VotesPosted || outs[0].MsgID != "vote."+key ||
		outs[0].Header.Get(bus.Replay) != "r1" || outs[0].Header.Get(bus.ReplayOf) != "7" {
		t.Errorf("replay output = %+v; want ci.votes.posted vote.%s with the replay headers", outs, key)
	}
	if rec, ok := f.record(key); !ok || rec.State != build.VotePosted || rec.Replay != "r1" {
		t.Errorf("votes/%s = %+v; want posted for replay r1", key, rec)
	}

	// The same replay again (a redelivery), and a replayed ci.builds.completed
	// with the same replay id: the votes key is the same, nothing more is posted.
	again, err := replays.Handle(context.Background(), f.voteReplay(posted[0], "r1"))
	if err != nil || len(again) != 1 || again[0].MsgID != outs[0].MsgID {
		t.Errorf("second replay r1 = %v, %v; want the same output again", again, err)
	}
	handle(t, v, f.completed(set, "unit", "r1"))
	if got := len(f.g.ReviewsFor(n)); got != 1 {
		t.Errorf("Gerrit got %d reviews after replay r1 twice; want 1", got)
	}

	// A new replay id posts once more.
	if _, err := replays.Handle(context.Background(), f.voteReplay(posted[0], "r2")); err != nil {
		t.Fatal(err)
	}
	if got := len(f.g.ReviewsFor(n)); got != 2 {
		t.Errorf("Gerrit got %d reviews after replays r1 and r2; want 2", got)
	}
}

func TestVoteReplayRefusals(t *testing.T) {
	f := newFixture(t)
	v := f.voter(testVote())
	n, shas := f.upload(1)
	set := f.seed(n, 1, shas[0], "unit:SUCCESS")
	posted := handle(t, v, f.completed(set, "unit", ""))[0]
	f.g.Wipe()

	running := set // lint still runs: a KV record lagging behind
	running.ID = set.ID + "r"
	running.Jobs = append(append([]build.Job(nil), set.Jobs...), build.Job{Name: "lint", JenkinsJob: "lint", Voting: true})
	f.put(f.sets, running.ID, running)
	f.put(f.builds, subject.BuildKey(running.ID, "unit"), build.Build{BuildSet: running.ID, Job: "unit", State: build.StateCompleted, Result: "SUCCESS"})
	f.put(f.builds, subject.BuildKey(running.ID, "lint"), build.Build{BuildSet: running.ID, Job: "lint", State: build.StateRunning})
	superseded := set
	superseded.ID, superseded.State = set.ID+"s", build.SetSuperseded
	f.put(f.sets, superseded.ID, superseded)

	vote := func(mutate func(*build.Vote)) stage.Out {
		var b build.Vote
		if err := build.Decode(posted.Data, &b); err != nil {
			t.Fatal(err)
		}
		mutate(&b)
		o := posted
		o.Data = build.Encode(b)
		return o
	}
	tests := []struct {
		name          string
		m             stage.Msg
		wantPermanent bool
		wantErr       string
	}{
		{"no replay header", f.voteReplay(posted, ""), true, "deliberate replay"},
		{"not a vote", func() stage.Msg { m := f.voteReplay(posted, "r1"); m.Data = []byte("{not json"); return m }(), true, "decode"},
		{"no build set", f.voteReplay(vote(func(b *build.Vote) { b.BuildSet = "" }), "r1"), true, "without buildset"},
		{"build set expired", f.voteReplay(vote(func(b *build.Vote) { b.BuildSet = "1-1-gone" }), "r1"), true, "record is gone"},
		{"vote of another change", f.voteReplay(vote(func(b *build.Vote) { b.Change = n + 1 }), "r1"), true, "the vote is for"},
		{"builds not completed", f.voteReplay(vote(func(b *build.Vote) { b.BuildSet = running.ID }), "r1"), false, "not completed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			outs, err := v.Replays().Handle(context.Background(), tt.m)
			if err == nil || stage.IsPermanent(err) != tt.wantPermanent || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Replays().Handle = %v, %v; want an error with %q, permanent %v", outs, err, tt.wantErr, tt.wantPermanent)
			}
		})
	}
	t.Run("superseded build set", func(t *testing.T) {
		outs, err := v.Replays().Handle(context.Background(), f.voteReplay(vote(func(b *build.Vote) { b.BuildSet = superseded.ID }), "r1"))
		if err != nil || outs != nil {
			t.Errorf("Replays().Handle = %v, %v; want nothing, as for a replayed completion", outs, err)
		}
	})
	if got := len(f.g.ReviewsFor(n)); got != 0 {
		t.Errorf("Gerrit got %d reviews from refused replays; want 0", got)
	}
}

// Both loops as main runs them, on one telemetry: a replay of ci.votes.posted
// on ci.votes.replay posts again; one without a replay id goes to the DLQ.
func TestStageVoteReplay(t *testing.T) {
	f := newFixture(t)
	n, shas := f.upload(1)
	set := f.seed(n, 1, shas[0], "unit:SUCCESS")
	tel, err := telemetry.Start(context.Background(), "voter", config.Otel{}, "", telemetry.WithLogOutput(f.logs))
	if err != nil {
		t.Fatal(err)
	}
	v := New(testVote(), f.gc, f.sets, f.builds, f.vote, tel)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 2)
	for _, loop := range []struct {
		spec stage.Spec
		h    stage.Handler
		tel  *telemetry.Telemetry
	}{{Spec, v, tel}, {ReplaySpec, v.Replays(), tel}} {
		spec := loop.spec
		spec.Concurrency, spec.DrainTimeout = 4, 10*time.Second
		go func() { done <- stage.Run(ctx, f.js, spec, loop.h, loop.tel) }()
	}
	t.Cleanup(func() {
		cancel()
		for i := 0; i < 2; i++ {
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("stage.Run = %v; want nil after drain", err)
				}
			case <-time.After(20 * time.Second):
				t.Error("stage.Run did not return after cancel")
			}
		}
	})

	publish := func(subj string, data []byte, h nats.Header, id string) {
		t.Helper()
		if _, err := f.js.PublishMsg(context.Background(), &nats.Msg{Subject: subj, Data: data, Header: h}, jetstream.WithMsgID(id)); err != nil {
			t.Fatal(err)
		}
	}
	m := f.completed(set, "unit", "")
	publish(subject.BuildsCompleted, m.Data, m.Header, subject.BuildKey(set.ID, "unit")+".completed")
	first := natstest.Collect(t, f.js, subject.VotesPosted, 1, 15*time.Second)[0]
	f.g.Wipe()

	h := nats.Header{}
	for k, v := range first.Headers() {
		h[k] = v
	}
	h.Set(bus.Replay, "r-1")
	h.Set(bus.ReplayOf, "1")
	publish("ci.votes.replay", first.Data(), h, "vote."+set.ID+".replay.r-1")
	publish("ci.votes.replay", first.Data(), first.Headers(), "stray") // no replay id

	posted := natstest.Collect(t, f.js, subject.VotesPosted, 2, 15*time.Second)
	if got := posted[1].Headers().Get(bus.MsgID); got != "vote."+VotesKey(set.ID, "r-1") {
		t.Errorf("second ci.votes.posted Msg-Id = %q; want vote.%s", got, VotesKey(set.ID, "r-1"))
	}
	dlq := natstest.Collect(t, f.js, subject.DLQ("voter"), 1, 15*time.Second)[0]
	if dlq.Headers().Get(bus.OriginSubject) != "ci.votes.replay" || !strings.Contains(dlq.Headers().Get(bus.Error), bus.Replay) {
		t.Errorf("DLQ message headers = %v; want origin ci.votes.replay and an error naming %s", dlq.Headers(), bus.Replay)
	}
	if got := len(f.g.ReviewsFor(n)); got != 1 {
		t.Errorf("Gerrit got %d reviews after the wipe; want 1 (the replay)", got)
	}
	c, err := f.js.Consumer(context.Background(), streams.CIVotes, ReplaySpec.Durable)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		info, err := c.Info(context.Background())
		if err == nil && info.NumPending == 0 && info.NumAckPending == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("consumer %s did not settle: %+v, %v", ReplaySpec.Durable, info, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
