package main

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/trace"

	"github.com/gerritflow/gerritflow/pkg/build"
	"github.com/gerritflow/gerritflow/pkg/bus"
	"github.com/gerritflow/gerritflow/pkg/subject"
	"github.com/gerritflow/gerritflow/streams"
)

// completion is one ci.builds.completed message stored in CI_BUILDS.
type completion struct {
	seq     uint64
	time    time.Time
	msgID   string
	trace   string // trace id of its traceparent
	change  int
	project string
}

// seedCompletions stores five completions, as the monitor publishes them:
// changes 1 (twice), 2, 3 (twice) of projects a/x and b/y; the last has no Msg-Id.
func seedCompletions(h *harness) []completion {
	var out []completion
	for i, c := range []struct {
		change  int
		project string
	}{{1, "a/x"}, {2, "a/x"}, {1, "a/x"}, {3, "b/y"}, {3, "b/y"}} {
		set := fmt.Sprintf("%d-1-%016x", c.change, c.change)
		job := "unit"
		if i == 2 || i == 4 {
			job = "lint"
		}
		hdr := nats.Header{}
		hdr.Set(bus.BuildSet, set)
		hdr.Set(bus.Job, job)
		bus.SetChange(hdr, c.project, c.change, 1)
		traceID := fmt.Sprintf("%032x", i+1)
		hdr.Set(bus.Traceparent, "00-"+traceID+"-00000000000000a1-01")
		id := subject.BuildKey(set, job) + ".completed"
		if i == 4 {
			id = ""
		}
		body := build.Encode(build.Completed{BuildSet: set, Job: job, Result: "SUCCESS", Duration: time.Minute})
		seq, at := h.publish(subject.BuildsCompleted, body, hdr, id)
		out = append(out, completion{seq: seq, time: at, msgID: id, trace: traceID, change: c.change, project: c.project})
	}
	return out
}

func seqsOf(s replaySummary) []uint64 {
	var seqs []uint64
	for _, m := range s.Messages {
		seqs = append(seqs, m.Seq)
	}
	return seqs
}

func TestReplaySelection(t *testing.T) {
	h := newHarness(t)
	c := seedCompletions(h)
	at := func(i int) string { return c[i].time.Format(time.RFC3339Nano) }
	seq := func(i int) string { return strconv.FormatUint(c[i].seq, 10) }
	tests := []struct {
		name string
		args []string
		want []int // indexes into c
	}{
		{"sequence range", []string{"--from-seq", seq(1), "--to-seq", seq(3)}, []int{1, 2, 3}},
		{"from a sequence on", []string{"--from-seq", seq(3)}, []int{3, 4}},
		{"since", []string{"--since", at(2)}, []int{2, 3, 4}},
		{"since and until", []string{"--since", at(1), "--until", at(2)}, []int{1, 2}},
		{"a duration ago", []string{"--since", "1h ago"}, []int{0, 1, 2, 3, 4}},
		{"change", []string{"--change", "1"}, []int{0, 2}},
		{"project", []string{"--project", "b/y"}, []int{3, 4}},
		{"change within a range", []string{"--change", "3", "--from-seq", seq(4)}, []int{4}},
		{"sequence and time", []string{"--from-seq", seq(1), "--since", at(2)}, []int{2, 3, 4}},
		{"nothing in range", []string{"--since", "2099-01-01T00:00:00Z"}, nil},
		{"the whole stream", []string{"--all"}, []int{0, 1, 2, 3, 4}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got replaySummary
			h.runJSON(&got, append([]string{"replay", subject.BuildsCompleted, "--dry-run", "--id", "sel"}, tt.args...)...)
			var want []uint64
			for _, i := range tt.want {
				want = append(want, c[i].seq)
			}
			if !slices.Equal(seqsOf(got), want) || got.Selected != len(want) || !got.DryRun || got.Published != 0 {
				t.Errorf("replay %v --dry-run selected %v (%+v); want %v", tt.args, seqsOf(got), got, want)
			}
		})
	}
	if n := len(h.messages(subject.BuildsCompleted)); n != len(c) {
		t.Errorf("ci.builds.completed holds %d messages after dry runs; want %d (nothing published)", n, len(c))
	}

	// The dry run's table names each message and the Msg-Id its copy would get.
	out, _, err := h.run("replay", subject.BuildsCompleted, "--change", "3", "--dry-run", "--id", "r9")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"NEW MSG-ID", c[3].msgID + ".replay.r9", "CI_BUILDS:" + seq(4) + ".replay.r9",
		"2 would be replayed, 3 skipped; nothing was published"} {
		if !strings.Contains(out, want) {
			t.Errorf("replay --dry-run output lacks %q:\n%s", want, out)
		}
	}
}

func TestReplayPublishesMarkedCopiesOnce(t *testing.T) {
	h := newHarness(t)
	c := seedCompletions(h)
	var sum replaySummary
	out, errOut, err := h.run("replay", subject.BuildsCompleted, "--project", "b/y", "--id", "r1")
	if err != nil {
		t.Fatalf("replay = %v\n%s", err, errOut)
	}
	if !strings.Contains(out, "replay r1 on ci.builds.completed (stream CI_BUILDS): 2 selected, 2 published, 0 duplicates, 3 skipped, 0 errors") {
		t.Errorf("replay summary = %q", out)
	}
	if !strings.Contains(errOut, "replay r1:") {
		t.Errorf("replay printed no progress on stderr: %q", errOut)
	}
	all := h.messages(subject.BuildsCompleted)
	if len(all) != 7 {
		t.Fatalf("ci.builds.completed holds %d messages; want 5 + 2 copies", len(all))
	}
	spans := map[string]bool{}
	for _, s := range h.spans.GetSpans() {
		spans[s.SpanContext.TraceID().String()] = true
		if s.SpanKind != trace.SpanKindProducer || len(s.Links) != 1 || s.Name != "send ci.builds.completed" {
			t.Errorf("replay span %s kind %v links %v; want a producer span with one link", s.Name, s.SpanKind, s.Links)
		}
	}
	for i, copy := range all[5:] {
		orig := c[3+i]
		wantID := orig.msgID + ".replay.r1"
		if orig.msgID == "" {
			wantID = "CI_BUILDS:" + strconv.FormatUint(orig.seq, 10) + ".replay.r1"
		}
		hd := copy.Header
		if hd.Get(bus.MsgID) != wantID || hd.Get(bus.Replay) != "r1" || hd.Get(bus.ReplayOf) != strconv.FormatUint(orig.seq, 10) ||
			hd.Get(bus.GerritChange) != "3" || hd.Get(bus.GerritProject) != "b/y" || hd.Get(bus.BuildSet) == "" {
			t.Errorf("copy of seq %d has headers %v; want Msg-Id %s, the replay headers and the original's", orig.seq, hd, wantID)
		}
		if string(copy.Data) != string(all[3+i].Data) {
			t.Errorf("copy of seq %d has body %s; want %s", orig.seq, copy.Data, all[3+i].Data)
		}
		sc := trace.SpanContextFromContext(bus.Extract(t.Context(), hd))
		if !sc.IsValid() || sc.TraceID().String() == orig.trace || !spans[sc.TraceID().String()] {
			t.Errorf("copy of seq %d traceparent %q; want a new trace, of a span gfctl made", orig.seq, hd.Get(bus.Traceparent))
		}
	}
	var linked []string
	for _, s := range h.spans.GetSpans() {
		linked = append(linked, s.Links[0].SpanContext.TraceID().String())
	}
	if !slices.Equal(linked, []string{c[3].trace, c[4].trace}) {
		t.Errorf("replay spans link to traces %v; want the originals' %s, %s", linked, c[3].trace, c[4].trace)
	}

	// The same replay id again: the stream drops the copies as duplicates.
	// (The range now holds the copies of r1 too: theirs are the same Msg-Ids.)
	h.runJSON(&sum, "replay", subject.BuildsCompleted, "--project", "b/y", "--id", "r1")
	if sum.Selected != 4 || sum.Published != 0 || sum.Duplicates != 4 {
		t.Errorf("second replay r1 = %+v; want 4 selected (2 originals, 2 copies), 0 published, 4 duplicates", sum)
	}
	if n := len(h.messages(subject.BuildsCompleted)); n != 7 {
		t.Errorf("ci.builds.completed holds %d messages after replaying r1 twice; want 7", n)
	}
	// A new id replays each original once, whether read as itself or as a copy of r1.
	h.runJSON(&sum, "replay", subject.BuildsCompleted, "--project", "b/y", "--id", "r2")
	if sum.Selected != 4 || sum.Published != 2 || sum.Duplicates != 2 {
		t.Errorf("replay r2 = %+v; want 4 selected, 2 published, 2 duplicates", sum)
	}
}

func TestReplayOfVotesGoesToVotesReplay(t *testing.T) {
	h := newHarness(t)
	vote := build.Vote{BuildSet: "5-1-abc", Project: project, Change: 5, PatchSet: 1, State: build.VotePosted, Labels: map[string]int{"Verified": 1}}
	hdr := nats.Header{}
	hdr.Set(bus.BuildSet, vote.BuildSet)
	bus.SetChange(hdr, project, 5, 1)
	seq, _ := h.publish(subject.VotesPosted, build.Encode(vote), hdr, "vote.5-1-abc")

	var dry replaySummary
	h.runJSON(&dry, "replay", "ci.votes.>", "--all", "--dry-run", "--id", "v1")
	if len(dry.Messages) != 1 || dry.Messages[0].Target != subject.VotesReplay || dry.Stream != streams.CIVotes {
		t.Fatalf("replay ci.votes.> --dry-run = %+v; want the vote, to %s", dry, subject.VotesReplay)
	}
	var sum replaySummary
	h.runJSON(&sum, "replay", subject.VotesPosted, "--change", "5", "--id", "v1")
	if sum.Published != 1 {
		t.Fatalf("replay ci.votes.posted = %+v; want 1 published", sum)
	}
	got := h.messages(subject.VotesReplay)
	if len(got) != 1 || got[0].Header.Get(bus.MsgID) != "vote.5-1-abc.replay.v1" || got[0].Header.Get(bus.Replay) != "v1" ||
		got[0].Header.Get(bus.ReplayOf) != strconv.FormatUint(seq, 10) || string(got[0].Data) != string(build.Encode(vote)) {
		t.Errorf("ci.votes.replay = %v; want the vote with the replay headers", got)
	}
	if n := len(h.messages(subject.VotesPosted)); n != 1 {
		t.Errorf("ci.votes.posted holds %d messages; want only the original", n)
	}
}

func TestReplayRefusals(t *testing.T) {
	h := newHarness(t)
	seedCompletions(h)
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no selection", []string{subject.BuildsCompleted}, "no selection"},
		{"a DLQ", []string{"gerritflow.dlq.>", "--all"}, "dlq redrive"},
		{"two streams", []string{"ci.>", "--all"}, "CI_BUILDS, CI_VOTES"},
		{"no stream", []string{"nothing.here", "--all"}, "no stream holds"},
		{"until before since", []string{subject.BuildsCompleted, "--since", "1h ago", "--until", "2h ago"}, "is before"},
		{"bad time", []string{subject.BuildsCompleted, "--since", "yesterday"}, "want RFC 3339"},
		{"bad id", []string{subject.BuildsCompleted, "--all", "--id", "a b"}, "--id"},
		{"sequences reversed", []string{subject.BuildsCompleted, "--from-seq", "4", "--to-seq", "2"}, "below"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := h.run(append([]string{"replay"}, tt.args...)...)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("replay %v = %v; want an error with %q", tt.args, err, tt.want)
			}
		})
	}
}

func TestParseTime(t *testing.T) {
	now := time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		in   string
		want time.Time
	}{
		{"2026-03-01T10:00:00Z", time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)},
		{"2026-03-01T10:00:00.5+01:00", time.Date(2026, 3, 1, 9, 0, 0, 5e8, time.UTC)},
		{"2h ago", now.Add(-2 * time.Hour)},
		{"90m", now.Add(-90 * time.Minute)},
		{"3d", now.Add(-72 * time.Hour)},
		{"1d12h ago", now.Add(-36 * time.Hour)},
		{"now", now},
	}
	for _, tt := range tests {
		got, err := parseTime(tt.in, now)
		if err != nil || !got.Equal(tt.want) {
			t.Errorf("parseTime(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
		}
	}
	for _, bad := range []string{"yesterday", "-2h", "2h from now"} {
		if _, err := parseTime(bad, now); err == nil {
			t.Errorf("parseTime(%q) = nil error; want one", bad)
		}
	}
}
