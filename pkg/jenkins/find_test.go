package jenkins_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/gerritflow/gerritflow/pkg/jenkins"
	"github.com/gerritflow/gerritflow/pkg/jenkinssim"
)

// TestFindByBuildIDBehindTheNewest100 finds a build that more than a
// hundred later builds pushed out of the job's "builds" (Jenkins lists the
// newest 100): `make chaos` found the trigger starting such a build twice
// after a crash (docs/reliability.md).
func TestFindByBuildIDBehindTheNewest100(t *testing.T) {
	e := setup(t, jenkinssim.Options{})
	first := mustBuild(t, e, params("first"))
	for i := 0; i < 1234; i++ {
		mustBuild(t, e, params(fmt.Sprintf("later-%d", i)))
	}
	e.clk.Add(time.Second) // every item left the queue: 1235 builds
	ref, ok, err := e.c.FindByBuildID(t.Context(), unitJob, "first")
	want := jenkins.Ref{QueueID: first, Number: 1, URL: e.sim.URL() + "/job/folder/job/unit-tests/1/"}
	if err != nil || !ok || ref != want {
		t.Errorf("FindByBuildID(1234 builds back) = %+v, %v, %v; want %+v", ref, ok, err, want)
	}
	ref, ok, err = e.c.FindByBuildID(t.Context(), unitJob, "later-1100")
	if err != nil || !ok || ref.Number != 1102 {
		t.Errorf("FindByBuildID(134 builds back) = %+v, %v, %v; want build 1102", ref, ok, err)
	}
	if ref, ok, err := e.c.FindByBuildID(t.Context(), unitJob, "never"); err != nil || ok {
		t.Errorf("FindByBuildID(unknown, all pages read) = %+v, %v, %v; want not found", ref, ok, err)
	}
}
