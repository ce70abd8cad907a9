package status

import (
	"cmp"
	"fmt"
	"maps"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gerritflow/gerritflow/pkg/build"
	"github.com/gerritflow/gerritflow/pkg/subject"
)

// Links turns ids into URLs people can open.
type Links struct {
	GerritWeb string // base of the Gerrit web UI, for build sets without a change URL
	Jaeger    string // base of the Jaeger UI; "" = no trace links
}

// SetView is one build set as the page and the API show it.
type SetView struct {
	ID        string     `json:"id"`
	Group     string     `json:"group"` // project and change, as a key
	Project   string     `json:"project"`
	Branch    string     `json:"branch"`
	Change    int        `json:"change,omitzero"`
	PatchSet  int        `json:"patchset,omitzero"`
	Revision  string     `json:"revision,omitempty"`
	Ref       string     `json:"ref,omitempty"`
	Subject   string     `json:"subject,omitempty"`
	URL       string     `json:"url,omitempty"` // the change in Gerrit
	EventType string     `json:"event_type"`
	Replay    string     `json:"replay,omitempty"`
	State     string     `json:"state"` // running, voting, voted, skipped, superseded, abandoned
	Reason    string     `json:"reason,omitempty"`
	InFlight  bool       `json:"in_flight"`
	Created   time.Time  `json:"created"`
	Finished  time.Time  `json:"finished,omitzero"`
	TraceID   string     `json:"trace_id,omitempty"`
	TraceURL  string     `json:"trace_url,omitempty"`
	Jobs      []JobView  `json:"jobs"`
	Votes     []VoteView `json:"votes"`
	Hidden    bool       `json:"-"` // on the page: the filter does not match it
}

// JobView is one job of a build set.
type JobView struct {
	Name       string `json:"name"`
	JenkinsJob string `json:"jenkins_job"`
	Voting     bool   `json:"voting"`
	// State is waiting (no build record yet), triggering, queued, running or completed.
	State     string    `json:"state"`
	Result    string    `json:"result,omitempty"`
	Number    int64     `json:"number,omitzero"`
	URL       string    `json:"url,omitempty"`
	Since     time.Time `json:"since,omitzero"` // when the build entered its state
	Triggered time.Time `json:"triggered,omitzero"`
	Finished  time.Time `json:"finished,omitzero"`
	// Duration of a completed build; Estimate of a running one (the mean of
	// the job's last successful builds), in seconds.
	Duration float64 `json:"duration_seconds,omitzero"`
	Estimate float64 `json:"estimated_seconds,omitzero"`
	Cancel   string  `json:"cancel,omitempty"`
}

// VoteView is one vote of a build set (the first, then replays).
type VoteView struct {
	Key    string         `json:"key"`
	State  string         `json:"state"` // posting, posted, skipped
	Labels map[string]int `json:"labels,omitempty"`
	Reason string         `json:"reason,omitempty"`
	Replay string         `json:"replay,omitempty"`
	Posted time.Time      `json:"posted,omitzero"`
}

// Token is the job's state as a filter and CSS token: waiting, queued,
// running, or the result in lower case (success, failure, ...).
func (j JobView) Token() string {
	switch j.State {
	case "", "waiting":
		return "waiting"
	case string(build.StateTriggering), string(build.StateQueued):
		return "queued"
	case string(build.StateRunning):
		return "running"
	}
	if j.Result == "" {
		return "completed"
	}
	return strings.ToLower(j.Result)
}

// Text is the vote as a person reads it.
func (v VoteView) Text() string {
	return voteText(build.Vote{State: v.State, Labels: v.Labels, Reason: v.Reason})
}

func voteText(v build.Vote) string {
	switch v.State {
	case build.VotePosting:
		return "posting…"
	case build.VoteSkipped:
		if v.Reason != "" {
			return "skipped: " + v.Reason
		}
		return "skipped"
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(v.Labels)) {
		parts = append(parts, fmt.Sprintf("%s %+d", k, v.Labels[k]))
	}
	if len(parts) == 0 {
		return "message only"
	}
	return strings.Join(parts, ", ")
}

// Tone is the vote's colour class: good, bad, neutral.
func (v VoteView) Tone() string {
	if v.State != build.VotePosted {
		return "neutral"
	}
	low, high := 0, 0
	for _, n := range v.Labels {
		low, high = min(low, n), max(high, n)
	}
	switch {
	case low < 0:
		return "bad"
	case high > 0:
		return "good"
	}
	return "neutral"
}

func result(b build.Build) string {
	if b.Result == "" {
		return "completed"
	}
	return b.Result
}

// Tokens are the states a filter can match on this build set: its own
// state, in-flight or finished, and each job's token.
func (v SetView) Tokens() []string {
	t := []string{v.State}
	if v.InFlight {
		t = append(t, "in-flight")
	} else {
		t = append(t, "finished")
	}
	for _, j := range v.Jobs {
		if tok := j.Token(); !slices.Contains(t, tok) {
			t = append(t, tok)
		}
	}
	return t
}

// view builds the view of one build set (r.set is not nil).
func (m *Model) view(r *setRec, l Links) SetView {
	s := r.set
	v := SetView{
		ID: s.ID, Group: groupKey(s), Project: s.Project, Branch: s.Branch, Change: s.Change, PatchSet: s.PatchSet,
		Revision: s.Revision, Ref: s.Ref, Subject: s.Subject, URL: changeURL(s, l.GerritWeb), EventType: s.EventType,
		Replay: s.Replay, Reason: s.Reason, Created: s.Created, Jobs: []JobView{}, Votes: []VoteView{},
	}
	if id := traceID(s.Traceparent); id != "" {
		v.TraceID = id
		if l.Jaeger != "" {
			v.TraceURL = strings.TrimSuffix(l.Jaeger, "/") + "/trace/" + id
		}
	}
	allDone := true
	for _, j := range s.Jobs {
		jv := JobView{Name: j.Name, JenkinsJob: j.JenkinsJob, Voting: j.Voting, State: "waiting"}
		if br := r.jobs[j.Name]; br != nil {
			b := br.b
			jv.State, jv.Result, jv.Number, jv.URL = string(b.State), b.Result, b.Number, b.URL
			jv.Since, jv.Triggered, jv.Finished, jv.Cancel = br.since, b.Triggered, b.Finished, b.Cancel
			if b.State == build.StateCompleted {
				jv.Duration = b.Duration.Seconds()
			} else {
				jv.Estimate = m.Estimate(j.Name).Seconds()
			}
			if jv.State == "" {
				jv.State = string(build.StateTriggering)
			}
		}
		if jv.State != string(build.StateCompleted) {
			allDone = false
		}
		v.Jobs = append(v.Jobs, jv)
	}
	for _, k := range slices.Sorted(maps.Keys(r.votes)) {
		vr := r.votes[k]
		v.Votes = append(v.Votes, VoteView{Key: k, State: vr.v.State, Labels: vr.v.Labels, Reason: vr.v.Reason, Replay: vr.v.Replay, Posted: vr.v.Posted})
	}
	// The first vote first, replays in the order they were claimed.
	slices.SortStableFunc(v.Votes, func(a, b VoteView) int {
		if (a.Key == s.ID) != (b.Key == s.ID) {
			if a.Key == s.ID {
				return -1
			}
			return 1
		}
		return cmp.Compare(r.votes[a.Key].v.Claimed.UnixNano(), r.votes[b.Key].v.Claimed.UnixNano())
	})
	done, at := r.finished()
	v.InFlight, v.Finished = !done, at
	switch {
	case s.State != build.SetRunning:
		v.State = s.State
	case done:
		v.State = "voted"
		for _, vv := range v.Votes {
			if vv.Key == s.ID && vv.State == build.VoteSkipped {
				v.State = "skipped"
			}
		}
	case allDone:
		v.State = "voting"
	default:
		v.State = "running"
	}
	return v
}

// changeURL is the build set's change in Gerrit: the URL of its event, or
// one made from the Gerrit web base.
func changeURL(s *build.Set, gerritWeb string) string {
	if s.URL != "" {
		return s.URL
	}
	if gerritWeb == "" || s.Change <= 0 {
		return ""
	}
	return strings.TrimSuffix(gerritWeb, "/") + "/c/" + (&url.URL{Path: s.Project}).EscapedPath() + "/+/" + strconv.Itoa(s.Change)
}

// traceID returns the trace id of a W3C traceparent ("" if it is not one).
func traceID(tp string) string {
	parts := strings.Split(tp, "-")
	if len(parts) < 4 || len(parts[1]) != 32 || strings.Trim(parts[1], "0") == "" {
		return ""
	}
	for _, c := range parts[1] {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return ""
		}
	}
	return parts[1]
}

// Filter selects build sets. Zero fields match everything.
type Filter struct {
	Project string // case-insensitive substring of the project
	Change  int    // the change number
	Job     string // case-insensitive substring of a job name
	State   string // one of SetView.Tokens
}

// ParseFilter reads a filter from query parameters (project, change, job, state).
func ParseFilter(q url.Values) (Filter, error) {
	f := Filter{
		Project: strings.TrimSpace(q.Get("project")),
		Job:     strings.TrimSpace(q.Get("job")),
		State:   strings.ToLower(strings.TrimSpace(q.Get("state"))),
	}
	if c := strings.TrimSpace(q.Get("change")); c != "" {
		n, err := strconv.Atoi(c)
		if err != nil || n <= 0 {
			return f, fmt.Errorf("change %q: want a change number", c)
		}
		f.Change = n
	}
	return f, nil
}

// Match reports whether v passes the filter.
func (f Filter) Match(v SetView) bool {
	if f.Project != "" && !containsFold(v.Project, f.Project) {
		return false
	}
	if f.Change != 0 && v.Change != f.Change {
		return false
	}
	if f.Job != "" && !slices.ContainsFunc(v.Jobs, func(j JobView) bool { return containsFold(j.Name, f.Job) }) {
		return false
	}
	if f.State != "" && !slices.Contains(v.Tokens(), f.State) {
		return false
	}
	return true
}

// IsZero reports whether the filter matches everything.
func (f Filter) IsZero() bool { return f == Filter{} }

func containsFold(s, sub string) bool {
	return strings.Contains(strings.ToLower(s), strings.ToLower(sub))
}

// StateOptions are the states the page's filter offers.
var StateOptions = []string{"in-flight", "finished", "queued", "running", "voting", "voted", "success", "failure",
	"unstable", "aborted", "canceled", "timed_out", "lost", "skipped", "superseded", "abandoned"}

// Views returns the build sets that pass f, newest first.
func (m *Model) Views(f Filter, l Links) []SetView {
	out := []SetView{}
	for _, r := range m.sets {
		if r.set == nil {
			continue
		}
		if f.Change != 0 && r.set.Change != f.Change {
			continue
		}
		if v := m.view(r, l); f.Match(v) {
			out = append(out, v)
		}
	}
	sortSets(out)
	return out
}

// Group is one change (or ref) with its listed build sets, newest first.
type Group struct {
	Key     string
	Project string
	Change  int
	Ref     string
	Subject string
	URL     string
	Branch  string
	Order   int64 // the newest build set's creation, for ordering groups
	Sets    []SetView
	Hidden  bool // no build set passes the page's filter
}

// Title is the group's heading text after the change number.
func (g Group) Title() string {
	if g.Subject != "" {
		return g.Subject
	}
	return g.Ref
}

// Project is one project's groups, newest first.
type Project struct {
	Name   string
	Token  string
	Groups []Group
	Hidden bool
}

// groups builds every group, keyed by group key.
func (m *Model) groups(l Links, only map[string]bool) map[string]*Group {
	gs := map[string]*Group{}
	for _, r := range m.sets {
		if r.set == nil {
			continue
		}
		k := groupKey(r.set)
		if only != nil && !only[k] {
			continue
		}
		g := gs[k]
		if g == nil {
			g = &Group{Key: k, Project: r.set.Project, Change: r.set.Change, Ref: r.set.Ref}
			gs[k] = g
		}
		g.Sets = append(g.Sets, m.view(r, l))
	}
	for _, g := range gs {
		sortSets(g.Sets)
		newest := g.Sets[0]
		g.Subject, g.URL, g.Branch, g.Order = newest.Subject, newest.URL, newest.Branch, newest.Created.UnixMilli()
	}
	return gs
}

// Projects returns every group by project (projects by name, groups newest
// first), each marked hidden when f matches none of its build sets.
func (m *Model) Projects(f Filter, l Links) []Project {
	byProject := map[string]*Project{}
	for _, g := range m.groups(l, nil) {
		g.Hidden = true
		for i := range g.Sets {
			g.Sets[i].Hidden = !f.Match(g.Sets[i])
			g.Hidden = g.Hidden && g.Sets[i].Hidden
		}
		p := byProject[g.Project]
		if p == nil {
			p = &Project{Name: g.Project, Token: subject.Token(g.Project), Hidden: true}
			byProject[g.Project] = p
		}
		p.Hidden = p.Hidden && g.Hidden
		p.Groups = append(p.Groups, *g)
	}
	out := make([]Project, 0, len(byProject))
	for _, name := range slices.Sorted(maps.Keys(byProject)) {
		p := byProject[name]
		slices.SortFunc(p.Groups, func(a, b Group) int {
			if c := cmp.Compare(b.Order, a.Order); c != 0 {
				return c
			}
			return cmp.Compare(a.Key, b.Key)
		})
		out = append(out, *p)
	}
	return out
}
