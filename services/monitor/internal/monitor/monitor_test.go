package monitor_test

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gerritflow/gerritflow/pkg/build"
	"github.com/gerritflow/gerritflow/pkg/bus"
	"github.com/gerritflow/gerritflow/pkg/config"
	"github.com/gerritflow/gerritflow/pkg/jenkins"
	"github.com/gerritflow/gerritflow/pkg/jenkinssim"
	"github.com/gerritflow/gerritflow/pkg/natstest"
	"github.com/gerritflow/gerritflow/pkg/subject"
	"github.com/gerritflow/gerritflow/pkg/telemetry"
)

func TestJenkinsResultsAreRecordedThenPublished(t *testing.T) {
	e := newEnv(t, jenkinssim.Options{})
	r := e.replica(nil)
	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	want := map[string]string{}
	var first build.Triggered
	for i, res := range []string{"SUCCESS", "FAILURE", "UNSTABLE", "NOT_BUILT"} {
		tr := e.queue(jenkinssim.Outcome{Result: res, QueueDelay: 50 * time.Millisecond, Duration: 150 * time.Millisecond})
		e.publishTriggered(tr, bus.Traceparent, fmt.Sprintf("00-%s-00f067aa0ba902b%d-01", traceID, i))
		want[tr.BuildID] = res
		if i == 0 {
			first = tr
		}
	}
	got := e.completed(len(want), 15*time.Second)
	for id, res := range want {
		c, ok := got[id]
		if !ok {
			t.Errorf("build %s (%s) not completed", id, res)
			continue
		}
		if c.Result != res {
			t.Errorf("build %s result %s; want %s", id, c.Result, res)
		}
		if c.msgID != id+".completed" {
			t.Errorf("Msg-Id %q; want %q", c.msgID, id+".completed")
		}
		if c.Number == 0 || !strings.Contains(c.URL, "/job/folder/job/unit-tests/"+strconv.FormatInt(c.Number, 10)) {
			t.Errorf("build %s number %d url %q; want the Jenkins build", id, c.Number, c.URL)
		}
		if c.Duration != 150*time.Millisecond || !c.Voting || c.JenkinsJob != jenkinsJob || c.Job != "unit" {
			t.Errorf("completed %+v; want duration 150ms, voting, jenkins job %s, job unit", c.Completed, jenkinsJob)
		}
		if c.header.Get(bus.BuildSet) != c.BuildSet || c.header.Get(bus.Job) != "unit" ||
			c.header.Get(bus.GerritProject) != project || c.header.Get(bus.GerritChange) == "" {
			t.Errorf("headers %v; want Ci-Buildset, Ci-Job and Gerrit-*", c.header)
		}
		if tp := c.header.Get(bus.Traceparent); !strings.Contains(tp, traceID) {
			t.Errorf("completed traceparent %q; want the trace %s continued", tp, traceID)
		}
		e.checkRecordFirst(c)
	}

	// Each poll round is its own short span in the build's trace.
	var polls int
	for _, s := range r.spans.GetSpans() {
		if s.Name != "poll "+jenkinsJob {
			continue
		}
		polls++
		if s.SpanContext.TraceID().String() != traceID {
			t.Errorf("poll span in trace %s; want %s", s.SpanContext.TraceID(), traceID)
		}
		if d := s.EndTime.Sub(s.StartTime); d > 2*time.Second {
			t.Errorf("poll span lasted %v; want a short span per round", d)
		}
		attrs := map[string]string{}
		for _, a := range s.Attributes {
			attrs[string(a.Key)] = a.Value.Emit()
		}
		if attrs[string(telemetry.AttrBuildSet)] == "" || attrs[string(telemetry.AttrJob)] != "unit" {
			t.Errorf("poll span attributes %v; want ci.buildset and ci.job", attrs)
		}
	}
	if polls < 2*len(want) {
		t.Errorf("%d poll spans; want at least 2 per build (queue, then build)", polls)
	}
	if n := r.metric("completions_total", "result", "SUCCESS"); n != 1 {
		t.Errorf("completions_total{result=SUCCESS} = %v; want 1", n)
	}
	if n := r.metric("detect_delay_seconds"); n != 4 {
		t.Errorf("detect delay observed %v times; want 4", n)
	}
	if n := r.metric("jenkins_requests_total", "op", "get_build", "outcome", "ok"); n < 4 {
		t.Errorf("jenkins_requests_total{op=get_build} = %v; want at least 4", n)
	}
	eventually(t, "builds_in_flight 0", func() bool { return r.metric("builds_in_flight") == 0 })

	// A redelivered message (here: replayed) finds the record completed and
	// announces the same result without asking Jenkins.
	before := e.sim.Requests()
	e.publishTriggered(first, bus.Replay, "r1", bus.ReplayOf, "7", bus.MsgID, first.BuildID+".triggered.r1")
	msgs := natstest.Collect(t, e.js, subject.BuildsCompleted, len(want)+1, 10*time.Second)
	last := msgs[len(msgs)-1]
	var c build.Completed
	if err := build.Decode(last.Data(), &c); err != nil {
		t.Fatal(err)
	}
	if id := last.Headers().Get(bus.MsgID); id != first.BuildID+".completed.r1" || c.Result != "SUCCESS" || last.Headers().Get(bus.Replay) != "r1" {
		t.Errorf("replayed completion %s %s replay %q; want %s.completed.r1 SUCCESS replay r1", id, c.Result, last.Headers().Get(bus.Replay), first.BuildID)
	}
	if n := e.sim.Requests() - before; n != 0 {
		t.Errorf("announcing a completed record made %d Jenkins requests; want 0", n)
	}
}

func TestAbortedByUser(t *testing.T) {
	e := newEnv(t, jenkinssim.Options{})
	e.replica(nil)
	tr := e.trigger(jenkinssim.Outcome{QueueDelay: 10 * time.Millisecond, Duration: time.Minute})
	rec := e.waitState(tr.BuildID, build.StateRunning)
	if err := e.jk.StopBuild(t.Context(), jenkinsJob, rec.Number); err != nil {
		t.Fatal(err)
	}
	c := e.one(tr, 10*time.Second)
	if c.Result != build.ResultAborted || c.Number != rec.Number {
		t.Errorf("result %s #%d; want ABORTED #%d", c.Result, c.Number, rec.Number)
	}
	e.checkRecordFirst(c)
}

func TestQueueItemCancelledInJenkinsIsNotBuilt(t *testing.T) {
	e := newEnv(t, jenkinssim.Options{})
	r := e.replica(nil)
	tr := e.trigger(jenkinssim.Outcome{QueueDelay: time.Minute})
	eventually(t, "the item polled", func() bool { return r.metric("jenkins_requests_total", "op", "queue_item") > 0 })
	if err := e.jk.CancelQueueItem(t.Context(), tr.QueueID); err != nil {
		t.Fatal(err)
	}
	c := e.one(tr, 10*time.Second)
	if c.Result != build.ResultNotBuilt || c.Number != 0 {
		t.Errorf("result %s #%d; want NOT_BUILT without a build", c.Result, c.Number)
	}
	e.checkRecordFirst(c)
}

func TestForgottenQueueItemIsFoundByBuildID(t *testing.T) {
	e := newEnv(t, jenkinssim.Options{ForgetAfter: 50 * time.Millisecond})
	r := e.replica(nil)
	tr := e.queue(jenkinssim.Outcome{QueueDelay: -1, Duration: 400 * time.Millisecond})
	// The item leaves the queue at once and is forgotten before the monitor
	// ever sees the triggered message.
	eventually(t, "the queue item forgotten", func() bool { return e.queueItemGone(tr.QueueID) })
	e.publishTriggered(tr)
	c := e.one(tr, 10*time.Second)
	if c.Result != build.ResultSuccess || c.Number != 1 {
		t.Errorf("result %s #%d; want SUCCESS #1", c.Result, c.Number)
	}
	if n := r.metric("jenkins_requests_total", "op", "find", "outcome", "ok"); n < 1 {
		t.Errorf("FindByBuildID calls = %v; want at least 1", n)
	}
	e.checkRecordFirst(c)
}

func TestLost(t *testing.T) {
	e := newEnv(t, jenkinssim.Options{})
	r := e.replica(nil)
	unknownItem := e.fake(build.Build{State: build.StateQueued, QueueID: 424242})
	unknownBuild := e.fake(build.Build{State: build.StateRunning, QueueID: 434343, Number: 999})
	for _, tr := range []build.Triggered{unknownItem, unknownBuild} {
		e.publishTriggered(tr)
	}
	for _, tr := range []build.Triggered{unknownItem, unknownBuild} {
		c := e.one(tr, 10*time.Second)
		if c.Result != build.ResultLost {
			t.Errorf("build %s result %s; want LOST", tr.BuildID, c.Result)
		}
		e.checkRecordFirst(c)
	}
	// Grace: three polls in a row, each looking for the build id too.
	if n := r.metric("jenkins_requests_total", "op", "find"); n < 3 {
		t.Errorf("FindByBuildID calls = %v; want at least 3 before LOST", n)
	}
	if n := r.metric("jenkins_requests_total", "op", "get_build", "outcome", "not_found"); n < 3 {
		t.Errorf("GetBuild not found = %v; want 3 before LOST", n)
	}
}

// fake writes a build record Jenkins knows nothing of and returns its triggered body.
func (e *env) fake(rec build.Build) build.Triggered {
	e.t.Helper()
	change := 5000 + int(e.setSeq.Add(1))
	set := build.SetID(change, 1, "fake", "")
	rec.BuildSet, rec.Job, rec.JenkinsJob, rec.BuildID = set, "unit", jenkinsJob, subject.BuildKey(set, "unit")
	if _, err := e.builds.Create(e.t.Context(), rec.BuildID, build.Encode(rec)); err != nil {
		e.t.Fatal(err)
	}
	return build.Triggered{BuildSet: set, Job: "unit", JenkinsJob: jenkinsJob, BuildID: rec.BuildID, QueueID: rec.QueueID,
		Project: project, Change: change, PatchSet: 1}
}

func TestBuildTimeoutStopsTheBuild(t *testing.T) {
	e := newEnv(t, jenkinssim.Options{})
	e.replica(func(c *config.Config) { c.Monitor.BuildTimeout = config.Duration(300 * time.Millisecond) })
	tr := e.trigger(jenkinssim.Outcome{QueueDelay: 10 * time.Millisecond, Duration: time.Minute})
	c := e.one(tr, 10*time.Second)
	if c.Result != build.ResultTimedOut {
		t.Errorf("result %s; want TIMED_OUT", c.Result)
	}
	// Jenkins reports the start timestamp and the duration in whole
	// milliseconds, each truncated: a build stopped right at 300ms of the
	// monitor's clock can read 299ms. Stopped early would be far less.
	const granularity = 2 * time.Millisecond
	if c.Duration < 300*time.Millisecond-granularity || c.Duration > 10*time.Second {
		t.Errorf("duration %v; want about the 300ms timeout", c.Duration)
	}
	builds := e.sim.Builds(jenkinsJob)
	if len(builds) != 1 || builds[0].Result != "ABORTED" || builds[0].Building {
		t.Errorf("Jenkins builds %+v; want the one build stopped (ABORTED)", builds)
	}
	e.checkRecordFirst(c)
}

func TestCancelMessage(t *testing.T) {
	e := newEnv(t, jenkinssim.Options{})
	r := e.replica(nil)
	queued := e.trigger(jenkinssim.Outcome{QueueDelay: time.Minute})
	running := e.trigger(jenkinssim.Outcome{QueueDelay: 10 * time.Millisecond, Duration: time.Minute})
	eventually(t, "both followed", func() bool { return r.metric("builds_in_flight") == 2 })
	e.waitState(running.BuildID, build.StateRunning)

	e.publishCancel(queued, "superseded by patch set 2")
	e.publishCancel(running, "change abandoned")
	got := e.completed(2, 10*time.Second)
	for _, tc := range []struct {
		tr     build.Triggered
		reason string
	}{{queued, "superseded by patch set 2"}, {running, "change abandoned"}} {
		c := got[tc.tr.BuildID]
		if c.Result != build.ResultCanceled {
			t.Errorf("build %s result %q; want CANCELED", tc.tr.BuildID, c.Result)
		}
		e.checkRecordFirst(c)
		if rec := e.record(tc.tr.BuildID); rec.Cancel != tc.reason {
			t.Errorf("record cancel reason %q; want %q", rec.Cancel, tc.reason)
		}
	}
	if q := e.sim.Queued(jenkinsJob); len(q) != 0 {
		t.Errorf("Jenkins queue %+v; want the item cancelled", q)
	}
	builds := e.sim.Builds(jenkinsJob)
	if len(builds) != 1 || builds[0].Result != "ABORTED" {
		t.Errorf("Jenkins builds %+v; want only the running build, stopped", builds)
	}

	// A cancel for a build already completed, and one for a build never
	// recorded, change nothing and are acked.
	e.publishCancel(queued, "again")
	e.publishCancel(build.Triggered{BuildSet: "1-1-unknown", Job: "unit", JenkinsJob: jenkinsJob, BuildID: "1-1-unknown.unit", Change: 1}, "x")
	cons, err := e.js.Consumer(t.Context(), "CI_BUILDS", "monitor")
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "every message acked", func() bool {
		info, err := cons.Info(context.Background())
		return err == nil && info.NumAckPending == 0 && info.NumPending == 0
	})
	if rec := e.record(queued.BuildID); rec.Cancel != "superseded by patch set 2" || rec.Result != build.ResultCanceled {
		t.Errorf("record after a late cancel: %s cancel %q; want unchanged", rec.Result, rec.Cancel)
	}
	if n := natstest.Count(t, e.js, subject.DLQ("monitor")); n != 0 {
		t.Errorf("%d messages dead-lettered; want 0", n)
	}
	if n := natstest.Count(t, e.js, subject.BuildsCompleted); n != 2 {
		t.Errorf("%d completions; want 2", n)
	}
}

func TestPushNotificationPollsAtOnce(t *testing.T) {
	e := newEnv(t, jenkinssim.Options{})
	hour := config.Duration(time.Hour)
	r := e.replica(func(c *config.Config) { c.Monitor.PollInterval, c.Monitor.MaxPollInterval = hour, hour })
	byID := e.trigger(jenkinssim.Outcome{QueueDelay: 50 * time.Millisecond, Duration: 100 * time.Millisecond})
	byQueue := e.trigger(jenkinssim.Outcome{QueueDelay: 50 * time.Millisecond, Duration: 100 * time.Millisecond})
	requests := func() float64 { return r.metric("jenkins_requests_total") }
	// Each build is polled once on arrival; the next poll is an hour away.
	eventually(t, "first polls", func() bool { return requests() >= 2 })
	eventually(t, "both builds finished in Jenkins", func() bool {
		bs := e.sim.Builds(jenkinsJob)
		return len(bs) == 2 && bs[0].Result == "SUCCESS" && bs[1].Result == "SUCCESS"
	})
	base := requests()
	if base > 4 {
		t.Fatalf("%v Jenkins requests before any push; want at most 4 with an hour's poll interval", base)
	}

	post := func(body string) int {
		t.Helper()
		resp, err := http.Post("http://"+r.tel.Addr()+"/jenkins/notify", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	note := func(phase, buildID string, queueID int64) string {
		params := "{}"
		if buildID != "" {
			params = fmt.Sprintf(`{%q:%q,"GERRIT_CHANGE_NUMBER":"1"}`, jenkins.BuildIDParam, buildID)
		}
		return fmt.Sprintf(`{"name":"unit-tests","url":"job/folder/job/unit-tests/","build":{"full_url":"%s/job/folder/job/unit-tests/1/","number":1,"queue_id":%d,"phase":%q,"status":"SUCCESS","url":"job/folder/job/unit-tests/1/","parameters":%s}}`,
			e.url, queueID, phase, params)
	}
	if code := post(`{"build":`); code != http.StatusBadRequest {
		t.Errorf("malformed notification: %d; want 400", code)
	}
	if code := post(note("STARTED", byID.BuildID, 0)); code != http.StatusNoContent {
		t.Errorf("STARTED notification: %d; want 204 (ignored)", code)
	}
	if code := post(note("COMPLETED", "someone-else.unit", 99999)); code != http.StatusAccepted {
		t.Errorf("notification of a build not followed here: %d; want 202 (relayed to the other replicas)", code)
	}
	if n := requests(); n != base {
		t.Errorf("ignored notifications made %v Jenkins requests; want 0", n-base)
	}

	if code := post(note("COMPLETED", byID.BuildID, 0)); code != http.StatusAccepted {
		t.Errorf("COMPLETED notification: %d; want 202", code)
	}
	if code := post(note("FINALIZED", "", byQueue.QueueID)); code != http.StatusAccepted {
		t.Errorf("FINALIZED notification by queue id: %d; want 202", code)
	}
	got := e.completed(2, 10*time.Second)
	for _, tr := range []build.Triggered{byID, byQueue} {
		if c := got[tr.BuildID]; c.Result != build.ResultSuccess {
			t.Errorf("build %s result %q; want SUCCESS", tr.BuildID, c.Result)
		}
	}
	// The push brought each build to its end with at most a queue and a
	// build read: no periodic poll happened (the next one was an hour away).
	if n := requests() - base; n < 2 || n > 4 {
		t.Errorf("%v Jenkins requests after the push; want 2 to 4 (one or two per build)", n)
	}
	if n := r.metric("notifications_total", "outcome", "polled"); n != 2 {
		t.Errorf("notifications polled = %v; want 2", n)
	}
}

func TestJenkinsOutageIsRiddenOut(t *testing.T) {
	e := newEnv(t, jenkinssim.Options{})
	r := e.replica(nil)
	ok := e.trigger(jenkinssim.Outcome{QueueDelay: 10 * time.Millisecond, Duration: 200 * time.Millisecond})
	cancelled := e.trigger(jenkinssim.Outcome{QueueDelay: time.Minute})
	eventually(t, "both followed", func() bool { return r.metric("builds_in_flight") == 2 })
	e.sim.FailWith(http.StatusServiceUnavailable, 500*time.Millisecond) // "Jenkins is going to shut down"
	e.publishCancel(cancelled, "change abandoned")
	got := e.completed(2, 15*time.Second)
	if c := got[ok.BuildID]; c.Result != build.ResultSuccess {
		t.Errorf("build polled through the outage: %q; want SUCCESS", c.Result)
	}
	if c := got[cancelled.BuildID]; c.Result != build.ResultCanceled {
		t.Errorf("build cancelled during the outage: %q; want CANCELED (the cancel retried)", c.Result)
	}
	if n := r.metric("jenkins_requests_total", "outcome", "error"); n == 0 {
		t.Error("no failed Jenkins request counted; want the outage seen")
	}
	if n := r.metric("messages_total", "outcome", "nak"); n == 0 {
		t.Error("the cancel was never retried; want a nak while Jenkins was down")
	}
	if n := natstest.Count(t, e.js, subject.DLQ("monitor")); n != 0 {
		t.Errorf("%d messages dead-lettered; want 0", n)
	}
}

// TestNotificationReachesTheReplicaThatFollows posts Jenkins notifications to
// a replica that follows none of the builds (as a load balancer in front of
// the replicas may): it relays them over NATS, and the replica that follows
// them polls at once, an hour before its next poll was due.
func TestNotificationReachesTheReplicaThatFollows(t *testing.T) {
	e := newEnv(t, jenkinssim.Options{})
	hour := config.Duration(time.Hour)
	slow := func(c *config.Config) { c.Monitor.PollInterval, c.Monitor.MaxPollInterval = hour, hour }
	follower := e.replica(slow)
	const n = 4
	var trs []build.Triggered
	for i := 0; i < n; i++ {
		trs = append(trs, e.trigger(jenkinssim.Outcome{QueueDelay: 20 * time.Millisecond, Duration: 50 * time.Millisecond}))
	}
	eventually(t, "the follower follows every build", func() bool { return follower.metric("builds_in_flight") == n })
	eventually(t, "the builds finished in Jenkins", func() bool {
		bs := e.sim.Builds(jenkinsJob)
		return len(bs) == n && bs[n-1].Result == "SUCCESS"
	})
	receiver := e.replica(slow) // every message is taken: it follows nothing
	for _, tr := range trs {
		body := fmt.Sprintf(`{"name":"unit-tests","build":{"number":1,"queue_id":%d,"phase":"COMPLETED","parameters":{%q:%q}}}`,
			tr.QueueID, jenkins.BuildIDParam, tr.BuildID)
		resp, err := http.Post("http://"+receiver.tel.Addr()+"/jenkins/notify", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted {
			t.Errorf("notification for %s: %d; want 202", tr.BuildID, resp.StatusCode)
		}
	}
	got := e.completed(n, 10*time.Second)
	for _, tr := range trs {
		if got[tr.BuildID].Result != build.ResultSuccess {
			t.Errorf("build %s: result %q; want SUCCESS", tr.BuildID, got[tr.BuildID].Result)
		}
	}
	if v := receiver.metric("notifications_total", "outcome", "relayed"); v != n {
		t.Errorf("receiver relayed %v notifications; want %d", v, n)
	}
	if v := follower.metric("notifications_total", "outcome", "polled_for_peer"); v != n {
		t.Errorf("follower polled %v builds on a relayed notification; want %d", v, n)
	}
	if v := receiver.metric("jenkins_requests_total"); v != 0 {
		t.Errorf("the receiver made %v Jenkins requests; want 0", v)
	}
}
