package trigger

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/gerritflow/gerritflow/pkg/config"
)

// BuildIDParam is the parameter every configured Jenkins job must declare:
// without it Jenkins drops the value, and a build started before a crash
// could not be found again.
const BuildIDParam = "GERRITFLOW_BUILD_ID"

// ParameterLister reads a job's declared parameters.
type ParameterLister interface {
	JobParameters(ctx context.Context, job string) ([]string, error)
}

// CheckJobs verifies that every configured job exists and declares
// GERRITFLOW_BUILD_ID; the error names every job that does not.
func CheckJobs(ctx context.Context, jk ParameterLister, jobs []config.Job) error {
	var errs []error
	seen := map[string]bool{}
	for i, j := range jobs {
		if seen[j.JenkinsJob] {
			continue
		}
		seen[j.JenkinsJob] = true
		params, err := jk.JobParameters(ctx, j.JenkinsJob)
		if err != nil {
			errs = append(errs, fmt.Errorf("jobs[%d] (%s): jenkins job %s: %w", i, j.Name, j.JenkinsJob, err))
			continue
		}
		if !slices.Contains(params, BuildIDParam) {
			errs = append(errs, fmt.Errorf("jobs[%d] (%s): jenkins job %s does not declare the string parameter %s", i, j.Name, j.JenkinsJob, BuildIDParam))
		}
	}
	return errors.Join(errs...)
}
