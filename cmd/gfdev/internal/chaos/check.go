package chaos

import (
	"fmt"
	"sort"
	"strings"

	"github.com/gerritflow/gerritflow/pkg/build"
	"github.com/gerritflow/gerritflow/pkg/config"
	"github.com/gerritflow/gerritflow/pkg/subject"
)

// Check is one invariant and what the run did to it.
type Check struct {
	Name     string
	Checked  int      // how many things it looked at
	Breaches int      // how many of them broke it
	Examples []string // a few of the breaches
	Counts   string   // which summary figure the breaches add to: lost, dup_builds, dup_votes, or "" (other)
	// Info marks an observation that breaks no promise: its count is
	// reported, never counted as a breach.
	Info bool
}

// OK reports whether the invariant held.
func (c Check) OK() bool { return c.Breaches == 0 }

func (c *Check) breach(format string, args ...any) {
	c.Breaches++
	if len(c.Examples) < 5 {
		c.Examples = append(c.Examples, fmt.Sprintf(format, args...))
	}
}

// Verdict is the outcome of every check.
type Verdict struct {
	Checks    []Check
	Lost      int
	DupBuilds int
	DupVotes  int
	DLQ       int // garbage records found in gerritflow.dlq.parser
	Breaches  int
}

// markerPrefix starts the last line of every review the voter posts.
const markerPrefix = "gerritflow build set "

// Evaluate checks the observations against the expectation. jobs and vote
// are the config's.
func Evaluate(x *Expectation, o *Observed, jobs []config.Job, vote config.Vote) Verdict {
	var v Verdict
	add := func(c Check) {
		v.Checks = append(v.Checks, c)
		if c.Info {
			return
		}
		v.Breaches += c.Breaches
		switch c.Counts {
		case "lost":
			v.Lost += c.Breaches
		case "dup_builds":
			v.DupBuilds += c.Breaches
		case "dup_votes":
			v.DupVotes += c.Breaches
		}
	}
	jobByName := map[string]config.Job{}
	for _, j := range jobs {
		jobByName[j.Name] = j
	}

	// 1. Every Kinesis record reached gerrit.raw, once.
	c := Check{Name: "every Kinesis record on gerrit.raw, once", Checked: x.Records, Counts: "lost"}
	if o.SinkLost > 0 {
		c.breach("%d Gerrit events never reached Kinesis (the sink gave up): the run proves nothing about them", o.SinkLost)
	}
	if miss := x.Records - o.RawDistinct; miss > 0 {
		for i := 0; i < miss; i++ {
			c.breach("%d of %d records missing from gerrit.raw", miss, x.Records)
		}
	}
	add(c)
	c = Check{Name: "no Kinesis record twice on gerrit.raw", Checked: o.RawMsgs}
	if extra := o.RawMsgs - o.RawDistinct; extra > 0 {
		for i := 0; i < extra; i++ {
			c.breach("%d messages for %d distinct records", o.RawMsgs, o.RawDistinct)
		}
	}
	if o.RawDistinct > x.Records {
		c.breach("%d distinct records on gerrit.raw, %d written", o.RawDistinct, x.Records)
	}
	add(c)

	// 2. Every event on gerrit.events once (duplicates collapsed by identity).
	c = Check{Name: "every Gerrit event on gerrit.events, once", Checked: len(x.EventIDs), Counts: "lost"}
	for _, id := range sortedKeys(x.EventIDs) {
		if o.EventIDs[id] == 0 {
			c.breach("event %s missing", id)
		}
	}
	add(c)
	c = Check{Name: "no event twice on gerrit.events", Checked: len(o.EventIDs)}
	for _, id := range sortedKeys(o.EventIDs) {
		switch n := o.EventIDs[id]; {
		case !x.EventIDs[id]:
			c.breach("event %s published but never emitted", id)
		case n > 1:
			c.breach("event %s published %d times", id, n)
		}
	}
	add(c)

	// 3. Every eligible event whose patch set is current at the end got its build set.
	must := x.MustSets()
	c = Check{Name: "eligible event of a current patch set: its build set exists", Checked: len(must), Counts: "lost"}
	for _, id := range must {
		if _, ok := o.Sets[id]; !ok {
			s := x.Sets[id]
			c.breach("no build set %s for %s on change %d patch set %d", id, s.EventType, s.Change, s.PatchSet)
		}
	}
	add(c)
	c = Check{Name: "build sets only for eligible events, with their jobs and revision", Checked: len(o.Sets)}
	for _, id := range sortedKeys(o.Sets) {
		set, exp := o.Sets[id], x.Sets[id]
		if exp == nil {
			c.breach("build set %s (%s, change %d/%d) for no eligible event", id, set.EventType, set.Change, set.PatchSet)
			continue
		}
		got := map[string]bool{}
		for _, j := range set.Jobs {
			got[j.Name] = j.Voting
		}
		if !sameJobs(got, exp.Jobs) {
			c.breach("build set %s has jobs %v; want %v", id, got, exp.Jobs)
		}
		if set.Revision != exp.Revision || set.Change != exp.Change || set.PatchSet != exp.PatchSet {
			c.breach("build set %s is for %d/%d %s; want %d/%d %s", id, set.Change, set.PatchSet, set.Revision, exp.Change, exp.PatchSet, exp.Revision)
		}
	}
	add(c)

	// 4. Builds: at most one Jenkins build per GERRITFLOW_BUILD_ID, each for a job of a build set.
	perID := map[string]int{}
	for _, b := range o.Jenkins {
		perID[b.Params["GERRITFLOW_BUILD_ID"]]++
	}
	c = Check{Name: "one Jenkins build per job of a build set (GERRITFLOW_BUILD_ID unique)", Checked: len(perID), Counts: "dup_builds"}
	for _, id := range sortedKeys(perID) {
		if n := perID[id]; n > 1 {
			for i := 1; i < n; i++ {
				c.breach("%d Jenkins builds with GERRITFLOW_BUILD_ID %s", n, id)
			}
		}
	}
	add(c)
	jobKeys := map[string]build.Job{} // build key -> job, for every job of every build set
	for _, set := range o.Sets {
		for _, j := range set.Jobs {
			jobKeys[subject.BuildKey(set.ID, j.Name)] = j
		}
	}
	c = Check{Name: "no Jenkins build outside a build set", Checked: len(perID)}
	for _, id := range sortedKeys(perID) {
		if _, ok := jobKeys[id]; !ok {
			c.breach("Jenkins build %q belongs to no job of a build set", id)
		}
	}
	add(c)

	// 5. Every job of a build set that is still owed work (running, of a
	// change open at the end, on its latest patch set) was built, followed to
	// its end and recorded; every recorded result is the scripted one.
	c = Check{Name: "owed build set: every job built, followed to its end, recorded", Counts: "lost"}
	wrong := Check{Name: "recorded results are Jenkins' (scripted) results"}
	stale := Check{Name: "running build sets with a job never started (change closed or patch set superseded)", Info: true}
	for _, id := range sortedKeys(o.Sets) {
		set := o.Sets[id]
		chg := x.Changes[set.Change]
		owed := set.State == build.SetRunning && (chg == nil || chg.Open() && set.PatchSet >= chg.Latest)
		if set.State == build.SetRunning && !owed {
			stale.Checked++
		}
		for _, j := range set.Jobs {
			key := subject.BuildKey(set.ID, j.Name)
			rec, have := o.Builds[key]
			if have && rec.State == build.StateCompleted && rec.Cancel == "" {
				wrong.Checked++
				if want := Outcome(j.JenkinsJob, key, j.Voting).Result; rec.Result != want {
					wrong.breach("build %s recorded %s; Jenkins ran it to %s", key, rec.Result, want)
				}
			}
			if set.State == build.SetRunning && !owed && perID[key] == 0 {
				stale.breach("build set %s (change %d patch set %d): job %s never started", id, set.Change, set.PatchSet, j.Name)
			}
			if !owed {
				continue
			}
			c.Checked++
			switch {
			case perID[key] == 0:
				c.breach("build set %s: job %s never reached Jenkins", id, j.Name)
			case !have:
				c.breach("build set %s: job %s has no build record", id, j.Name)
			case rec.State != build.StateCompleted:
				c.breach("build set %s: job %s still %s", id, j.Name, rec.State)
			}
		}
	}
	add(c)
	add(wrong)
	add(stale)

	// 5b. The build lifecycle on CI_BUILDS: every build of an owed build set
	// announced once as triggered and, completed, once as completed; no
	// build announced twice anywhere.
	c = Check{Name: "owed build set: every build once on ci.builds.triggered and ci.builds.completed", Counts: "lost"}
	twice := Check{Name: "no build announced twice on ci.builds.triggered or ci.builds.completed", Checked: len(o.Triggered) + len(o.Completed)}
	unannounced := Check{Name: "build records of retired build sets never announced", Info: true}
	for _, key := range sortedKeys(o.Triggered) {
		if n := o.Triggered[key]; n > 1 {
			twice.breach("build %s announced triggered %d times", key, n)
		}
	}
	for _, key := range sortedKeys(o.Completed) {
		if n := o.Completed[key]; n > 1 {
			twice.breach("build %s announced completed %d times", key, n)
		}
	}
	for _, key := range sortedKeys(o.Builds) {
		b := o.Builds[key]
		set, ok := o.Sets[b.BuildSet]
		if !ok {
			continue
		}
		chg := x.Changes[set.Change]
		owed := set.State == build.SetRunning && (chg == nil || chg.Open() && set.PatchSet >= chg.Latest)
		miss := b.State != build.StateTriggering && o.Triggered[key] == 0 || b.State == build.StateCompleted && o.Completed[key] == 0
		if owed {
			c.Checked++
			if miss {
				c.breach("build %s (%s) not announced (triggered %d, completed %d)", key, b.State, o.Triggered[key], o.Completed[key])
			}
		} else if miss {
			unannounced.Checked++
			unannounced.breach("build %s (%s, build set %s) not announced", key, b.State, set.State)
		}
	}
	add(c)
	add(twice)
	add(unannounced)

	// 6. Votes.
	reviews := map[string][]int{} // build set -> indexes into o.Reviews
	c = Check{Name: "every review names a build set (marker line)", Checked: len(o.Reviews)}
	for i, r := range o.Reviews {
		id := setOfReview(r.Input.Message)
		if _, ok := o.Sets[id]; id == "" || !ok {
			c.breach("review on change %d patch set %d names no known build set (%q)", r.Change, r.PatchSet, id)
			continue
		}
		reviews[id] = append(reviews[id], i)
	}
	add(c)
	dup := Check{Name: "at most one review per build set", Checked: len(reviews), Counts: "dup_votes"}
	for _, id := range sortedKeys(reviews) {
		for i := 1; i < len(reviews[id]); i++ {
			dup.breach("build set %s got %d reviews", id, len(reviews[id]))
		}
	}
	add(dup)
	c = Check{Name: "completed running build set of an open change: one review", Counts: "lost"}
	right := Check{Name: "review on the build set's revision with the value its builds earned"}
	label := vote.Label
	for _, id := range sortedKeys(o.Sets) {
		set := o.Sets[id]
		voting := map[string]bool{}
		results := map[string]string{}
		completed := true
		for _, j := range set.Jobs {
			voting[j.Name] = j.Voting
			key := subject.BuildKey(set.ID, j.Name)
			rec := o.Builds[key]
			// The value is earned by what Jenkins ran (the script), not by
			// what was recorded: a build wrongly recorded LOST must not
			// pass as a -1. A cancelled build earns what was recorded.
			results[j.Name] = rec.Result
			if rec.Cancel == "" {
				results[j.Name] = Outcome(j.JenkinsJob, key, j.Voting).Result
			}
			completed = completed && rec.State == build.StateCompleted
		}
		if exp := x.Sets[id]; exp != nil {
			voting = exp.Jobs // what the config says, not what the trigger wrote
		}
		chg := x.Changes[set.Change]
		if set.State == build.SetRunning && completed && chg != nil && chg.Open() {
			c.Checked++
			if len(reviews[id]) == 0 {
				c.breach("build set %s (change %d patch set %d) completed with no review", id, set.Change, set.PatchSet)
			}
		}
		for _, i := range reviews[id] {
			r := o.Reviews[i]
			right.Checked++
			wantRev := set.Revision
			if chg != nil && chg.Revisions[set.PatchSet] != "" {
				wantRev = chg.Revisions[set.PatchSet]
			}
			if r.Change != set.Change || r.Revision != wantRev || r.PatchSet != set.PatchSet {
				right.breach("review for %s on %d/%d %s; want %d/%d %s", id, r.Change, r.PatchSet, r.Revision, set.Change, set.PatchSet, wantRev)
			}
			want, counted := VoteValue(vote, voting, results)
			got, has := r.Input.Labels[label]
			if has != counted || counted && got != want || len(r.Input.Labels) > 1 {
				right.breach("review for %s has labels %v; want %s", id, r.Input.Labels, labelString(label, want, counted))
			}
		}
	}
	add(c)
	add(right)

	// 6b. What the voter recorded agrees with what Gerrit got: one
	// ci.votes.posted per review (the audit and replay source), the votes
	// record "posted", and no claim left "posting".
	c = Check{Name: "every review once on ci.votes.posted, its votes record posted", Checked: len(reviews), Counts: "lost"}
	announced := map[string]int{}
	for _, a := range o.Announced {
		if a.State == build.VotePosted && a.Replay == "" {
			announced[a.BuildSet]++
		}
	}
	for _, id := range sortedKeys(reviews) {
		switch n := announced[id]; {
		case n == 0:
			c.breach("build set %s: review posted, never announced on ci.votes.posted", id)
		case n > 1:
			c.breach("build set %s: announced %d times", id, n)
		}
		if rec, ok := o.Votes[id]; !ok || rec.State != build.VotePosted {
			c.breach("build set %s: review posted, votes record %q", id, rec.State)
		}
	}
	for _, id := range sortedKeys(announced) {
		if len(reviews[id]) == 0 {
			c.breach("build set %s announced posted on ci.votes.posted; Gerrit has no review", id)
		}
	}
	add(c)
	c = Check{Name: "no vote claim left \"posting\"", Checked: len(o.Votes)}
	for _, id := range sortedKeys(o.Votes) {
		if v := o.Votes[id]; v.State == build.VotePosting {
			c.breach("vote %s still posting (claimed by %s at %s)", id, v.Owner, v.Claimed.Format("15:04:05"))
		}
	}
	add(c)

	// 7. DLQ: every garbage record, with a reason; nothing else.
	need := map[string]int{} // garbage not found yet, by bytes
	for _, g := range x.Garbage {
		need[string(g)]++
	}
	var extra []DLQEntry
	for _, e := range o.DLQ {
		if k := string(e.Data); e.Subject == subject.DLQ("parser") && e.Error != "" && need[k] > 0 {
			need[k]--
			v.DLQ++
			continue
		}
		extra = append(extra, e)
	}
	c = Check{Name: "every garbage record in gerritflow.dlq.parser with a reason", Checked: len(x.Garbage), Counts: "lost"}
	for _, k := range sortedKeys(need) {
		for i := 0; i < need[k]; i++ {
			c.breach("garbage record %q not dead-lettered", clip(k, 60))
		}
	}
	add(c)
	c = Check{Name: "nothing else dead-lettered", Checked: len(o.DLQ), Counts: "lost"}
	for _, e := range extra {
		c.breach("%s from %s: %s (%q)", e.Subject, e.Origin, clip(e.Error, 120), clip(string(e.Data), 60))
	}
	add(c)

	// 8. Nothing pending or unacked; nothing left in Jenkins.
	c = Check{Name: "nothing pending or unacked on any consumer", Checked: len(o.Consumers)}
	for _, cs := range o.Consumers {
		if cs.Pending > 0 || cs.AckPending > 0 {
			c.breach("%s/%s: %d pending, %d unacked", cs.Stream, cs.Name, cs.Pending, cs.AckPending)
		}
	}
	add(c)
	c = Check{Name: "nothing queued or building in Jenkins", Checked: len(o.Jenkins)}
	for _, b := range o.Jenkins {
		if b.Number == 0 || b.Building {
			c.breach("%s %s still %s", b.Job, b.Params["GERRITFLOW_BUILD_ID"], map[bool]string{true: "building", false: "queued"}[b.Building])
		}
	}
	add(c)
	return v
}

// setOfReview reads the build set id from a review's marker line (its last).
func setOfReview(msg string) string {
	lines := strings.Split(strings.TrimRight(msg, "\n"), "\n")
	last := lines[len(lines)-1]
	if !strings.HasPrefix(last, markerPrefix) {
		return ""
	}
	id := strings.TrimPrefix(last, markerPrefix)
	if strings.Contains(id, " ") { // "... replay <id>": not part of a chaos run
		return ""
	}
	return id
}

func sameJobs(a, b map[string]bool) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func labelString(label string, v int, counted bool) string {
	if !counted {
		return "no label"
	}
	return fmt.Sprintf("%s %+d", label, v)
}

func clip(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
