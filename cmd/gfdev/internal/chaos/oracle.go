package chaos

import (
	"fmt"
	"regexp"
	"sort"
	"strings"

	"github.com/gerritflow/gerritflow/pkg/build"
	"github.com/gerritflow/gerritflow/pkg/config"
	"github.com/gerritflow/gerritflow/pkg/event"
)

// The oracle says what the pipeline owes for a sequence of Gerrit events,
// from the config's jobs and nothing else of gerritflow's code: it does not
// ask the trigger what it would do. Its only shared definitions are the
// event identity (event.ID: what the parser and trigger key on), the build
// set id derived from it (build.SetID) and the project/branch pattern syntax
// of the config (config.CompilePatterns).

// Emitted is one Gerrit stream event as the simulator emitted it, in order.
type Emitted struct {
	Type string
	Data []byte
}

// Expectation is what the pipeline owes for a run.
type Expectation struct {
	// Records is the number of Kinesis records written: every emitted event
	// (noise and the CI account's own reviews included), every duplicate and
	// every garbage record.
	Records int
	// EventIDs are the identities the parser must publish once each on
	// gerrit.events (every parsed event but the refs/changes/*/meta noise).
	EventIDs map[string]bool
	// Sets are the build sets eligible events may create, by id.
	Sets map[string]*ExpSet
	// Changes is the final state of every change, by number.
	Changes map[int]*ChangeState
	// Garbage are the records that must end in gerritflow.dlq.parser.
	Garbage [][]byte
}

// ChangeState is a change as Gerrit holds it at the end.
type ChangeState struct {
	Number          int
	Project, Branch string
	Status          string // NEW, MERGED, ABANDONED
	Latest          int
	Revisions       map[int]string // patch set -> sha
}

// Open reports whether the change is still open.
func (c *ChangeState) Open() bool { return c.Status == "NEW" }

// ExpSet is the build set an eligible event may (or must) create.
type ExpSet struct {
	ID        string
	EventID   string
	EventType string
	Change    int
	PatchSet  int
	Revision  string
	Jobs      map[string]bool // job name -> voting
	// Must is true when the build set has to exist: the event asks for a
	// check of a patch set that is the latest of a change still open at the
	// end (or asks for no check at all, e.g. a job on change-merged).
	Must bool
	// Why it is not a must, for the report.
	Why string
}

// Oracle compiles the jobs of a config.
type Oracle struct {
	jobs   []oracleJob
	ciUser string
}

type oracleJob struct {
	config.Job
	projects, branches, topics config.Patterns
	comments                   []*regexp.Regexp
}

// NewOracle compiles the jobs. ciUser is gerrit.user: its own events ask for nothing.
func NewOracle(jobs []config.Job, ciUser string) (*Oracle, error) {
	o := &Oracle{ciUser: ciUser}
	for _, j := range jobs {
		if len(j.Files) > 0 {
			return nil, fmt.Errorf("job %s: file patterns need Gerrit's file lists; the chaos oracle does not model them", j.Name)
		}
		oj := oracleJob{Job: j}
		var err error
		if oj.projects, err = config.CompilePatterns(j.Projects); err != nil {
			return nil, err
		}
		if oj.branches, err = config.CompilePatterns(j.Branches); err != nil {
			return nil, err
		}
		if oj.topics, err = config.CompilePatterns(j.Topics); err != nil {
			return nil, err
		}
		for _, r := range j.Events {
			var re *regexp.Regexp
			if r.Comment != "" {
				if re, err = regexp.Compile(r.Comment); err != nil {
					return nil, err
				}
			}
			oj.comments = append(oj.comments, re)
		}
		o.jobs = append(o.jobs, oj)
	}
	return o, nil
}

// Jobs returns the names of the jobs ev asks for, with whether each votes.
func (o *Oracle) Jobs(ev *event.Event) map[string]bool {
	if a := ev.Account(); a != nil && o.ciUser != "" && a.Username == o.ciUser {
		return nil // the CI account's own reviews come back as events
	}
	out := map[string]bool{}
	for _, j := range o.jobs {
		if !j.projects.Match(ev.ProjectName()) {
			continue
		}
		if len(j.branches) > 0 && !j.branches.Match(ev.Branch()) {
			continue
		}
		if len(j.topics) > 0 && (ev.Change == nil || !j.topics.Match(ev.Change.Topic)) {
			continue
		}
		for i, r := range j.Events {
			if r.Type == ev.Type && ruleHolds(r, j.comments[i], ev) {
				out[j.Name] = j.IsVoting()
				break
			}
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

func ruleHolds(r config.EventRule, comment *regexp.Regexp, ev *event.Event) bool {
	kind := ""
	if ev.PatchSet != nil {
		kind = ev.PatchSet.Kind
	}
	switch {
	case ev.Type == event.TypeRefUpdated && strings.HasPrefix(ev.RefName, "refs/changes/"):
		return false
	case r.ExcludeTrivialRebase && (kind == event.KindTrivialRebase || kind == event.KindTrivialRebaseWithMessageUpdate):
		return false
	case r.ExcludeNoCodeChange && (kind == event.KindNoCodeChange || kind == event.KindNoChange):
		return false
	case r.ExcludeWIP && ev.Change != nil && ev.Change.WIP:
		return false
	case r.ExcludePrivate && ev.Change != nil && ev.Change.Private:
		return false
	}
	if comment != nil {
		ok := comment.MatchString(ev.Comment)
		for _, line := range strings.Split(ev.Comment, "\n") {
			ok = ok || comment.MatchString(strings.TrimRight(line, "\r"))
		}
		if !ok {
			return false
		}
	}
	if len(r.Approvals) > 0 {
		changed := false
		for label, min := range r.Approvals {
			found := false
			for _, a := range ev.Approvals {
				if a.Type != label {
					continue
				}
				if int(a.Value) < min {
					return false
				}
				found = true
				changed = changed || a.OldValue != nil && *a.OldValue != a.Value
			}
			if !found {
				return false
			}
		}
		return changed
	}
	return true
}

// asksForCheck: events that check a patch set; the trigger skips them for a
// closed change or an outdated patch set, and a newer patch set supersedes
// their build sets.
func asksForCheck(typ string) bool {
	switch typ {
	case event.TypePatchsetCreated, event.TypeCommentAdded, event.TypeWIPStateChanged,
		event.TypePrivateStateChanged, event.TypeChangeRestored, event.TypeTopicChanged:
		return true
	}
	return false
}

// Expect computes what the pipeline owes for the events Gerrit emitted (in
// order), the duplicates put again and the garbage records.
func (o *Oracle) Expect(emitted []Emitted, duplicates int, garbage [][]byte) (*Expectation, error) {
	x := &Expectation{
		Records:  len(emitted) + duplicates + len(garbage),
		EventIDs: map[string]bool{},
		Sets:     map[string]*ExpSet{},
		Changes:  map[int]*ChangeState{},
		Garbage:  garbage,
	}
	type eligible struct {
		ev   *event.Event
		jobs map[string]bool
	}
	var elig []eligible
	for i, e := range emitted {
		ev, err := event.Parse(e.Data, 0)
		if err != nil {
			return nil, fmt.Errorf("emitted event %d (%s) does not parse: %w", i, e.Type, err)
		}
		if ev.IsMetaRef() {
			continue
		}
		x.EventIDs[ev.ID()] = true
		if n := ev.ChangeNumber(); n > 0 {
			c := x.Changes[n]
			if c == nil {
				c = &ChangeState{Number: n, Project: ev.ProjectName(), Branch: ev.Branch(), Status: "NEW", Revisions: map[int]string{}}
				x.Changes[n] = c
			}
			switch ev.Type {
			case event.TypePatchsetCreated:
				ps := ev.PatchSetNumber()
				c.Revisions[ps] = ev.Revision()
				c.Latest = max(c.Latest, ps)
			case event.TypeChangeAbandoned:
				c.Status = "ABANDONED"
			case event.TypeChangeMerged:
				c.Status = "MERGED"
			case event.TypeChangeRestored:
				c.Status = "NEW"
			}
		}
		if jobs := o.Jobs(ev); jobs != nil {
			elig = append(elig, eligible{ev, jobs})
		}
	}
	for _, e := range elig {
		ev := e.ev
		s := &ExpSet{
			ID:      build.SetID(ev.ChangeNumber(), ev.PatchSetNumber(), ev.ID(), ""),
			EventID: ev.ID(), EventType: ev.Type, Change: ev.ChangeNumber(), PatchSet: ev.PatchSetNumber(),
			Revision: ev.Revision(), Jobs: e.jobs, Must: true,
		}
		if c := x.Changes[s.Change]; c != nil && asksForCheck(ev.Type) {
			switch {
			case !c.Open():
				s.Must, s.Why = false, "change "+strings.ToLower(c.Status)
			case s.PatchSet < c.Latest:
				s.Must, s.Why = false, fmt.Sprintf("patch set %d superseded by %d", s.PatchSet, c.Latest)
			}
		}
		x.Sets[s.ID] = s
	}
	return x, nil
}

// MustSets returns the ids of the build sets that have to exist, sorted.
func (x *Expectation) MustSets() []string {
	var out []string
	for id, s := range x.Sets {
		if s.Must {
			out = append(out, id)
		}
	}
	sort.Strings(out)
	return out
}
