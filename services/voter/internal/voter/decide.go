package voter

import (
	"fmt"
	"strings"
	"time"

	"github.com/gerritflow/gerritflow/pkg/build"
	"github.com/gerritflow/gerritflow/pkg/config"
)

// Decide returns the label value of a finished build set, as the Gerrit
// Trigger plugin computes it: the minimum of the voting builds' values.
// SUCCESS counts vote.success; FAILURE and LOST count vote.failure; UNSTABLE,
// ABORTED and TIMED_OUT count their own setting, failure by default;
// NOT_BUILT and CANCELED (a build stopped before it ran) count vote.not_built
// and are ignored when it is unset; a result gerritflow does not know counts
// as a failure. Non-voting jobs never count. counted is false when no build
// counted: the review then carries a message and no label.
func Decide(cfg config.Vote, set build.Set, builds []build.Build) (value int, counted bool) {
	voting := votingJobs(set)
	for _, b := range builds {
		if !isVoting(voting, b) {
			continue
		}
		v, ok := resultValue(cfg, b.Result)
		if !ok {
			continue
		}
		if !counted || v < value {
			value = v
		}
		counted = true
	}
	return value, counted
}

func resultValue(cfg config.Vote, result string) (int, bool) {
	or := func(p *int) int {
		if p != nil {
			return *p
		}
		return cfg.Failure
	}
	switch result {
	case build.ResultSuccess:
		return cfg.Success, true
	case build.ResultUnstable:
		return or(cfg.Unstable), true
	case build.ResultAborted:
		return or(cfg.Aborted), true
	case build.ResultTimedOut:
		return or(cfg.TimedOut), true
	case build.ResultNotBuilt, build.ResultCanceled:
		if cfg.NotBuilt == nil {
			return 0, false
		}
		return *cfg.NotBuilt, true
	default: // FAILURE, LOST, and anything unknown: never a +1 by accident
		return cfg.Failure, true
	}
}

// votingJobs maps each job of set to whether it votes.
func votingJobs(set build.Set) map[string]bool {
	m := make(map[string]bool, len(set.Jobs))
	for _, j := range set.Jobs {
		m[j.Name] = j.Voting
	}
	return m
}

// isVoting trusts the build set (what the trigger decided) over the build record.
func isVoting(voting map[string]bool, b build.Build) bool {
	if v, ok := voting[b.Job]; ok {
		return v
	}
	return b.Voting
}

// Marker is the last line of every review the voter posts for the votes key
// of set and replay: it finds a review already on Gerrit after a crash.
func Marker(setID, replay string) string {
	if replay != "" {
		return "gerritflow build set " + setID + " replay " + replay
	}
	return "gerritflow build set " + setID
}

// Message is the review text: a headline from the voting builds' worst
// result, one line per job (name, result, duration, build URL, non-voting),
// a note when the patch set built is no longer current, and the marker.
func Message(set build.Set, builds []build.Build, replay string, outdated bool) string {
	voting := votingJobs(set)
	var b strings.Builder
	b.WriteString(headline(voting, builds))
	b.WriteString("\n\n")
	if outdated {
		fmt.Fprintf(&b, "Patch Set %d is no longer the current patch set: these results are for Patch Set %d (%s) only.\n\n",
			set.PatchSet, set.PatchSet, short(set.Revision))
	}
	for _, bd := range builds {
		url := bd.URL
		if url == "" {
			url = "(no build URL)"
		}
		fmt.Fprintf(&b, "- %s %s : %s", bd.Job, url, result(bd.Result))
		if bd.Duration > 0 {
			fmt.Fprintf(&b, " in %s", roundDuration(bd.Duration))
		}
		if !isVoting(voting, bd) {
			b.WriteString(" (non-voting)")
		}
		b.WriteString("\n")
	}
	b.WriteString("\n")
	b.WriteString(Marker(set.ID, replay))
	return b.String()
}

// severity orders results from best to worst for the headline.
var severity = map[string]int{
	build.ResultSuccess:  0,
	build.ResultUnstable: 1,
	build.ResultAborted:  2,
	build.ResultTimedOut: 3,
	build.ResultLost:     4,
	build.ResultFailure:  5,
}

var headlines = map[string]string{
	build.ResultSuccess:  "Build Successful",
	build.ResultUnstable: "Build Unstable",
	build.ResultAborted:  "Build Aborted",
	build.ResultTimedOut: "Build Timed Out",
	build.ResultLost:     "Build Lost",
	build.ResultFailure:  "Build Failed",
}

func headline(voting map[string]bool, builds []build.Build) string {
	worst, any, skipped := "", false, false
	for _, b := range builds {
		if !isVoting(voting, b) {
			continue
		}
		if b.Result == build.ResultNotBuilt || b.Result == build.ResultCanceled {
			skipped = true
			continue
		}
		r := b.Result
		if _, known := severity[r]; !known {
			r = build.ResultFailure
		}
		if !any || severity[r] > severity[worst] {
			worst = r
		}
		any = true
	}
	switch {
	case any:
		return headlines[worst]
	case skipped:
		return "No Builds Executed"
	default:
		return "Build Finished (no voting jobs)"
	}
}

func result(r string) string {
	if r == "" {
		return "UNKNOWN"
	}
	return r
}

func roundDuration(d time.Duration) time.Duration {
	if d < time.Second {
		return d.Round(time.Millisecond)
	}
	return d.Round(time.Second)
}

func short(sha string) string {
	if len(sha) > 12 {
		return sha[:12]
	}
	return sha
}
