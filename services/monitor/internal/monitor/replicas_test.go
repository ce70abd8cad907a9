package monitor_test

import (
	"testing"
	"time"

	"github.com/gerritflow/gerritflow/pkg/build"
	"github.com/gerritflow/gerritflow/pkg/config"
	"github.com/gerritflow/gerritflow/pkg/jenkinssim"
	"github.com/gerritflow/gerritflow/pkg/natstest"
	"github.com/gerritflow/gerritflow/pkg/subject"
)

func TestTwoReplicasCompleteEveryBuildOnce(t *testing.T) {
	e := newEnv(t, jenkinssim.Options{})
	const n = 50
	var trs []build.Triggered
	for i := range n {
		trs = append(trs, e.queue(jenkinssim.Outcome{QueueDelay: 30 * time.Millisecond, Duration: time.Duration(100+10*i) * time.Millisecond}))
	}
	e.peak.Store(0)
	e.slow.Store(int64(5 * time.Millisecond)) // a busy Jenkins: calls pile up against the cap
	const perReplica = 2
	small := func(c *config.Config) { c.Jenkins.MaxConcurrent = perReplica }
	a, b := e.replica(small), e.replica(small)
	for _, tr := range trs {
		e.publishTriggered(tr)
	}
	got := e.completed(n, 30*time.Second)
	if len(got) != n {
		t.Fatalf("%d distinct builds completed; want %d", len(got), n)
	}
	ids := map[string]bool{}
	for _, tr := range trs {
		c, ok := got[tr.BuildID]
		if !ok {
			t.Errorf("build %s not completed", tr.BuildID)
			continue
		}
		if c.Result != build.ResultSuccess {
			t.Errorf("build %s result %s; want SUCCESS", tr.BuildID, c.Result)
		}
		ids[c.msgID] = true
		e.checkRecordFirst(c)
	}
	if len(ids) != n {
		t.Errorf("%d distinct Msg-Ids; want %d", len(ids), n)
	}
	time.Sleep(300 * time.Millisecond) // nothing more may come
	if c := natstest.Count(t, e.js, subject.BuildsCompleted); c != n {
		t.Errorf("ci.builds.completed holds %d; want %d", c, n)
	}
	pa, pb := a.metric("published_total", "subject", subject.BuildsCompleted), b.metric("published_total", "subject", subject.BuildsCompleted)
	if pa+pb != n {
		t.Errorf("replicas published %v + %v completions; want %d in all", pa, pb, n)
	}
	if ca, cb := a.metric("completions_total"), b.metric("completions_total"); ca+cb != n {
		t.Errorf("replicas recorded %v + %v completions; want %d in all", ca, cb, n)
	}
	if p := e.peak.Load(); p > 2*perReplica {
		t.Errorf("%d Jenkins requests at once; want at most %d (jenkins.max_concurrent %d per replica)", p, 2*perReplica, perReplica)
	}
	t.Logf("replica a completed %v, b %v; peak Jenkins concurrency %d", a.metric("completions_total"), b.metric("completions_total"), e.peak.Load())
}

func TestStoppedReplicaHandsItsBuildsOver(t *testing.T) {
	e := newEnv(t, jenkinssim.Options{})
	const n = 20
	a := e.replica(nil)
	var trs []build.Triggered
	for range n {
		tr := e.trigger(jenkinssim.Outcome{QueueDelay: 20 * time.Millisecond, Duration: 3 * time.Second})
		trs = append(trs, tr)
	}
	eventually(t, "replica a following every build", func() bool { return a.metric("builds_in_flight") == n })
	eventually(t, "some builds running", func() bool { return e.record(trs[0].BuildID).State == build.StateRunning })
	b := e.replica(nil)
	a.stop() // hands its unfinished messages back at once
	if got := natstest.Count(t, e.js, subject.BuildsCompleted); got != 0 {
		t.Fatalf("%d builds completed before the handover; want 0 (builds last 3s)", got)
	}
	got := e.completed(n, 20*time.Second)
	for _, tr := range trs {
		c, ok := got[tr.BuildID]
		if !ok {
			t.Errorf("build %s not completed", tr.BuildID)
			continue
		}
		if c.Result != build.ResultSuccess {
			t.Errorf("build %s result %s; want SUCCESS", tr.BuildID, c.Result)
		}
		e.checkRecordFirst(c)
	}
	time.Sleep(300 * time.Millisecond)
	if c := natstest.Count(t, e.js, subject.BuildsCompleted); c != n {
		t.Errorf("ci.builds.completed holds %d; want %d", c, n)
	}
	if pa, pb := a.metric("published_total", "subject", subject.BuildsCompleted), b.metric("published_total", "subject", subject.BuildsCompleted); pa != 0 || pb != n {
		t.Errorf("published: stopped replica %v, other %v; want 0 and %d", pa, pb, n)
	}
	if len(e.sim.Builds(jenkinsJob)) != n {
		t.Errorf("Jenkins ran %d builds; want %d", len(e.sim.Builds(jenkinsJob)), n)
	}
}
