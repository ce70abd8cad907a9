package chaos

import (
	"hash/fnv"
	"time"

	"github.com/gerritflow/gerritflow/pkg/build"
	"github.com/gerritflow/gerritflow/pkg/config"
	"github.com/gerritflow/gerritflow/pkg/jenkinssim"
)

// Outcome is what the simulated Jenkins does with the build whose
// GERRITFLOW_BUILD_ID is buildID: a pure function of the job and the id, so
// that the checks know every build's result without asking anyone. About
// one build in four of a voting job fails, one in three of the others (a
// failing non-voting job must not change a vote).
func Outcome(jenkinsJob, buildID string, voting bool) jenkinssim.Outcome {
	h := fnv.New64a()
	h.Write([]byte(jenkinsJob + "\x00" + buildID))
	n := h.Sum64()
	o := jenkinssim.Outcome{
		Result:     build.ResultSuccess,
		QueueDelay: time.Duration(50+n%400) * time.Millisecond,
		Duration:   time.Duration(200+(n>>16)%2300) * time.Millisecond,
	}
	o.EstimatedDuration = o.Duration
	fail := (n >> 32) % 3
	if voting {
		fail = (n >> 32) % 4
	}
	if fail == 0 {
		o.Result = build.ResultFailure
	}
	return o
}

// Script makes every configured job of the Jenkins simulator follow Outcome.
// hook, if not nil, runs on every buildWithParameters request before
// Jenkins queues the build and answers (the fault injector kills the
// trigger there).
func Script(jk *jenkinssim.Server, jobs []config.Job, hook func(jenkinsJob, buildID string)) {
	for _, j := range jobs {
		voting := j.IsVoting()
		jenkinsJob := j.JenkinsJob
		jk.Script(jenkinsJob, func(p map[string]string) jenkinssim.Outcome {
			if hook != nil {
				hook(jenkinsJob, p["GERRITFLOW_BUILD_ID"])
			}
			return Outcome(jenkinsJob, p["GERRITFLOW_BUILD_ID"], voting)
		})
	}
}

// VoteValue is the label a build set earns from its builds' results under
// the vote config, as DESIGN.md and the Gerrit Trigger plugin define it: the
// minimum over the voting jobs, SUCCESS counting vote.success, NOT_BUILT and
// CANCELED ignored (vote.not_built unset), anything else vote.failure (or its
// own setting). counted is false when no build counts: the review then has
// no label. results maps job name to result; voting maps job name to voting.
func VoteValue(v config.Vote, voting map[string]bool, results map[string]string) (value int, counted bool) {
	or := func(p *int) int {
		if p != nil {
			return *p
		}
		return v.Failure
	}
	for job, vote := range voting {
		if !vote {
			continue
		}
		var val int
		switch r := results[job]; r {
		case build.ResultSuccess:
			val = v.Success
		case build.ResultNotBuilt, build.ResultCanceled:
			if v.NotBuilt == nil {
				continue
			}
			val = *v.NotBuilt
		case build.ResultUnstable:
			val = or(v.Unstable)
		case build.ResultAborted:
			val = or(v.Aborted)
		case build.ResultTimedOut:
			val = or(v.TimedOut)
		default:
			val = v.Failure
		}
		if !counted || val < value {
			value = val
		}
		counted = true
	}
	return value, counted
}
