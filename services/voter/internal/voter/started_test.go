package voter

import (
	"log/slog"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/gerritflow/gerritflow/pkg/build"
	"github.com/gerritflow/gerritflow/pkg/stage"
	"github.com/gerritflow/gerritflow/pkg/subject"
)

func (f *fixture) triggered(set build.Set, job string) stage.Msg {
	t := build.Triggered{BuildSet: set.ID, Job: job, BuildID: subject.BuildKey(set.ID, job), Project: set.Project, Change: set.Change, PatchSet: set.PatchSet}
	return stage.Msg{Subject: subject.BuildsTriggered, Data: build.Encode(t), Header: nats.Header{}, Delivered: 1,
		Log: slog.New(slog.NewJSONHandler(f.logs, nil))}
}

func TestBuildStartedMessageOncePerBuildSet(t *testing.T) {
	f := newFixture(t)
	change, shas := f.upload(1)
	set := f.seed(change, 1, shas[0], "unit:", "~lint:")
	cfg := testVote()
	off := f.voter(cfg)
	handle(t, off, f.triggered(set, "unit"))
	if n := len(f.g.ReviewsFor(change)); n != 0 {
		t.Fatalf("vote.started off: %d messages posted; want 0", n)
	}
	cfg.Started = true
	on := f.voter(cfg)
	handle(t, on, f.triggered(set, "unit"))
	handle(t, on, f.triggered(set, "lint")) // the second job of the same set
	handle(t, f.voter(cfg), f.triggered(set, "unit"))
	reviews := f.g.ReviewsFor(change)
	if len(reviews) != 1 {
		t.Fatalf("started messages = %d; want 1 per build set", len(reviews))
	}
	r := reviews[0]
	if len(r.Input.Labels) != 0 || r.Revision != shas[0] || r.Input.Notify != "NONE" {
		t.Errorf("started message = labels %v rev %s notify %q; want no labels on %s, notify NONE", r.Input.Labels, r.Revision, r.Input.Notify, shas[0])
	}
	for _, want := range []string{"Build Started", "unit: Jenkins job folder/unit", "lint: Jenkins job folder/lint (non-voting)", StartedMarker(set.ID)} {
		if !strings.Contains(r.Input.Message, want) {
			t.Errorf("started message lacks %q:\n%s", want, r.Input.Message)
		}
	}
	if StartedMarker(set.ID) == Marker(set.ID, "") {
		t.Error("the started marker equals the vote marker: a crash recovery would take the started message for the vote")
	}
}
