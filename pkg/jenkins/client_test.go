package jenkins_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/gerritflow/gerritflow/pkg/jenkins"
	"github.com/gerritflow/gerritflow/pkg/jenkinssim"
	"github.com/gerritflow/gerritflow/pkg/stage"
)

const (
	unitJob = "folder/unit-tests"
	token   = "secret-token"
)

// clock is the simulator's injected clock: builds progress only when a test
// moves it.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

type env struct {
	sim *jenkinssim.Server
	c   *jenkins.Client
	clk *clock
}

func setup(t *testing.T, opts jenkinssim.Options) env {
	t.Helper()
	clk := newClock()
	if opts.Now == nil {
		opts.Now = clk.Now
	}
	if opts.ForgetAfter == 0 {
		opts.ForgetAfter = time.Minute
	}
	sim := jenkinssim.Start(t, opts)
	sim.AddJob(unitJob, jenkins.BuildIDParam, "GERRIT_PROJECT", "GERRIT_CHANGE_NUMBER")
	c, err := jenkins.New(t.Context(), sim.URL(), "ci", token, nil)
	if err != nil {
		t.Fatalf("New(%s) = %v", sim.URL(), err)
	}
	return env{sim: sim, c: c, clk: clk}
}

func params(buildID string) map[string]string {
	return map[string]string{jenkins.BuildIDParam: buildID, "GERRIT_PROJECT": "platform/core", "GERRIT_CHANGE_NUMBER": "42"}
}

func mustBuild(t *testing.T, e env, p map[string]string) int64 {
	t.Helper()
	id, err := e.c.Build(t.Context(), unitJob, p)
	if err != nil {
		t.Fatalf("Build(%s, %v) = %v", unitJob, p, err)
	}
	return id
}

func TestNewAuthFailure(t *testing.T) {
	sim := jenkinssim.Start(t)
	const wrong = "wrong-token-0123456789"
	_, err := jenkins.New(t.Context(), sim.URL(), "ci", wrong, nil)
	if err == nil {
		t.Fatal("New with a wrong token = nil error; want 401")
	}
	var se *jenkins.StatusError
	if !errors.As(err, &se) || se.Code != http.StatusUnauthorized {
		t.Errorf("New with a wrong token = %v; want a 401 StatusError", err)
	}
	if !stage.IsPermanent(err) {
		t.Errorf("New with a wrong token = %v; want a permanent error", err)
	}
	if strings.Contains(err.Error(), wrong) {
		t.Errorf("error %q contains the token", err)
	}
	if _, err := jenkins.New(t.Context(), sim.URL(), "ci", token, nil); err != nil {
		t.Errorf("New with the right token = %v", err)
	}
}

func TestNewRejectsCredentialsInURL(t *testing.T) {
	sim := jenkinssim.Start(t)
	u := strings.Replace(sim.URL(), "http://", "http://ci:"+token+"@", 1)
	_, err := jenkins.New(t.Context(), u, "ci", token, nil)
	if err == nil || strings.Contains(err.Error(), token) {
		t.Errorf("New(url with credentials) = %v; want an error without the token", err)
	}
}

func TestCrumbFlow(t *testing.T) {
	e := setup(t, jenkinssim.Options{RequireCrumb: true})

	// The simulator refuses a POST without a crumb.
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, e.sim.URL()+"/job/folder/job/unit-tests/buildWithParameters", nil)
	req.SetBasicAuth("ci", token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("POST without crumb: status %d; want 403", resp.StatusCode)
	}

	before := e.sim.Requests()
	id1 := mustBuild(t, e, params("b1"))
	if got := e.sim.Requests() - before; got != 3 {
		t.Errorf("first Build made %d requests; want 3 (403, crumb, retry)", got)
	}
	before = e.sim.Requests()
	id2 := mustBuild(t, e, params("b2"))
	if got := e.sim.Requests() - before; got != 1 {
		t.Errorf("second Build made %d requests; want 1 (crumb kept)", got)
	}
	if id1 == id2 || e.sim.BuildRequests(unitJob) != 2 {
		t.Errorf("ids %d, %d, BuildRequests %d; want two distinct items", id1, id2, e.sim.BuildRequests(unitJob))
	}
	if err := e.c.CancelQueueItem(t.Context(), id1); err != nil {
		t.Errorf("CancelQueueItem with crumb = %v", err)
	}
	if qi, err := e.c.QueueItem(t.Context(), id1); err != nil || !qi.Cancelled {
		t.Errorf("QueueItem(%d) = %+v, %v; want cancelled", id1, qi, err)
	}
}

func TestBuildDistinctQueueIDs(t *testing.T) {
	e := setup(t, jenkinssim.Options{})
	id1 := mustBuild(t, e, params("b1"))
	id2 := mustBuild(t, e, params("b2"))
	if id1 <= 0 || id2 <= 0 || id1 == id2 {
		t.Fatalf("Build ids %d, %d; want two distinct positive ids", id1, id2)
	}
	if n := e.sim.BuildRequests(unitJob); n != 2 {
		t.Errorf("BuildRequests = %d; want 2", n)
	}
	if q := e.sim.Queued(unitJob); len(q) != 2 || q[0].QueueID != id1 || q[1].QueueID != id2 {
		t.Errorf("Queued = %+v; want items %d and %d", q, id1, id2)
	}
}

func TestIdenticalQueuedRequestIsMerged(t *testing.T) {
	e := setup(t, jenkinssim.Options{})
	id1 := mustBuild(t, e, params("b1"))
	id2 := mustBuild(t, e, params("b1"))
	if id2 != id1 {
		t.Errorf("identical request while waiting: id %d; want the existing item %d (303)", id2, id1)
	}
	if n := e.sim.BuildRequests(unitJob); n != 1 {
		t.Errorf("BuildRequests = %d; want 1", n)
	}
	// Once the item left the queue, the same request queues a new item.
	e.clk.Add(150 * time.Millisecond)
	id3 := mustBuild(t, e, params("b1"))
	if id3 == id1 || e.sim.BuildRequests(unitJob) != 2 {
		t.Errorf("identical request after start: id %d (first %d), BuildRequests %d; want a new item", id3, id1, e.sim.BuildRequests(unitJob))
	}
}

func TestUndeclaredParametersAreDropped(t *testing.T) {
	e := setup(t, jenkinssim.Options{})
	id := mustBuild(t, e, map[string]string{jenkins.BuildIDParam: "b1", "NOT_DECLARED": "x"})
	qi, err := e.c.QueueItem(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{jenkins.BuildIDParam: "b1", "GERRIT_PROJECT": "", "GERRIT_CHANGE_NUMBER": ""}
	if diff := cmp.Diff(want, qi.Params); diff != "" {
		t.Errorf("queue item params (-want +got):\n%s", diff)
	}
}

func TestJobParameters(t *testing.T) {
	e := setup(t, jenkinssim.Options{})
	got, err := e.c.JobParameters(t.Context(), unitJob)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{jenkins.BuildIDParam, "GERRIT_PROJECT", "GERRIT_CHANGE_NUMBER"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("JobParameters (-want +got):\n%s", diff)
	}
}

func TestQueueItemBecomesBuild(t *testing.T) {
	e := setup(t, jenkinssim.Options{})
	t0 := e.clk.Now()
	id := mustBuild(t, e, params("b1"))

	qi, err := e.c.QueueItem(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	if qi.ID != id || qi.BuildNumber != 0 || qi.Cancelled || qi.Why == "" {
		t.Errorf("waiting QueueItem = %+v; want id %d, no build, a reason", qi, id)
	}

	e.clk.Add(100 * time.Millisecond)
	qi, err = e.c.QueueItem(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	wantURL := e.sim.URL() + "/job/folder/job/unit-tests/1/"
	if qi.BuildNumber != 1 || qi.BuildURL != wantURL {
		t.Fatalf("started QueueItem = %+v; want build 1 at %s", qi, wantURL)
	}

	b, err := e.c.GetBuild(t.Context(), unitJob, 1)
	if err != nil {
		t.Fatal(err)
	}
	if !b.Building || b.Result != "" || b.Duration != 0 {
		t.Errorf("running build = %+v; want building, no result", b)
	}

	e.clk.Add(200 * time.Millisecond)
	b, err = e.c.GetBuild(t.Context(), unitJob, 1)
	if err != nil {
		t.Fatal(err)
	}
	want := jenkins.Build{
		Job: unitJob, Number: 1, URL: wantURL, Result: "SUCCESS", Duration: 200 * time.Millisecond,
		QueueID: id, Params: params("b1"), Timestamp: t0.Add(100 * time.Millisecond),
	}
	if diff := cmp.Diff(want, b); diff != "" {
		t.Errorf("finished build (-want +got):\n%s", diff)
	}
}

func TestScriptedResults(t *testing.T) {
	e := setup(t, jenkinssim.Options{})
	e.sim.Script(unitJob, func(p map[string]string) jenkinssim.Outcome {
		if p[jenkins.BuildIDParam] == "bad" {
			return jenkinssim.Outcome{Result: "FAILURE", Duration: time.Second, EstimatedDuration: 3 * time.Second}
		}
		return jenkinssim.Outcome{Result: "UNSTABLE", QueueDelay: time.Second}
	})
	mustBuild(t, e, params("bad"))
	mustBuild(t, e, params("meh"))
	e.clk.Add(2 * time.Second)

	for _, tc := range []struct {
		n        int64
		result   string
		duration time.Duration
		estimate time.Duration
	}{
		{1, "FAILURE", time.Second, 3 * time.Second},
		{2, "UNSTABLE", 200 * time.Millisecond, 0},
	} {
		b, err := e.c.GetBuild(t.Context(), unitJob, tc.n)
		if err != nil {
			t.Fatal(err)
		}
		if b.Result != tc.result || b.Duration != tc.duration || b.EstimatedDuration != tc.estimate || b.Building {
			t.Errorf("build #%d = %+v; want %s after %v, estimate %v", tc.n, b, tc.result, tc.duration, tc.estimate)
		}
	}
}

func TestCancelQueueItem(t *testing.T) {
	e := setup(t, jenkinssim.Options{})
	id := mustBuild(t, e, params("b1"))
	if err := e.c.CancelQueueItem(t.Context(), id); err != nil {
		t.Fatalf("CancelQueueItem(%d) = %v", id, err)
	}
	e.clk.Add(time.Second) // long past its start time
	qi, err := e.c.QueueItem(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	if !qi.Cancelled || qi.BuildNumber != 0 {
		t.Errorf("cancelled QueueItem = %+v; want cancelled, no build", qi)
	}
	if b := e.sim.Builds(unitJob); len(b) != 0 {
		t.Errorf("builds after cancel = %+v; want none", b)
	}
	// Jenkins answers 500 for a remembered left item, then 404: both are "gone".
	if err := e.c.CancelQueueItem(t.Context(), id); err != nil {
		t.Errorf("second CancelQueueItem(%d) = %v; want nil", id, err)
	}
	e.clk.Add(time.Minute)
	if err := e.c.CancelQueueItem(t.Context(), id); err != nil {
		t.Errorf("CancelQueueItem(%d) of a forgotten item = %v; want nil", id, err)
	}
	if err := e.c.CancelQueueItem(t.Context(), 9999); err != nil {
		t.Errorf("CancelQueueItem(unknown) = %v; want nil", err)
	}
}

func TestCancelStartedItemLeavesBuildRunning(t *testing.T) {
	e := setup(t, jenkinssim.Options{})
	id := mustBuild(t, e, params("b1"))
	e.clk.Add(150 * time.Millisecond)
	if err := e.c.CancelQueueItem(t.Context(), id); err != nil {
		t.Errorf("CancelQueueItem(%d) of a started item = %v; want nil", id, err)
	}
	b, err := e.c.GetBuild(t.Context(), unitJob, 1)
	if err != nil || !b.Building {
		t.Errorf("build after cancelling its started item = %+v, %v; want still building", b, err)
	}
}

func TestStopBuild(t *testing.T) {
	e := setup(t, jenkinssim.Options{})
	e.sim.Script(unitJob, func(map[string]string) jenkinssim.Outcome { return jenkinssim.Outcome{Duration: time.Hour} })
	mustBuild(t, e, params("b1"))
	e.clk.Add(time.Second)
	if err := e.c.StopBuild(t.Context(), unitJob, 1); err != nil {
		t.Fatalf("StopBuild = %v", err)
	}
	b, err := e.c.GetBuild(t.Context(), unitJob, 1)
	if err != nil {
		t.Fatal(err)
	}
	if b.Building || b.Result != "ABORTED" || b.Duration != 900*time.Millisecond {
		t.Errorf("stopped build = %+v; want ABORTED after 900ms", b)
	}
	if err := e.c.StopBuild(t.Context(), unitJob, 1); err != nil {
		t.Errorf("StopBuild of a finished build = %v; want nil", err)
	}
	err = e.c.StopBuild(t.Context(), unitJob, 7)
	if !errors.Is(err, jenkins.ErrNotFound) || !stage.IsPermanent(err) {
		t.Errorf("StopBuild(unknown build) = %v; want permanent ErrNotFound", err)
	}
}

func TestFindByBuildID(t *testing.T) {
	e := setup(t, jenkinssim.Options{})
	e.sim.AddJob("other", jenkins.BuildIDParam)
	if _, err := e.c.Build(t.Context(), "other", map[string]string{jenkins.BuildIDParam: "b1"}); err != nil {
		t.Fatal(err)
	}
	mustBuild(t, e, params("b0"))
	id := mustBuild(t, e, params("b1"))

	ref, ok, err := e.c.FindByBuildID(t.Context(), unitJob, "b1")
	if err != nil || !ok || ref != (jenkins.Ref{QueueID: id}) {
		t.Errorf("FindByBuildID(queued) = %+v, %v, %v; want queue item %d", ref, ok, err, id)
	}

	e.clk.Add(time.Second)
	ref, ok, err = e.c.FindByBuildID(t.Context(), unitJob, "b1")
	want := jenkins.Ref{QueueID: id, Number: 2, URL: e.sim.URL() + "/job/folder/job/unit-tests/2/"}
	if err != nil || !ok || ref != want {
		t.Errorf("FindByBuildID(finished) = %+v, %v, %v; want %+v", ref, ok, err, want)
	}

	if ref, ok, err := e.c.FindByBuildID(t.Context(), unitJob, "nope"); err != nil || ok {
		t.Errorf("FindByBuildID(unknown) = %+v, %v, %v; want not found", ref, ok, err)
	}
	_, _, err = e.c.FindByBuildID(t.Context(), "no/such-job", "b1")
	if !stage.IsPermanent(err) || !errors.Is(err, jenkins.ErrNotFound) {
		t.Errorf("FindByBuildID(unknown job) = %v; want permanent ErrNotFound", err)
	}
}

func TestForgottenQueueItem(t *testing.T) {
	e := setup(t, jenkinssim.Options{})
	id := mustBuild(t, e, params("b1"))
	e.clk.Add(100*time.Millisecond + time.Minute - time.Millisecond)
	if _, err := e.c.QueueItem(t.Context(), id); err != nil {
		t.Fatalf("QueueItem just before ForgetAfter = %v", err)
	}
	e.clk.Add(time.Millisecond)
	_, err := e.c.QueueItem(t.Context(), id)
	if !errors.Is(err, jenkins.ErrNotFound) {
		t.Errorf("QueueItem(forgotten) = %v; want ErrNotFound", err)
	}
	if !strings.Contains(err.Error(), "queue item") {
		t.Errorf("error %q does not name the queue item", err)
	}
}

func TestUnknownJobIsPermanent(t *testing.T) {
	e := setup(t, jenkinssim.Options{})
	_, err := e.c.Build(t.Context(), "folder/no-such-job", params("b1"))
	if !stage.IsPermanent(err) || !errors.Is(err, jenkins.ErrNotFound) {
		t.Errorf("Build(unknown job) = %v; want permanent ErrNotFound", err)
	}
	if !strings.Contains(err.Error(), "folder/no-such-job") {
		t.Errorf("error %q does not name the job", err)
	}
	if _, err := e.c.JobParameters(t.Context(), "folder/no-such-job"); !stage.IsPermanent(err) {
		t.Errorf("JobParameters(unknown job) = %v; want permanent", err)
	}
	if _, err := e.c.GetBuild(t.Context(), unitJob, 3); !errors.Is(err, jenkins.ErrNotFound) || !stage.IsPermanent(err) {
		t.Errorf("GetBuild(unknown build) = %v; want permanent ErrNotFound", err)
	}
}

func TestJobWithoutParametersIsPermanent(t *testing.T) {
	e := setup(t, jenkinssim.Options{})
	e.sim.AddJob("plain")
	_, err := e.c.Build(t.Context(), "plain", params("b1"))
	if !stage.IsPermanent(err) {
		t.Errorf("Build(job without parameters) = %v; want permanent", err)
	}
}

func TestServerErrorsAreTransient(t *testing.T) {
	e := setup(t, jenkinssim.Options{})
	id := mustBuild(t, e, params("b1"))
	e.sim.FailWith(http.StatusServiceUnavailable, time.Minute)

	_, err := e.c.Build(t.Context(), unitJob, params("b2"))
	assertTransient(t, "Build", err, http.StatusServiceUnavailable)
	_, err = e.c.QueueItem(t.Context(), id)
	assertTransient(t, "QueueItem", err, http.StatusServiceUnavailable)
	_, _, err = e.c.FindByBuildID(t.Context(), unitJob, "b1")
	assertTransient(t, "FindByBuildID", err, http.StatusServiceUnavailable)
	err = e.c.CancelQueueItem(t.Context(), id)
	assertTransient(t, "CancelQueueItem", err, http.StatusServiceUnavailable)
	_, err = jenkins.New(t.Context(), e.sim.URL(), "ci", token, nil)
	assertTransient(t, "New", err, http.StatusServiceUnavailable)
	if err != nil && strings.Contains(err.Error(), token) {
		t.Errorf("error %q contains the token", err)
	}

	e.sim.FailWith(0, 0)
	if _, err := e.c.QueueItem(t.Context(), id); err != nil {
		t.Errorf("QueueItem after recovery = %v", err)
	}
}

func TestHangingJenkinsTimesOut(t *testing.T) {
	e := setup(t, jenkinssim.Options{})
	id := mustBuild(t, e, params("b1"))
	e.sim.FailWith(0, 10*time.Second)
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	_, err := e.c.QueueItem(ctx, id)
	if !errors.Is(err, context.DeadlineExceeded) || stage.IsPermanent(err) {
		t.Errorf("QueueItem against a hanging Jenkins = %v; want a transient deadline error", err)
	}
	ctx2, cancel2 := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel2()
	if _, err := e.c.Build(ctx2, unitJob, params("b2")); !errors.Is(err, context.DeadlineExceeded) || stage.IsPermanent(err) {
		t.Errorf("Build against a hanging Jenkins = %v; want a transient deadline error", err)
	}
	e.sim.FailWith(0, 0)
}

func TestUnreachableJenkinsIsTransient(t *testing.T) {
	sim := jenkinssim.Start(t)
	u := sim.URL()
	if err := sim.Close(); err != nil {
		t.Fatal(err)
	}
	_, err := jenkins.New(t.Context(), u, "ci", token, nil)
	if err == nil || stage.IsPermanent(err) {
		t.Errorf("New(closed server) = %v; want a transient error", err)
	}
}

func assertTransient(t *testing.T, op string, err error, code int) {
	t.Helper()
	var se *jenkins.StatusError
	if err == nil || stage.IsPermanent(err) || !errors.As(err, &se) || se.Code != code {
		t.Errorf("%s during a %d outage = %v; want a transient StatusError %d", op, code, err, code)
	}
}
