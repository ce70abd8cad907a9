package chaos

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/gerritflow/gerritflow/cmd/gfdev/internal/stack"
	"github.com/gerritflow/gerritflow/pkg/build"
	"github.com/gerritflow/gerritflow/pkg/config"
	"github.com/gerritflow/gerritflow/pkg/event"
	"github.com/gerritflow/gerritflow/pkg/gerritsim"
	"github.com/gerritflow/gerritflow/pkg/jenkinssim"
	"github.com/gerritflow/gerritflow/pkg/subject"
)

// devJobs are the jobs of the dev stack, which the chaos run uses.
func devJobs(t *testing.T) []config.Job {
	t.Helper()
	cfg, err := config.Parse(strings.NewReader("gerrit: { url: http://127.0.0.1:1, user: ci }\n" + stack.DevJobs))
	if err != nil {
		t.Fatal(err)
	}
	return cfg.Jobs
}

func TestGarbageNeverParses(t *testing.T) {
	valid := []byte(`{"type":"patchset-created","eventCreatedOn":1,"change":{"number":1,"project":"p","branch":"main"},"patchSet":{"number":1,"revision":"abc"}}`)
	for k, name := range garbageKinds {
		data := Garbage(k, 7, valid)
		if _, err := event.Parse(data, 0); err == nil {
			t.Errorf("garbage %q (%q) parses; the parser would publish it instead of dead-lettering it", name, data)
		}
	}
}

// played drives a Gerrit simulator (no listener needed) and returns the events it emitted.
type played struct {
	g   *gerritsim.Server
	evs []Emitted
}

func newPlayed() *played {
	p := &played{g: gerritsim.New(gerritsim.Options{User: "ci"})}
	p.g.OnEvent(func(typ string, data []byte) { p.evs = append(p.evs, Emitted{typ, data}) })
	return p
}

// must returns v, or panics (failing the test) on err.
func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func TestOracle(t *testing.T) {
	p := newPlayed()
	upload := func(u gerritsim.Upload) (int, []byte) {
		u.Uploader = Developer
		n, _, ev, err := p.g.Upload(u)
		if err != nil {
			t.Fatal(err)
		}
		return n, ev
	}
	a, aPS1 := upload(gerritsim.Upload{Project: "platform/core", Branch: "main"})
	_, aPS2 := upload(gerritsim.Upload{Change: a})
	aRecheck := must(p.g.Comment(a, 0, Reviewer, "Flaky.\nrecheck", nil))
	aOldRecheck := must(p.g.Comment(a, 1, Reviewer, "recheck", nil))
	aChatter := must(p.g.Comment(a, 0, Reviewer, "please recheck later", map[string]int{"Code-Review": 1}))
	aCI := must(p.g.Comment(a, 0, p.g.CI(), "recheck", nil)) // the CI account's own review
	_, aTrivial := upload(gerritsim.Upload{Change: a, Kind: gerritsim.KindTrivialRebase})
	b, bPS1 := upload(gerritsim.Upload{Project: "platform/core", Branch: "dev"})
	c, cPS1 := upload(gerritsim.Upload{Project: "tools/ci/deploy", Branch: "release/2.0"})
	cAbandon := must(p.g.Abandon(c, Developer, "no"))
	_, dPS1 := upload(gerritsim.Upload{Project: "other/unconfigured", Branch: "main"})
	e, ePS1 := upload(gerritsim.Upload{Project: "platform/core", Branch: "main"})
	must(p.g.Merge(e, Reviewer))
	_ = b

	o := must(NewOracle(devJobs(t), "ci"))
	garbage := [][]byte{[]byte("x")}
	x := must(o.Expect(p.evs, 2, garbage))
	if want := len(p.evs) + 2 + 1; x.Records != want {
		t.Errorf("Records = %d; want %d", x.Records, want)
	}
	setOf := func(raw []byte) *ExpSet {
		ev := must(event.Parse(raw, 0))
		return x.Sets[build.SetID(ev.ChangeNumber(), ev.PatchSetNumber(), ev.ID(), "")]
	}
	both := map[string]bool{"unit": true, "lint": false}
	lint := map[string]bool{"lint": false}
	for _, tc := range []struct {
		name string
		raw  []byte
		jobs map[string]bool // nil: no build set at all
		must bool
	}{
		{"patch set 1, superseded", aPS1, both, false},
		{"patch set 2, superseded by a trivial rebase", aPS2, both, false},
		{"recheck of patch set 2, superseded", aRecheck, both, false},
		{"recheck of patch set 1", aOldRecheck, both, false},
		{"comment that matches nothing", aChatter, nil, false},
		{"the CI account's own comment", aCI, nil, false},
		{"trivial rebase: lint only, current", aTrivial, lint, true},
		{"branch dev: lint only", bPS1, lint, true},
		{"tools/** on release/*, abandoned", cPS1, both, false},
		{"abandon asks for nothing", cAbandon, nil, false},
		{"unconfigured project", dPS1, nil, false},
		{"merged change", ePS1, both, false},
	} {
		s := setOf(tc.raw)
		switch {
		case tc.jobs == nil && s != nil:
			t.Errorf("%s: build set %s expected; want none", tc.name, s.ID)
		case tc.jobs != nil && s == nil:
			t.Errorf("%s: no build set expected; want jobs %v", tc.name, tc.jobs)
		case s != nil && (!sameJobs(s.Jobs, tc.jobs) || s.Must != tc.must):
			t.Errorf("%s: jobs %v must %v (%s); want %v must %v", tc.name, s.Jobs, s.Must, s.Why, tc.jobs, tc.must)
		}
	}
	if got := x.Changes[c].Status; got != "ABANDONED" {
		t.Errorf("change %d status %s; want ABANDONED", c, got)
	}
	if got := x.Changes[a].Latest; got != 3 {
		t.Errorf("change %d latest %d; want 3", a, got)
	}
}

// perfect builds the observation of a flawless run of the expectation.
func perfect(t *testing.T, x *Expectation, jobs []config.Job) *Observed {
	t.Helper()
	jenkinsJob := map[string]string{}
	for _, j := range jobs {
		jenkinsJob[j.Name] = j.JenkinsJob
	}
	o := &Observed{RawMsgs: x.Records, RawDistinct: x.Records, EventIDs: map[string]int{},
		Sets: map[string]build.Set{}, Builds: map[string]build.Build{}, Votes: map[string]build.Vote{},
		Triggered: map[string]int{}, Completed: map[string]int{}}
	for id := range x.EventIDs {
		o.EventIDs[id] = 1
	}
	for id, s := range x.Sets {
		set := build.Set{ID: id, Change: s.Change, PatchSet: s.PatchSet, Revision: s.Revision, EventType: s.EventType, EventID: s.EventID, State: build.SetRunning}
		if !s.Must {
			set.State = build.SetSuperseded
		}
		results := map[string]string{}
		for _, name := range sortedKeys(s.Jobs) {
			set.Jobs = append(set.Jobs, build.Job{Name: name, JenkinsJob: jenkinsJob[name], Voting: s.Jobs[name]})
			key := subject.BuildKey(id, name)
			res := Outcome(jenkinsJob[name], key, s.Jobs[name]).Result
			results[name] = res
			o.Builds[key] = build.Build{BuildSet: id, Job: name, BuildID: key, State: build.StateCompleted, Result: res}
			o.Triggered[key], o.Completed[key] = 1, 1
			o.Jenkins = append(o.Jenkins, jenkinssim.BuildRecord{Job: jenkinsJob[name], Number: 1, Result: res,
				Params: map[string]string{"GERRITFLOW_BUILD_ID": key}})
		}
		o.Sets[id] = set
		if s.Must {
			in := gerritsim.ReviewInput{Message: "Build Successful\n\n" + markerPrefix + id}
			if v, ok := VoteValue(config.Vote{Label: "Verified", Success: 1, Failure: -1}, s.Jobs, results); ok {
				in.Labels = map[string]int{"Verified": v}
			}
			o.Reviews = append(o.Reviews, gerritsim.Review{Change: s.Change, PatchSet: s.PatchSet, Revision: s.Revision, Input: in})
			v := build.Vote{BuildSet: id, Change: s.Change, PatchSet: s.PatchSet, Revision: s.Revision, Labels: in.Labels, State: build.VotePosted}
			o.Votes[id] = v
			o.Announced = append(o.Announced, v)
		}
	}
	for _, g := range x.Garbage {
		o.DLQ = append(o.DLQ, DLQEntry{Subject: subject.DLQ("parser"), Error: "invalid", Data: g})
	}
	return o
}

func TestEvaluate(t *testing.T) {
	p := newPlayed()
	var changes []int
	for i := 0; i < 6; i++ {
		n, _, _, err := p.g.Upload(gerritsim.Upload{Project: "platform/core", Branch: "main", Uploader: Developer})
		if err != nil {
			t.Fatal(err)
		}
		changes = append(changes, n)
	}
	must(p.g.Comment(changes[0], 0, Reviewer, "recheck", nil))
	if _, _, _, err := p.g.Upload(gerritsim.Upload{Change: changes[1], Uploader: Developer}); err != nil {
		t.Fatal(err)
	}
	jobs := devJobs(t)
	x := must(must(NewOracle(jobs, "ci")).Expect(p.evs, 0, [][]byte{[]byte("junk 1"), []byte("junk 2")}))
	vote := config.Vote{Label: "Verified", Success: 1, Failure: -1}

	if v := Evaluate(x, perfect(t, x, jobs), jobs, vote); v.Breaches != 0 || v.DLQ != 2 {
		for _, c := range v.Checks {
			if !c.OK() {
				t.Errorf("%s: %v", c.Name, c.Examples)
			}
		}
		t.Fatalf("a flawless run: %d breaches, dlq %d; want 0 and 2", v.Breaches, v.DLQ)
	}
	anyMust := x.MustSets()[0]
	for _, tc := range []struct {
		name                 string
		spoil                func(o *Observed)
		lost, dupB, dupV, br int
	}{
		{"a record missing from gerrit.raw", func(o *Observed) { o.RawDistinct--; o.RawMsgs-- }, 1, 0, 0, 1},
		{"a build set missing", func(o *Observed) {
			delete(o.Sets, anyMust)
			var keep []gerritsim.Review
			for _, r := range o.Reviews {
				if setOfReview(r.Input.Message) != anyMust {
					keep = append(keep, r)
				}
			}
			o.Reviews = keep
			dropAnnounced(o, anyMust)
		}, 1, 0, 0, 1 + 2}, // + its two Jenkins builds now belong to no build set
		{"a second Jenkins build", func(o *Observed) { o.Jenkins = append(o.Jenkins, o.Jenkins[0]) }, 0, 1, 0, 1},
		{"a second review", func(o *Observed) { o.Reviews = append(o.Reviews, o.Reviews[0]) }, 0, 0, 1, 1},
		{"a review missing", func(o *Observed) {
			dropAnnounced(o, setOfReview(o.Reviews[0].Input.Message))
			o.Reviews = o.Reviews[1:]
		}, 1, 0, 0, 1},
		{"a review missing that ci.votes.posted claims", func(o *Observed) { o.Reviews = o.Reviews[1:] }, 2, 0, 0, 2},
		{"a review on the wrong revision", func(o *Observed) { o.Reviews[0].Revision = "feed" }, 0, 0, 0, 1},
		{"a review with the wrong value", func(o *Observed) {
			o.Reviews[0].Input.Labels = map[string]int{"Verified": -o.Reviews[0].Input.Labels["Verified"]}
		}, 0, 0, 0, 1},
		{"a garbage record not dead-lettered", func(o *Observed) { o.DLQ = o.DLQ[1:] }, 1, 0, 0, 1},
		{"an event dead-lettered by the voter", func(o *Observed) {
			o.DLQ = append(o.DLQ, DLQEntry{Subject: subject.DLQ("voter"), Error: "boom", Data: []byte("{}")})
		}, 1, 0, 0, 1},
		{"a build that never completed", func(o *Observed) {
			b := o.Builds[subject.BuildKey(anyMust, "unit")]
			b.State = build.StateRunning
			o.Builds[subject.BuildKey(anyMust, "unit")] = b
		}, 1, 0, 0, 1},
		{"a completed build never announced", func(o *Observed) { delete(o.Completed, subject.BuildKey(anyMust, "lint")) }, 1, 0, 0, 1},
		{"a build announced twice", func(o *Observed) { o.Triggered[subject.BuildKey(anyMust, "lint")]++ }, 0, 0, 0, 1},
		{"a vote claim left posting", func(o *Observed) {
			o.Votes["x"] = build.Vote{BuildSet: "x", State: build.VotePosting}
		}, 0, 0, 0, 1},
		{"a review not on ci.votes.posted", func(o *Observed) { o.Announced = o.Announced[1:] }, 1, 0, 0, 1},
		{"a consumer with unacked messages", func(o *Observed) {
			o.Consumers = []ConsumerState{{Stream: "CI_BUILDS", Name: "voter", AckPending: 2}}
		}, 0, 0, 0, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := perfect(t, x, jobs)
			tc.spoil(o)
			v := Evaluate(x, o, jobs, vote)
			if v.Lost != tc.lost || v.DupBuilds != tc.dupB || v.DupVotes != tc.dupV || v.Breaches != tc.br {
				var msgs []string
				for _, c := range v.Checks {
					if !c.OK() {
						msgs = append(msgs, fmt.Sprintf("%s: %v", c.Name, c.Examples))
					}
				}
				t.Errorf("lost=%d dup_builds=%d dup_votes=%d breaches=%d; want %d %d %d %d\n%s",
					v.Lost, v.DupBuilds, v.DupVotes, v.Breaches, tc.lost, tc.dupB, tc.dupV, tc.br, strings.Join(msgs, "\n"))
			}
		})
	}
}

// dropAnnounced forgets what the voter recorded for build set id.
func dropAnnounced(o *Observed, id string) {
	var keep []build.Vote
	for _, a := range o.Announced {
		if a.BuildSet != id {
			keep = append(keep, a)
		}
	}
	o.Announced = keep
	delete(o.Votes, id)
}

func TestVoteValue(t *testing.T) {
	one := 1
	v := config.Vote{Label: "Verified", Success: 1, Failure: -1}
	for _, tc := range []struct {
		voting  map[string]bool
		results map[string]string
		vote    config.Vote
		want    int
		counted bool
	}{
		{map[string]bool{"unit": true, "lint": false}, map[string]string{"unit": "SUCCESS", "lint": "FAILURE"}, v, 1, true},
		{map[string]bool{"unit": true, "lint": false}, map[string]string{"unit": "FAILURE", "lint": "SUCCESS"}, v, -1, true},
		{map[string]bool{"lint": false}, map[string]string{"lint": "SUCCESS"}, v, 0, false},
		{map[string]bool{"unit": true}, map[string]string{"unit": "CANCELED"}, v, 0, false},
		{map[string]bool{"unit": true}, map[string]string{"unit": "NOT_BUILT"}, config.Vote{Success: 1, Failure: -1, NotBuilt: &one}, 1, true},
		{map[string]bool{"unit": true}, map[string]string{"unit": "LOST"}, v, -1, true},
	} {
		got, counted := VoteValue(tc.vote, tc.voting, tc.results)
		if got != tc.want || counted != tc.counted {
			t.Errorf("VoteValue(%v) = %d, %v; want %d, %v", tc.results, got, counted, tc.want, tc.counted)
		}
	}
}

func TestOutcomeIsAFunctionOfTheBuild(t *testing.T) {
	fails := 0
	for i := 0; i < 400; i++ {
		id := fmt.Sprintf("%d-1-abc.unit", i)
		a, b := Outcome("folder/unit-tests", id, true), Outcome("folder/unit-tests", id, true)
		if a != b {
			t.Fatalf("Outcome(%s) differs between calls: %+v, %+v", id, a, b)
		}
		if a.Result == build.ResultFailure {
			fails++
		}
	}
	if fails < 60 || fails > 140 {
		t.Errorf("%d of 400 voting builds fail; want about 100", fails)
	}
}

func TestGrowths(t *testing.T) {
	smp := func(at time.Duration, label string, rss, gor float64) SoakRound {
		return SoakRound{At: at, Label: label, Samples: []stack.Sample{{Service: "voter", PID: 1, RSS: rss, Goroutines: gor}}}
	}
	rounds := []SoakRound{smp(0, "idle", 10, 20)}
	for i := 1; i <= 10; i++ {
		rounds = append(rounds, smp(time.Duration(i)*time.Minute, "load", float64(100+10*i), 50))
	}
	rounds = append(rounds, smp(11*time.Minute, "settled", 200, 21))
	g := Growths(rounds)
	if len(g) != 1 {
		t.Fatalf("%d growths; want 1", len(g))
	}
	if d := g[0].RSSSlope - 100; d > 0.001 || d < -0.001 {
		t.Errorf("RSS trend %.3f per 10 minutes; want 100", g[0].RSSSlope)
	}
	if g[0].GoIdle != 20 || g[0].GoEnd != 21 || g[0].RSSFirst != 110 || g[0].RSSLast != 200 {
		t.Errorf("growth = %+v", g[0])
	}
}

// TestPickNeedsNoOpenChangeWhenThereIsNone: with no change open, no roll of
// any seed may pick an action that needs one (an empty pick panicked).
func TestPickNeedsNoOpenChangeWhenThereIsNone(t *testing.T) {
	for seed := int64(0); seed < 200; seed++ {
		w := NewWorkload(nil, nil, "s", seed)
		for i := 0; i < 50; i++ {
			switch act := w.pick(); act {
			case ActNewChange, ActUnconfigured, ActGarbage:
			default:
				t.Fatalf("seed %d: pick() = %s with no open change and nothing emitted", seed, act)
			}
		}
	}
}
