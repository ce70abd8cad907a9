package jenkins_test

import (
	"context"
	"testing"
	"time"

	"github.com/bndr/gojenkins"

	"github.com/gerritflow/gerritflow/pkg/jenkins"
	"github.com/gerritflow/gerritflow/pkg/jenkinssim"
)

// These tests pin the gojenkins v1.2.0 traps listed in DESIGN.md against the
// simulator: they prove the simulator is faithful enough to show them, and that
// the adapter does not fall into them.

func gojenkinsClient(t *testing.T, sim *jenkinssim.Server) *gojenkins.Jenkins {
	t.Helper()
	jk, err := gojenkins.CreateJenkins(nil, sim.URL(), sim.User(), sim.Token()).Init(t.Context())
	if err != nil {
		t.Fatalf("gojenkins Init = %v", err)
	}
	return jk
}

func TestGojenkinsBuildJobTrap(t *testing.T) {
	clk := newClock()
	sim := jenkinssim.Start(t, jenkinssim.Options{Now: clk.Now})
	sim.AddJob("plain", jenkins.BuildIDParam)
	jk := gojenkinsClient(t, sim)
	ctx := t.Context()
	p := map[string]string{jenkins.BuildIDParam: "b1"}

	id1, err := jk.BuildJob(ctx, "plain", p)
	if err != nil || id1 <= 0 {
		t.Fatalf("first BuildJob = %d, %v; want a queue id", id1, err)
	}
	// The trap: an identical request while the item waits returns 0 and no error.
	id2, err := jk.BuildJob(ctx, "plain", p)
	if id2 != 0 || err != nil {
		t.Errorf("identical BuildJob = %d, %v; want the trap 0, nil", id2, err)
	}
	// Worse than documented: IsQueued makes ANY request return 0 while an item waits.
	id3, err := jk.BuildJob(ctx, "plain", map[string]string{jenkins.BuildIDParam: "b2"})
	if id3 != 0 || err != nil {
		t.Errorf("different BuildJob while an item waits = %d, %v; want the trap 0, nil", id3, err)
	}
	if n := sim.BuildRequests("plain"); n != 1 {
		t.Errorf("BuildRequests = %d; want 1 (gojenkins queued nothing)", n)
	}

	// The adapter reads the 303's Location: the existing item, nothing queued;
	// a different request is queued.
	c, err := jenkins.New(ctx, sim.URL(), sim.User(), sim.Token(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := c.Build(ctx, "plain", p); err != nil || got != id1 {
		t.Errorf("adapter Build(identical) = %d, %v; want %d", got, err, id1)
	}
	if got, err := c.Build(ctx, "plain", map[string]string{jenkins.BuildIDParam: "b2"}); err != nil || got == id1 || got == 0 {
		t.Errorf("adapter Build(different) = %d, %v; want a new item", got, err)
	}
	if n := sim.BuildRequests("plain"); n != 2 {
		t.Errorf("BuildRequests = %d; want 2", n)
	}
}

func TestGojenkinsTaskCancelReportsFalse(t *testing.T) {
	clk := newClock()
	sim := jenkinssim.Start(t, jenkinssim.Options{Now: clk.Now})
	sim.AddJob("plain", jenkins.BuildIDParam)
	jk := gojenkinsClient(t, sim)
	ctx := t.Context()
	id, err := jk.BuildJob(ctx, "plain", map[string]string{jenkins.BuildIDParam: "b1"})
	if err != nil {
		t.Fatal(err)
	}
	task, err := jk.GetQueueItem(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	ok, err := task.Cancel(ctx)
	if ok || err != nil {
		t.Errorf("Task.Cancel = %v, %v; want the trap false, nil (Jenkins answers 204)", ok, err)
	}
	if q := sim.Queued("plain"); len(q) != 0 {
		t.Errorf("queue after Task.Cancel = %+v; want empty (it was cancelled)", q)
	}
}

func TestGojenkinsBuildStopReportsError(t *testing.T) {
	clk := newClock()
	sim := jenkinssim.Start(t, jenkinssim.Options{Now: clk.Now})
	sim.AddJob("plain", jenkins.BuildIDParam)
	sim.Script("plain", func(map[string]string) jenkinssim.Outcome { return jenkinssim.Outcome{Duration: time.Hour} })
	jk := gojenkinsClient(t, sim)
	ctx := t.Context()
	if _, err := jk.BuildJob(ctx, "plain", map[string]string{jenkins.BuildIDParam: "b1"}); err != nil {
		t.Fatal(err)
	}
	clk.Add(time.Second)
	b, err := jk.GetBuild(ctx, "plain", 1) // requests /job/plain//1/api/json, as on Jenkins
	if err != nil {
		t.Fatalf("gojenkins GetBuild = %v", err)
	}
	if !b.Raw.Building || b.GetBuildNumber() != 1 {
		t.Fatalf("gojenkins build = building %v number %d; want running #1", b.Raw.Building, b.GetBuildNumber())
	}
	ok, err := b.Stop(ctx)
	if err == nil {
		t.Errorf("Build.Stop = %v, nil; want the trap: a JSON error after the 302 to an HTML page", ok)
	}
	if got := sim.Builds("plain"); len(got) != 1 || got[0].Result != "ABORTED" {
		t.Errorf("builds after Build.Stop = %+v; want #1 ABORTED", got)
	}
}

func TestGojenkinsGetBuildFromQueueIDLoopsOnCancelledItem(t *testing.T) {
	clk := newClock()
	sim := jenkinssim.Start(t, jenkinssim.Options{Now: clk.Now})
	sim.AddJob("plain", jenkins.BuildIDParam)
	jk := gojenkinsClient(t, sim)
	id, err := jk.BuildJob(t.Context(), "plain", map[string]string{jenkins.BuildIDParam: "b1"})
	if err != nil {
		t.Fatal(err)
	}
	c, err := jenkins.New(t.Context(), sim.URL(), sim.User(), sim.Token(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.CancelQueueItem(t.Context(), id); err != nil {
		t.Fatal(err)
	}
	clk.Add(time.Minute) // long past its start: still a remembered, cancelled LeftItem
	job, err := jk.GetJob(t.Context(), "plain")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 1200*time.Millisecond)
	defer cancel()
	start := time.Now()
	b, err := jk.GetBuildFromQueueID(ctx, job, id)
	if err == nil || time.Since(start) < time.Second {
		t.Errorf("GetBuildFromQueueID(cancelled) = %v, %v after %v; want it to poll until the context ends", b, err, time.Since(start))
	}
}

func TestGojenkinsCrumbFlowWorksAgainstSimulator(t *testing.T) {
	clk := newClock()
	sim := jenkinssim.Start(t, jenkinssim.Options{Now: clk.Now, RequireCrumb: true})
	sim.AddJob("plain", jenkins.BuildIDParam)
	jk := gojenkinsClient(t, sim)
	id, err := jk.BuildJob(t.Context(), "plain", map[string]string{jenkins.BuildIDParam: "b1"})
	if err != nil || id <= 0 || sim.BuildRequests("plain") != 1 {
		t.Errorf("gojenkins BuildJob with crumbs = %d, %v (BuildRequests %d); want a queued item", id, err, sim.BuildRequests("plain"))
	}
}
