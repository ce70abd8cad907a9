package status

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gerritflow/gerritflow/pkg/build"
	"github.com/gerritflow/gerritflow/pkg/subject"
)

// orphanGrace is how long a build or vote record waits for its build set's
// record (the three buckets are watched separately, so a build may arrive
// before the set that names it).
const orphanGrace = 2 * time.Minute

// estimateSamples is how many successful builds of a job the estimate averages.
const estimateSamples = 10

// Model is what the status page shows: the records of the buildsets, builds
// and votes buckets, joined by build set, bounded by age and count. It is
// fed by KV watches (Apply*), pruned with Prune, and read through Views. It
// is not safe for concurrent use: the Server guards it.
type Model struct {
	recent time.Duration
	max    int
	// cutoff: an orphan record older than this belongs to a build set that
	// was dropped (or expired) before the watch started, and is dropped.
	cutoff time.Time

	sets     map[string]*setRec
	estimate map[string][]time.Duration // job name -> durations of recent successful builds
	dirty    map[string]bool            // group keys whose rendering changed
	notes    []Note
}

// Note is a change worth announcing to screen-reader users (aria-live).
type Note struct {
	Group string `json:"key"`
	Text  string `json:"text"`
}

type setRec struct {
	id    string
	set   *build.Set // nil until the set's record arrives
	setAt time.Time  // time of the set record's revision
	seen  time.Time  // when the first record of this build set arrived
	jobs  map[string]*buildRec
	votes map[string]*voteRec
}

type buildRec struct {
	b     build.Build
	at    time.Time // revision time
	since time.Time // when the build entered its current state
	// counted: its duration went into the job's estimate.
	counted bool
}

type voteRec struct {
	v  build.Vote
	at time.Time
}

// NewModel returns an empty model that lists finished build sets for recent
// and holds at most max build sets. Orphan records written before cutoff are
// dropped on arrival.
func NewModel(recent time.Duration, max int, cutoff time.Time) *Model {
	return &Model{
		recent: recent, max: max, cutoff: cutoff,
		sets:     map[string]*setRec{},
		estimate: map[string][]time.Duration{},
		dirty:    map[string]bool{},
	}
}

// Op is what a KV entry does to its key.
type Op int

// KV operations.
const (
	OpPut Op = iota
	OpDelete
)

// ApplySet folds one revision of buildsets/<key> into the model.
func (m *Model) ApplySet(key string, value []byte, op Op, at, now time.Time) error {
	if op == OpDelete {
		if r := m.sets[key]; r != nil && r.set != nil {
			m.dirty[groupKey(r.set)] = true
		}
		delete(m.sets, key)
		return nil
	}
	var s build.Set
	if err := build.Decode(value, &s); err != nil {
		return fmt.Errorf("buildsets/%s: %w", key, err)
	}
	if s.ID == "" {
		s.ID = key
	}
	r := m.sets[s.ID]
	if r == nil {
		if s.State != build.SetRunning && now.Sub(at) > m.recent {
			return nil // finished long ago: nothing to show
		}
		r = m.rec(s.ID, now)
	} else if r.set != nil && groupKey(r.set) != groupKey(&s) {
		m.dirty[groupKey(r.set)] = true
	}
	if r.set == nil {
		m.note(&s, "build set started for patch set "+strconv.Itoa(s.PatchSet))
	} else if r.set.State != s.State && s.State != build.SetRunning {
		m.note(&s, "patch set "+strconv.Itoa(s.PatchSet)+" "+s.State)
	}
	r.set, r.setAt = &s, at
	m.dirty[groupKey(&s)] = true
	return nil
}

// ApplyBuild folds one revision of builds/<key> into the model.
func (m *Model) ApplyBuild(key string, value []byte, op Op, at, now time.Time) error {
	if op == OpDelete {
		setID, _, _ := strings.Cut(key, ".")
		if r := m.sets[setID]; r != nil {
			for job, br := range r.jobs {
				if subject.BuildKey(setID, job) == key || br.b.BuildID == key {
					delete(r.jobs, job)
				}
			}
			m.touch(r)
		}
		return nil
	}
	var b build.Build
	if err := build.Decode(value, &b); err != nil {
		return fmt.Errorf("builds/%s: %w", key, err)
	}
	if b.BuildSet == "" {
		b.BuildSet, _, _ = strings.Cut(key, ".")
	}
	r := m.sets[b.BuildSet]
	if r == nil {
		if at.Before(m.cutoff) {
			m.learn(nil, &b)
			return nil
		}
		r = m.rec(b.BuildSet, now)
	}
	prev := r.jobs[b.Job]
	br := &buildRec{b: b, at: at, since: at}
	if prev != nil {
		br.counted = prev.counted
		if prev.b.State == b.State {
			br.since = prev.since
		}
	}
	if b.State == build.StateCompleted && !b.Finished.IsZero() {
		br.since = b.Finished
	}
	m.learn(br, &b)
	r.jobs[b.Job] = br
	if r.set != nil && b.State == build.StateCompleted && (prev == nil || prev.b.State != build.StateCompleted) && now.Sub(at) < time.Minute {
		m.note(r.set, b.Job+" "+result(b))
	}
	m.touch(r)
	return nil
}

// ApplyVote folds one revision of votes/<key> into the model.
func (m *Model) ApplyVote(key string, value []byte, op Op, at, now time.Time) error {
	if op == OpDelete {
		setID, _, _ := strings.Cut(key, ".")
		if r := m.sets[setID]; r != nil {
			delete(r.votes, key)
			m.touch(r)
		}
		return nil
	}
	var v build.Vote
	if err := build.Decode(value, &v); err != nil {
		return fmt.Errorf("votes/%s: %w", key, err)
	}
	if v.BuildSet == "" {
		v.BuildSet, _, _ = strings.Cut(key, ".")
	}
	r := m.sets[v.BuildSet]
	if r == nil {
		if at.Before(m.cutoff) {
			return nil
		}
		r = m.rec(v.BuildSet, now)
	}
	prev := r.votes[key]
	r.votes[key] = &voteRec{v: v, at: at}
	if r.set != nil && v.State != build.VotePosting && (prev == nil || prev.v.State != v.State) && now.Sub(at) < time.Minute {
		m.note(r.set, "vote "+voteText(v))
	}
	m.touch(r)
	return nil
}

func (m *Model) rec(id string, now time.Time) *setRec {
	r := &setRec{id: id, seen: now, jobs: map[string]*buildRec{}, votes: map[string]*voteRec{}}
	m.sets[id] = r
	return r
}

func (m *Model) touch(r *setRec) {
	if r.set != nil {
		m.dirty[groupKey(r.set)] = true
	}
}

func (m *Model) note(s *build.Set, text string) {
	if len(m.notes) >= 50 { // a burst: the page shows it; the screen reader need not read it all
		return
	}
	m.notes = append(m.notes, Note{Group: groupKey(s), Text: changeLabel(s) + ": " + text})
}

// learn adds a successful build's duration to its job's estimate, once.
func (m *Model) learn(br *buildRec, b *build.Build) {
	if b.State != build.StateCompleted || b.Result != build.ResultSuccess || b.Duration <= 0 || br != nil && br.counted {
		return
	}
	if br != nil {
		br.counted = true
	}
	d := append(m.estimate[b.Job], b.Duration)
	if len(d) > estimateSamples {
		d = d[len(d)-estimateSamples:]
	}
	m.estimate[b.Job] = d
}

// Estimate is the expected duration of job (the mean of its last successful
// builds), or 0 when none is known.
func (m *Model) Estimate(job string) time.Duration {
	d := m.estimate[job]
	if len(d) == 0 {
		return 0
	}
	var sum time.Duration
	for _, x := range d {
		sum += x
	}
	return sum / time.Duration(len(d))
}

// finished reports whether the build set is done (voted, vote skipped,
// superseded or abandoned) and since when.
func (r *setRec) finished() (bool, time.Time) {
	if r.set == nil {
		return false, time.Time{}
	}
	switch r.set.State {
	case build.SetSuperseded, build.SetAbandoned, build.SetVoted, build.SetClosed:
		return true, r.setAt
	}
	done, at := false, time.Time{}
	for _, v := range r.votes {
		if v.v.State == build.VotePosted || v.v.State == build.VoteSkipped {
			done = true
			t := v.v.Posted
			if t.IsZero() {
				t = v.at
			}
			if t.After(at) {
				at = t
			}
		}
	}
	return done, at
}

// Prune drops finished build sets older than recent, orphan records whose
// build set never came, and, above the bound, the oldest build sets
// (finished first). It returns how many build sets it dropped.
func (m *Model) Prune(now time.Time) int {
	n := 0
	drop := func(r *setRec) {
		if r.set != nil {
			m.dirty[groupKey(r.set)] = true
			n++
		}
		delete(m.sets, r.id)
	}
	held := 0
	for _, r := range m.sets {
		if r.set == nil {
			if now.Sub(r.seen) > orphanGrace {
				drop(r)
			}
			continue
		}
		if done, at := r.finished(); done && now.Sub(at) > m.recent {
			drop(r)
			continue
		}
		held++
	}
	if m.max > 0 && held > m.max {
		var all []*setRec
		for _, r := range m.sets {
			if r.set != nil {
				all = append(all, r)
			}
		}
		// Finished before in flight, then oldest first.
		slices.SortFunc(all, func(a, b *setRec) int {
			fa, _ := a.finished()
			fb, _ := b.finished()
			if fa != fb {
				if fa {
					return -1
				}
				return 1
			}
			return a.set.Created.Compare(b.set.Created)
		})
		for _, r := range all[:held-m.max] {
			drop(r)
		}
	}
	return n
}

// Counts returns how many listed build sets are in flight and finished.
func (m *Model) Counts() (inFlight, finished int) {
	for _, r := range m.sets {
		if r.set == nil {
			continue
		}
		if done, _ := r.finished(); done {
			finished++
		} else {
			inFlight++
		}
	}
	return inFlight, finished
}

// TakeDirty returns the groups changed since the last call, and the notes.
func (m *Model) TakeDirty() ([]string, []Note) {
	keys := make([]string, 0, len(m.dirty))
	for k := range m.dirty {
		keys = append(keys, k)
	}
	clear(m.dirty)
	notes := m.notes
	m.notes = nil
	slices.Sort(keys)
	return keys, notes
}

// groupKey names the group a build set is listed in: its project and change
// (or ref, for events of no change). It is safe as an HTML id.
func groupKey(s *build.Set) string {
	if s.Change > 0 {
		return subject.ChangeKey(s.Project, s.Change)
	}
	return subject.ChangeKey(s.Project, 0) + "." + subject.Token(s.Ref)
}

func changeLabel(s *build.Set) string {
	if s.Change > 0 {
		return "change " + strconv.Itoa(s.Change)
	}
	return s.Project + " " + s.Ref
}

// sortSets orders build sets newest first.
func sortSets(v []SetView) {
	slices.SortStableFunc(v, func(a, b SetView) int {
		if c := b.Created.Compare(a.Created); c != 0 {
			return c
		}
		return cmp.Compare(b.ID, a.ID)
	})
}

var errNoChange = errors.New("no build set of this change is listed")
