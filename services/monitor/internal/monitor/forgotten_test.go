package monitor_test

import (
	"testing"
	"time"

	"github.com/gerritflow/gerritflow/pkg/build"
	"github.com/gerritflow/gerritflow/pkg/jenkinssim"
)

// TestForgottenQueueItemFoundBehindManyLaterBuilds: a monitor outage longer
// than Jenkins remembers a queue item that left the queue (5 minutes), on a
// job that started more than the 100 builds Jenkins lists in the meantime.
// The build must be found by its GERRITFLOW_BUILD_ID, not reported LOST (a
// -1 vote for a build that passed). `make chaos` found it
// (docs/reliability.md).
func TestForgottenQueueItemFoundBehindManyLaterBuilds(t *testing.T) {
	e := newEnv(t, jenkinssim.Options{ForgetAfter: 50 * time.Millisecond})
	tr := e.queue(jenkinssim.Outcome{QueueDelay: -1, Duration: 300 * time.Millisecond})
	for i := 0; i < 150; i++ { // later builds of the job, while no monitor runs
		e.queue(jenkinssim.Outcome{QueueDelay: -1, Duration: -1})
	}
	eventually(t, "the queue item forgotten", func() bool { return e.queueItemGone(tr.QueueID) })
	e.replica(nil)
	e.publishTriggered(tr)
	c := e.one(tr, 10*time.Second)
	if c.Result != build.ResultSuccess || c.Number != 1 {
		t.Errorf("result %s #%d; want SUCCESS #1 (found behind 150 later builds)", c.Result, c.Number)
	}
	e.checkRecordFirst(c)
}
