package trigger

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/gerritflow/gerritflow/pkg/gerritsim"
	"github.com/gerritflow/gerritflow/pkg/jenkins"
)

// TestCrashAfterBuildFoundBehindManyLaterBuilds is the breach `make chaos`
// found (docs/reliability.md): the trigger is killed after Jenkins accepted
// a build and before the queue item was recorded; the message comes back
// after AckWait (a minute), and meanwhile the busy job has started more than
// the 100 builds Jenkins lists in a job's "builds". The redelivery must still
// find the build by its GERRITFLOW_BUILD_ID instead of starting a second one.
func TestCrashAfterBuildFoundBehindManyLaterBuilds(t *testing.T) {
	e := newEnv(t)
	_, _, ev := e.upload(gerritsim.Upload{Branch: "main"})
	crashed := false
	e.h.afterBuild = func(job string) error {
		if job == "unit" && !crashed {
			crashed = true
			return errors.New("injected crash after buildWithParameters")
		}
		return nil
	}
	if _, err := e.try(ev, nil); err == nil {
		t.Fatal("first delivery succeeded; the injected crash did not happen")
	}
	// Other changes keep the job busy while the message waits for its redelivery.
	ctx := context.Background()
	other, err := jenkins.New(ctx, e.jk.URL(), e.jk.User(), e.jk.Token(), nil)
	if err != nil {
		t.Fatal(err)
	}
	const later = 250
	for i := 0; i < later; i++ {
		if _, err := other.Build(ctx, "folder/unit-tests", map[string]string{"GERRITFLOW_BUILD_ID": fmt.Sprintf("other-%d.unit", i)}); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for len(e.jk.Queued("folder/unit-tests")) > 0 { // every one of them started: out of the queue
		if time.Now().After(deadline) {
			t.Fatal("builds still queued after 30s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	e.handle(ev, nil) // the redelivery
	if n := e.jk.BuildRequests("folder/unit-tests"); n != later+1 {
		t.Errorf("unit-tests build requests = %d; want %d (the redelivery must find the build it started, behind %d later ones)", n, later+1, later)
	}
}
