package voter

import (
	"strings"
	"testing"
	"time"

	"github.com/gerritflow/gerritflow/pkg/build"
	"github.com/gerritflow/gerritflow/pkg/config"
)

func intp(v int) *int { return &v }

var defaultVote = config.Vote{Label: "Verified", Success: 1, Failure: -1}

// results builds a set whose jobs are named after their results' order
// (j0, j1, ...) and their builds; a "~" prefix makes a job non-voting.
func results(rs ...string) (build.Set, []build.Build) {
	set := build.Set{ID: "7-1-abc", Change: 7, PatchSet: 1, Revision: "0123456789abcdef0123456789abcdef01234567"}
	var builds []build.Build
	for i, r := range rs {
		voting := !strings.HasPrefix(r, "~")
		name := "j" + string(rune('0'+i))
		set.Jobs = append(set.Jobs, build.Job{Name: name, Voting: voting})
		builds = append(builds, build.Build{Job: name, Voting: voting, State: build.StateCompleted, Result: strings.TrimPrefix(r, "~")})
	}
	return set, builds
}

func TestDecide(t *testing.T) {
	unstableZero := defaultVote
	unstableZero.Unstable = intp(0)
	notBuiltCounts := defaultVote
	notBuiltCounts.NotBuilt = intp(0)
	abortedZero := defaultVote
	abortedZero.Aborted, abortedZero.TimedOut = intp(0), intp(0)
	twoPoints := config.Vote{Label: "Verified", Success: 2, Failure: -2}

	tests := []struct {
		name        string
		cfg         config.Vote
		results     []string
		wantValue   int
		wantCounted bool
	}{
		{"all success", defaultVote, []string{"SUCCESS", "SUCCESS"}, 1, true},
		{"one failure", defaultVote, []string{"SUCCESS", "FAILURE"}, -1, true},
		{"non-voting failure ignored", defaultVote, []string{"SUCCESS", "~FAILURE"}, 1, true},
		{"unstable defaults to failure", defaultVote, []string{"SUCCESS", "UNSTABLE"}, -1, true},
		{"unstable configured", unstableZero, []string{"SUCCESS", "UNSTABLE"}, 0, true},
		{"aborted defaults to failure", defaultVote, []string{"ABORTED", "SUCCESS"}, -1, true},
		{"aborted and timed out configured", abortedZero, []string{"ABORTED", "TIMED_OUT", "SUCCESS"}, 0, true},
		{"timed out defaults to failure", defaultVote, []string{"TIMED_OUT"}, -1, true},
		{"lost is a failure", defaultVote, []string{"SUCCESS", "LOST"}, -1, true},
		{"unknown result is a failure", defaultVote, []string{"SUCCESS", "WEIRD"}, -1, true},
		{"not built ignored", defaultVote, []string{"SUCCESS", "NOT_BUILT"}, 1, true},
		{"canceled ignored", defaultVote, []string{"CANCELED", "SUCCESS"}, 1, true},
		{"only not built: no label", defaultVote, []string{"NOT_BUILT", "CANCELED"}, 0, false},
		{"not built configured", notBuiltCounts, []string{"SUCCESS", "NOT_BUILT"}, 0, true},
		{"only non-voting: no label", defaultVote, []string{"~SUCCESS", "~FAILURE"}, 0, false},
		{"no builds: no label", defaultVote, nil, 0, false},
		{"minimum, not last", twoPoints, []string{"FAILURE", "SUCCESS"}, -2, true},
		{"minimum of configured values", unstableZero, []string{"UNSTABLE", "FAILURE", "SUCCESS"}, -1, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			set, builds := results(tt.results...)
			value, counted := Decide(tt.cfg, set, builds)
			if value != tt.wantValue || counted != tt.wantCounted {
				t.Errorf("Decide(%v) = %d, %v; want %d, %v", tt.results, value, counted, tt.wantValue, tt.wantCounted)
			}
		})
	}
}

func TestDecideTrustsTheSetOverTheBuildRecord(t *testing.T) {
	set, builds := results("SUCCESS", "FAILURE")
	builds[1].Voting = true
	set.Jobs[1].Voting = false // the trigger's decision
	if value, counted := Decide(defaultVote, set, builds); value != 1 || !counted {
		t.Errorf("Decide = %d, %v; want 1, true (job j1 is non-voting in the build set)", value, counted)
	}
}

func TestMessage(t *testing.T) {
	tests := []struct {
		name     string
		results  []string
		replay   string
		outdated bool
		want     []string // substrings, in order
		wantNot  []string
	}{
		{"success", []string{"SUCCESS", "SUCCESS"}, "", false,
			[]string{"Build Successful\n\n", "- j0 https://ci/job/j0/1/ : SUCCESS in 1m30s\n", "- j1 https://ci/job/j1/1/ : SUCCESS in 1m30s\n", "\ngerritflow build set 7-1-abc"},
			[]string{"non-voting", "no longer", "replay"}},
		{"failure", []string{"SUCCESS", "FAILURE"}, "", false, []string{"Build Failed\n", "j1 https://ci/job/j1/1/ : FAILURE"}, nil},
		{"unstable", []string{"UNSTABLE", "SUCCESS"}, "", false, []string{"Build Unstable\n"}, nil},
		{"aborted", []string{"ABORTED", "UNSTABLE"}, "", false, []string{"Build Aborted\n"}, nil},
		{"timed out", []string{"TIMED_OUT"}, "", false, []string{"Build Timed Out\n"}, nil},
		{"non-voting failure", []string{"SUCCESS", "~FAILURE"}, "", false,
			[]string{"Build Successful\n", "- j1 https://ci/job/j1/1/ : FAILURE in 1m30s (non-voting)\n"}, nil},
		{"nothing built", []string{"NOT_BUILT"}, "", false, []string{"No Builds Executed\n"}, nil},
		{"only non-voting", []string{"~SUCCESS"}, "", false, []string{"Build Finished (no voting jobs)\n", "(non-voting)"}, nil},
		{"outdated", []string{"SUCCESS"}, "", true,
			[]string{"Build Successful\n\n", "Patch Set 1 is no longer the current patch set: these results are for Patch Set 1 (0123456789ab) only.", "- j0"}, nil},
		{"replay", []string{"SUCCESS"}, "r-42", false, []string{"\n\ngerritflow build set 7-1-abc replay r-42"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			set, builds := results(tt.results...)
			for i := range builds {
				builds[i].URL = "https://ci/job/" + builds[i].Job + "/1/"
				builds[i].Duration = 90*time.Second + 300*time.Millisecond
			}
			got := Message(set, builds, tt.replay, tt.outdated)
			rest := got
			for _, w := range tt.want {
				i := strings.Index(rest, w)
				if i < 0 {
					t.Fatalf("Message() = %q; want %q (in this order)", got, w)
				}
				rest = rest[i+len(w):]
			}
			for _, w := range tt.wantNot {
				if strings.Contains(got, w) {
					t.Errorf("Message() = %q; want no %q", got, w)
				}
			}
			if last := got[strings.LastIndex(got, "\n")+1:]; last != Marker(set.ID, tt.replay) {
				t.Errorf("Message() ends with %q; want the marker %q", last, Marker(set.ID, tt.replay))
			}
		})
	}
}

func TestMessageWithoutURLOrDuration(t *testing.T) {
	set, builds := results("LOST")
	got := Message(set, builds, "", false)
	if want := "- j0 (no build URL) : LOST\n"; !strings.Contains(got, want) {
		t.Errorf("Message() = %q; want %q", got, want)
	}
}
