package status

import (
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gerritflow/gerritflow/pkg/build"
	"github.com/gerritflow/gerritflow/pkg/subject"
)

var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

func testSet(id, project string, change, ps int, jobs ...string) build.Set {
	s := build.Set{ID: id, Project: project, Branch: "main", Change: change, PatchSet: ps, Revision: "abc",
		Subject: "Add retries", URL: "https://review.example.com/c/" + project + "/+/" + strings.Split(id, "-")[0],
		EventType: "patchset-created", State: build.SetRunning, Created: t0,
		Traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}
	for _, j := range jobs {
		s.Jobs = append(s.Jobs, build.Job{Name: j, JenkinsJob: "folder/" + j, Voting: j != "lint"})
	}
	return s
}

func testBuild(set, job string, state build.State, result string) build.Build {
	b := build.Build{BuildSet: set, Job: job, JenkinsJob: "folder/" + job, BuildID: subject.BuildKey(set, job),
		State: state, Triggered: t0, Voting: job != "lint"}
	if state == build.StateRunning || state == build.StateCompleted {
		b.Number, b.URL = 7, "https://ci.example.com/job/folder/job/"+job+"/7/"
	}
	if state == build.StateCompleted {
		b.Result, b.Duration, b.Finished = result, 90*time.Second, t0.Add(2*time.Minute)
	}
	return b
}

func posted(set string, value int) build.Vote {
	return build.Vote{BuildSet: set, Labels: map[string]int{"Verified": value}, State: build.VotePosted,
		Claimed: t0.Add(3 * time.Minute), Posted: t0.Add(3 * time.Minute)}
}

// feed applies records to m at time at (the KV revision time) and now.
type feed struct {
	t   *testing.T
	m   *Model
	now time.Time
}

func (f feed) set(s build.Set, at time.Time) {
	f.t.Helper()
	if err := f.m.ApplySet(s.ID, build.Encode(s), OpPut, at, f.now); err != nil {
		f.t.Fatal(err)
	}
}

func (f feed) build(b build.Build, at time.Time) {
	f.t.Helper()
	if err := f.m.ApplyBuild(subject.BuildKey(b.BuildSet, b.Job), build.Encode(b), OpPut, at, f.now); err != nil {
		f.t.Fatal(err)
	}
}

func (f feed) vote(key string, v build.Vote, at time.Time) {
	f.t.Helper()
	if err := f.m.ApplyVote(key, build.Encode(v), OpPut, at, f.now); err != nil {
		f.t.Fatal(err)
	}
}

func oneView(t *testing.T, m *Model, id string) SetView {
	t.Helper()
	for _, v := range m.Views(Filter{}, Links{}) {
		if v.ID == id {
			return v
		}
	}
	t.Fatalf("build set %s not listed", id)
	return SetView{}
}

func TestSetStates(t *testing.T) {
	const id = "42-1-aaaa"
	tests := []struct {
		name       string
		builds     []build.Build
		vote       *build.Vote
		setState   string
		want       string
		wantFlight bool
		wantJobs   []string // job tokens
	}{
		{"no build records yet", nil, nil, "", "running", true, []string{"waiting", "waiting"}},
		{"queued and running", []build.Build{testBuild(id, "unit", build.StateQueued, ""), testBuild(id, "lint", build.StateRunning, "")}, nil, "", "running", true, []string{"queued", "running"}},
		{"triggering counts as queued", []build.Build{testBuild(id, "unit", build.StateTriggering, "")}, nil, "", "running", true, []string{"queued", "waiting"}},
		{"all done, vote pending", []build.Build{testBuild(id, "unit", build.StateCompleted, "SUCCESS"), testBuild(id, "lint", build.StateCompleted, "FAILURE")}, nil, "", "voting", true, []string{"success", "failure"}},
		{"claimed, not posted", []build.Build{testBuild(id, "unit", build.StateCompleted, "SUCCESS")}, &build.Vote{BuildSet: id, State: build.VotePosting}, "", "running", true, []string{"success", "waiting"}},
		{"voted", []build.Build{testBuild(id, "unit", build.StateCompleted, "SUCCESS"), testBuild(id, "lint", build.StateCompleted, "SUCCESS")}, ptr(posted(id, 1)), "", "voted", false, []string{"success", "success"}},
		{"vote skipped", []build.Build{testBuild(id, "unit", build.StateCompleted, "SUCCESS"), testBuild(id, "lint", build.StateCompleted, "SUCCESS")}, &build.Vote{BuildSet: id, State: build.VoteSkipped, Reason: "change merged"}, "", "skipped", false, nil},
		{"superseded", []build.Build{testBuild(id, "unit", build.StateCompleted, "CANCELED")}, nil, build.SetSuperseded, "superseded", false, []string{"canceled", "waiting"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := NewModel(time.Hour, 0, t0.Add(-time.Hour))
			f := feed{t, m, t0.Add(4 * time.Minute)}
			s := testSet(id, "platform/core", 42, 1, "unit", "lint")
			if tt.setState != "" {
				s.State, s.Reason = tt.setState, "superseded by patch set 2"
			}
			f.set(s, t0)
			for _, b := range tt.builds {
				f.build(b, t0.Add(time.Minute))
			}
			if tt.vote != nil {
				f.vote(id, *tt.vote, t0.Add(3*time.Minute))
			}
			v := oneView(t, m, id)
			if v.State != tt.want || v.InFlight != tt.wantFlight {
				t.Errorf("state = %s, in flight %v; want %s, %v", v.State, v.InFlight, tt.want, tt.wantFlight)
			}
			if tt.wantJobs != nil {
				var got []string
				for _, j := range v.Jobs {
					got = append(got, j.Token())
				}
				if !slices.Equal(got, tt.wantJobs) {
					t.Errorf("job tokens = %v; want %v", got, tt.wantJobs)
				}
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

func TestViewLinksAndVotes(t *testing.T) {
	const id = "42-1-aaaa"
	m := NewModel(time.Hour, 0, t0.Add(-time.Hour))
	f := feed{t, m, t0.Add(4 * time.Minute)}
	s := testSet(id, "platform/core", 42, 1, "unit")
	s.URL = "" // old events carry no URL: the Gerrit web base makes one
	f.set(s, t0)
	f.vote(id+".r_2D1", build.Vote{BuildSet: id, Replay: "r-1", Labels: map[string]int{"Verified": -1}, State: build.VotePosted, Claimed: t0.Add(9 * time.Minute)}, t0)
	f.vote(id, posted(id, 1), t0)
	v := m.Views(Filter{}, Links{GerritWeb: "https://review.example.com/", Jaeger: "http://jaeger:16686/"})[0]
	if want := "https://review.example.com/c/platform/core/+/42"; v.URL != want {
		t.Errorf("URL = %q; want %q", v.URL, want)
	}
	if want := "http://jaeger:16686/trace/4bf92f3577b34da6a3ce929d0e0e4736"; v.TraceURL != want || v.TraceID != "4bf92f3577b34da6a3ce929d0e0e4736" {
		t.Errorf("trace = %q %q; want %q", v.TraceID, v.TraceURL, want)
	}
	if len(v.Votes) != 2 || v.Votes[0].Key != id || v.Votes[0].Text() != "Verified +1" || v.Votes[1].Text() != "Verified -1" || v.Votes[1].Tone() != "bad" {
		t.Errorf("votes = %+v; want the first vote (Verified +1) then the replay (Verified -1)", v.Votes)
	}
	if v := m.Views(Filter{}, Links{})[0]; v.TraceURL != "" || v.URL != "" {
		t.Errorf("without links: trace url %q, url %q; want none", v.TraceURL, v.URL)
	}
}

func TestTraceID(t *testing.T) {
	for tp, want := range map[string]string{
		"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01": "4bf92f3577b34da6a3ce929d0e0e4736",
		"00-00000000000000000000000000000000-00f067aa0ba902b7-01": "",
		"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01": "",
		"garbage": "",
		"":        "",
	} {
		if got := traceID(tp); got != want {
			t.Errorf("traceID(%q) = %q; want %q", tp, got, want)
		}
	}
}

func TestRunningBuildHasElapsedAndEstimate(t *testing.T) {
	m := NewModel(time.Hour, 0, t0.Add(-time.Hour))
	f := feed{t, m, t0.Add(10 * time.Minute)}
	// Two earlier successful builds of unit (60s, 120s) and a failed one (not counted).
	for i, d := range []time.Duration{60 * time.Second, 120 * time.Second, time.Hour} {
		old := testSet("7-1-old"+string(rune('a'+i)), "p", 7, 1, "unit")
		f.set(old, t0)
		b := testBuild(old.ID, "unit", build.StateCompleted, "SUCCESS")
		b.Duration = d
		if d == time.Hour {
			b.Result = "FAILURE"
		}
		f.build(b, t0)
		f.build(b, t0) // a second delivery of the same record counts once
	}
	if got := m.Estimate("unit"); got != 90*time.Second {
		t.Errorf("Estimate(unit) = %v; want 1m30s (mean of the successful builds)", got)
	}
	s := testSet("8-1-new", "p", 8, 1, "unit")
	f.set(s, t0)
	f.build(testBuild(s.ID, "unit", build.StateQueued, ""), t0.Add(time.Minute))
	f.build(testBuild(s.ID, "unit", build.StateRunning, ""), t0.Add(2*time.Minute))
	run := testBuild(s.ID, "unit", build.StateRunning, "")
	run.Cancel = "superseded"
	f.build(run, t0.Add(3*time.Minute)) // same state: the start time stays
	j := oneView(t, m, s.ID).Jobs[0]
	if !j.Since.Equal(t0.Add(2*time.Minute)) || j.Estimate != 90 || j.Cancel != "superseded" {
		t.Errorf("running job = since %v estimate %v cancel %q; want since %v, estimate 90s, cancel superseded", j.Since, j.Estimate, j.Cancel, t0.Add(2*time.Minute))
	}
}

func TestPrune(t *testing.T) {
	now := t0.Add(2 * time.Hour)
	m := NewModel(time.Hour, 3, t0.Add(-time.Hour))
	f := feed{t, m, now}
	add := func(id string, created time.Time, votedAt time.Time) {
		s := testSet(id, "p", 1, 1, "unit")
		s.Created = created
		f.set(s, created)
		if !votedAt.IsZero() {
			v := posted(id, 1)
			v.Posted = votedAt
			f.vote(id, v, votedAt)
		}
	}
	add("1-1-old-voted", t0, t0.Add(time.Minute))                          // finished 2h ago: dropped
	add("2-1-recent-voted", t0.Add(90*time.Minute), now.Add(-time.Minute)) // finished a minute ago: kept
	add("3-1-in-flight-a", t0, time.Time{})                                // in flight: kept
	add("4-1-in-flight-b", t0.Add(time.Minute), time.Time{})
	add("5-1-in-flight-c", t0.Add(2*time.Minute), time.Time{})
	// An orphan build whose set never comes, and one that is young.
	if err := m.ApplyBuild("9-9-gone.unit", build.Encode(testBuild("9-9-gone", "unit", build.StateRunning, "")), OpPut, now, now.Add(-3*time.Minute)); err != nil {
		t.Fatal(err)
	}
	if err := m.ApplyBuild("9-9-young.unit", build.Encode(testBuild("9-9-young", "unit", build.StateRunning, "")), OpPut, now, now); err != nil {
		t.Fatal(err)
	}
	if n := m.Prune(now); n != 2 {
		t.Errorf("Prune dropped %d build sets; want 2 (one finished long ago, one over the bound of 3)", n)
	}
	var ids []string
	for _, v := range m.Views(Filter{}, Links{}) {
		ids = append(ids, v.ID)
	}
	slices.Sort(ids)
	// Above the bound the finished set goes first (4 left: 1 finished + 3 in flight).
	if want := []string{"3-1-in-flight-a", "4-1-in-flight-b", "5-1-in-flight-c"}; !slices.Equal(ids, want) {
		t.Errorf("listed after Prune = %v; want %v", ids, want)
	}
	if _, ok := m.sets["9-9-gone"]; ok {
		t.Error("orphan build older than the grace is still held")
	}
	if _, ok := m.sets["9-9-young"]; !ok {
		t.Error("young orphan build dropped; want it held until its build set arrives")
	}
	if in, fin := m.Counts(); in != 3 || fin != 0 {
		t.Errorf("Counts = %d, %d; want 3, 0", in, fin)
	}
}

func TestLoadDropsWhatIsNotListed(t *testing.T) {
	now := t0.Add(48 * time.Hour)
	cutoff := now.Add(-time.Minute)
	m := NewModel(time.Hour, 0, cutoff)
	f := feed{t, m, now}
	old := testSet("1-1-old", "p", 1, 1, "unit")
	old.State = build.SetSuperseded
	f.set(old, t0) // finished and old: never held
	f.build(testBuild(old.ID, "unit", build.StateCompleted, "SUCCESS"), t0)
	f.vote("1-1-old", posted("1-1-old", 1), t0)
	if len(m.sets) != 0 {
		t.Errorf("model holds %d records of a build set finished two days ago; want none", len(m.sets))
	}
	if m.Estimate("unit") != 90*time.Second {
		t.Errorf("Estimate(unit) = %v; want 1m30s learnt from the dropped build", m.Estimate("unit"))
	}
	// A build of a build set created after the load started is held until the set arrives.
	b := testBuild("2-1-new", "unit", build.StateRunning, "")
	f.build(b, now)
	f.set(testSet("2-1-new", "p", 2, 1, "unit"), now)
	if j := oneView(t, m, "2-1-new").Jobs[0]; j.State != "running" {
		t.Errorf("job of a build set that arrived after its build = %s; want running", j.State)
	}
}

func TestDirtyGroupsAndNotes(t *testing.T) {
	now := t0.Add(time.Minute)
	m := NewModel(time.Hour, 0, t0.Add(-time.Hour))
	f := feed{t, m, now}
	f.set(testSet("42-1-a", "platform/core", 42, 1, "unit"), now)
	f.set(testSet("43-1-a", "tools/x", 43, 1, "unit"), now)
	keys, notes := m.TakeDirty()
	if want := []string{"platform_2Fcore.42", "tools_2Fx.43"}; !slices.Equal(keys, want) {
		t.Errorf("dirty = %v; want %v", keys, want)
	}
	if len(notes) != 2 || notes[0].Text != "change 42: build set started for patch set 1" {
		t.Errorf("notes = %+v", notes)
	}
	f.build(testBuild("42-1-a", "unit", build.StateCompleted, "FAILURE"), now)
	keys, notes = m.TakeDirty()
	if !slices.Equal(keys, []string{"platform_2Fcore.42"}) || len(notes) != 1 || notes[0].Text != "change 42: unit FAILURE" {
		t.Errorf("after a build completes: dirty %v, notes %+v", keys, notes)
	}
	if err := m.ApplySet("42-1-a", nil, OpDelete, now, now); err != nil {
		t.Fatal(err)
	}
	if keys, _ := m.TakeDirty(); !slices.Equal(keys, []string{"platform_2Fcore.42"}) || len(m.Views(Filter{Change: 42}, Links{})) != 0 {
		t.Errorf("after delete: dirty %v; want the group, and no build set of change 42", keys)
	}
}

func TestFilter(t *testing.T) {
	v := SetView{Project: "platform/core", Change: 42, State: "running", InFlight: true,
		Jobs: []JobView{{Name: "unit-tests", State: "running"}, {Name: "lint", State: "completed", Result: "FAILURE"}}}
	tests := []struct {
		query string
		want  bool
	}{
		{"", true},
		{"project=platform", true},
		{"project=CORE", true},
		{"project=tools", false},
		{"change=42", true},
		{"change=43", false},
		{"job=unit", true},
		{"job=deploy", false},
		{"state=running", true},
		{"state=in-flight", true},
		{"state=finished", false},
		{"state=failure", true},
		{"state=success", false},
		{"project=platform&job=lint&state=failure&change=42", true},
	}
	for _, tt := range tests {
		q, _ := url.ParseQuery(tt.query)
		f, err := ParseFilter(q)
		if err != nil {
			t.Fatalf("ParseFilter(%q) = %v", tt.query, err)
		}
		if got := f.Match(v); got != tt.want {
			t.Errorf("Filter(%q).Match = %v; want %v", tt.query, got, tt.want)
		}
	}
	for _, bad := range []string{"change=abc", "change=-1", "change=0"} {
		q, _ := url.ParseQuery(bad)
		if _, err := ParseFilter(q); err == nil {
			t.Errorf("ParseFilter(%q) = nil error; want one", bad)
		}
	}
}

func TestFormatSeconds(t *testing.T) {
	for sec, want := range map[float64]string{-3: "0s", 0: "0s", 59.9: "59s", 60: "1m 0s", 3599: "59m 59s", 3600: "1h", 7384: "2h 3m"} {
		if got := formatSeconds(sec); got != want {
			t.Errorf("formatSeconds(%v) = %q; want %q", sec, got, want)
		}
	}
}

func TestProjectsGroupAndHide(t *testing.T) {
	now := t0.Add(time.Hour)
	m := NewModel(time.Hour, 0, t0.Add(-time.Hour))
	f := feed{t, m, now}
	ps1 := testSet("42-1-a", "platform/core", 42, 1, "unit")
	ps1.State = build.SetSuperseded
	f.set(ps1, now)
	ps2 := testSet("42-2-a", "platform/core", 42, 2, "unit")
	ps2.Created = t0.Add(time.Minute)
	f.set(ps2, now)
	f.set(testSet("7-1-a", "a/first", 7, 1, "unit"), now)
	ref := testSet("ref-1", "platform/core", 0, 0, "unit")
	ref.Ref = "refs/heads/main"
	f.set(ref, now)

	ps := m.Projects(Filter{State: "superseded"}, Links{})
	if len(ps) != 2 || ps[0].Name != "a/first" || ps[1].Name != "platform/core" {
		t.Fatalf("projects = %+v; want a/first then platform/core", ps)
	}
	if !ps[0].Hidden || ps[1].Hidden {
		t.Errorf("hidden = %v, %v; want a/first hidden (nothing superseded), platform/core shown", ps[0].Hidden, ps[1].Hidden)
	}
	var chg *Group
	for i, g := range ps[1].Groups {
		if g.Change == 42 {
			chg = &ps[1].Groups[i]
		}
	}
	if chg == nil || len(chg.Sets) != 2 || chg.Sets[0].PatchSet != 2 || !chg.Sets[0].Hidden || chg.Sets[1].Hidden {
		t.Fatalf("change 42 = %+v; want patch set 2 (hidden) then patch set 1 (shown)", chg)
	}
	if groupKey(&ref) != "platform_2Fcore.0.refs_2Fheads_2Fmain" {
		t.Errorf("groupKey(ref) = %q", groupKey(&ref))
	}
}
