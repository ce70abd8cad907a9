package trigger

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/gerritflow/gerritflow/pkg/build"
	"github.com/gerritflow/gerritflow/pkg/bus"
	"github.com/gerritflow/gerritflow/pkg/config"
	"github.com/gerritflow/gerritflow/pkg/event"
	"github.com/gerritflow/gerritflow/pkg/gerrit"
	"github.com/gerritflow/gerritflow/pkg/gerritsim"
	"github.com/gerritflow/gerritflow/pkg/jenkins"
	"github.com/gerritflow/gerritflow/pkg/jenkinssim"
	"github.com/gerritflow/gerritflow/pkg/natstest"
	"github.com/gerritflow/gerritflow/pkg/stage"
	"github.com/gerritflow/gerritflow/pkg/subject"
	"github.com/gerritflow/gerritflow/pkg/telemetry"
	"github.com/gerritflow/gerritflow/streams"
)

var buildParams = []string{"GERRITFLOW_BUILD_ID", "GERRIT_PROJECT", "GERRIT_BRANCH", "GERRIT_CHANGE_NUMBER", "GERRIT_PATCHSET_NUMBER",
	"GERRIT_PATCHSET_REVISION", "GERRIT_REFSPEC", "GERRIT_EVENT_TYPE", "GERRIT_CHANGE_ID"}

type env struct {
	t      *testing.T
	js     jetstream.JetStream
	jk     *jenkinssim.Server
	gerrit *gerritsim.Server
	h      *Handler
	b      Buckets
	cfg    *config.Config
	tel    *telemetry.Telemetry
}

func newEnv(t *testing.T) *env {
	t.Helper()
	_, js := natstest.JetStream(t)
	jk := jenkinssim.Start(t)
	jk.AddJob("folder/unit-tests", buildParams...)
	jk.AddJob("lint", buildParams...)
	jk.AddJob("gate", buildParams...)
	g := gerritsim.Start(t, gerritsim.Options{FirstChange: 1234})
	ctx := context.Background()
	client, err := jenkins.New(ctx, jk.URL(), jk.User(), jk.Token(), nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := openBuckets(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse(strings.NewReader(`
gerrit: { url: ` + g.URL() + `, user: ci }
jobs:
  - name: unit
    jenkins_job: folder/unit-tests
    events:
      - { type: patchset-created, exclude_trivial_rebase: true }
      - { type: comment-added, comment: '(?mi)^\s*recheck\s*$' }
    projects: [ "platform/core" ]
  - name: lint
    jenkins_job: lint
    events: [ { type: patchset-created } ]
    projects: [ "glob:platform/**" ]
    voting: false
    cancel_on_merge: true
  - name: gate
    jenkins_job: gate
    events: [ { type: change-merged } ]
    projects: [ "platform/core" ]
  - name: docs
    jenkins_job: lint
    events: [ { type: patchset-created } ]
    projects: [ "docs/site" ]
    files: [ "glob:docs/**", "mkdocs.yml" ]
`))
	if err != nil {
		t.Fatal(err)
	}
	tel, err := telemetry.Start(ctx, "trigger", config.Otel{}, "", telemetry.WithLogOutput(io.Discard))
	if err != nil {
		t.Fatal(err)
	}
	files, err := gerrit.New(ctx, g.URL(), gerritsim.DefaultUser, config.Secret(gerritsim.DefaultPassword), nil)
	if err != nil {
		t.Fatal(err)
	}
	h, err := New(cfg, client, files, b, tel)
	if err != nil {
		t.Fatal(err)
	}
	return &env{t: t, js: js, jk: jk, gerrit: g, h: h, b: b, cfg: cfg, tel: tel}
}

func (e *env) handle(data []byte, hdr nats.Header) []stage.Out {
	e.t.Helper()
	outs, err := e.try(data, hdr)
	if err != nil {
		e.t.Fatalf("Handle = %v", err)
	}
	return outs
}

func (e *env) try(data []byte, hdr nats.Header) ([]stage.Out, error) {
	if hdr == nil {
		hdr = nats.Header{}
	}
	return e.h.Handle(context.Background(), stage.Msg{Data: data, Header: hdr, Delivered: 1, Log: slog.New(slog.DiscardHandler)})
}

func (e *env) upload(u gerritsim.Upload) (int, int, []byte) {
	e.t.Helper()
	if u.Project == "" {
		u.Project = "platform/core"
	}
	c, ps, ev, err := e.gerrit.Upload(u)
	if err != nil {
		e.t.Fatal(err)
	}
	return c, ps, ev
}

func bySubject(outs []stage.Out, subj string) []stage.Out {
	var r []stage.Out
	for _, o := range outs {
		if o.Subject == subj {
			r = append(r, o)
		}
	}
	return r
}

func TestPatchsetStartsOneBuildPerJobWithPluginParameters(t *testing.T) {
	e := newEnv(t)
	change, _, evData := e.upload(gerritsim.Upload{Branch: "main"})
	outs := e.handle(evData, nil)
	trig := bySubject(outs, subject.BuildsTriggered)
	if len(trig) != 2 {
		t.Fatalf("triggered = %d messages; want 2 (unit, lint): %+v", len(trig), outs)
	}
	if n := e.jk.BuildRequests("folder/unit-tests"); n != 1 {
		t.Errorf("unit-tests build requests = %d; want 1", n)
	}
	if n := e.jk.BuildRequests("lint"); n != 1 {
		t.Errorf("lint build requests = %d; want 1", n)
	}
	q := append(e.jk.Queued("folder/unit-tests"), e.jk.Builds("folder/unit-tests")...)
	if len(q) != 1 {
		t.Fatalf("unit-tests queue+builds = %d; want 1", len(q))
	}
	p := q[0].Params
	parsed := ev(t, string(evData))
	for k, want := range map[string]string{
		"GERRIT_PROJECT": "platform/core", "GERRIT_BRANCH": "main", "GERRIT_CHANGE_NUMBER": strconv.Itoa(change),
		"GERRIT_CHANGE_ID": parsed.Change.ID, "GERRIT_PATCHSET_NUMBER": "1", "GERRIT_PATCHSET_REVISION": parsed.Revision(),
		"GERRIT_REFSPEC": "refs/changes/34/1234/1", "GERRIT_EVENT_TYPE": "patchset-created",
	} {
		if p[k] != want {
			t.Errorf("Jenkins got %s=%q; want %q", k, p[k], want)
		}
	}
	var tr build.Triggered
	if err := build.Decode(trig[0].Data, &tr); err != nil {
		t.Fatal(err)
	}
	if p["GERRITFLOW_BUILD_ID"] == "" || tr.QueueID == 0 {
		t.Errorf("GERRITFLOW_BUILD_ID = %q, queue id %d; want both set", p["GERRITFLOW_BUILD_ID"], tr.QueueID)
	}
	if trig[0].Header.Get(bus.GerritChange) != strconv.Itoa(change) || trig[0].MsgID != tr.BuildID+".triggered" {
		t.Errorf("triggered headers %v / id %q", trig[0].Header, trig[0].MsgID)
	}
}

func TestSameEventTwiceStartsOneBuild(t *testing.T) {
	e := newEnv(t)
	_, _, ev := e.upload(gerritsim.Upload{Branch: "main"})
	first := e.handle(ev, nil)
	second := e.handle(ev, nil) // hours later: the duplicate window is long gone
	if n := e.jk.BuildRequests("folder/unit-tests"); n != 1 {
		t.Errorf("unit-tests build requests = %d; want 1", n)
	}
	if len(second) != len(first) || second[0].MsgID != first[0].MsgID {
		t.Errorf("second delivery outputs %v; want the same triggered messages (same Msg-Ids) as %v", ids(second), ids(first))
	}
}

func TestConcurrentDeliveriesStartOneBuild(t *testing.T) {
	e := newEnv(t)
	_, _, ev := e.upload(gerritsim.Upload{Branch: "main"})
	var wg sync.WaitGroup
	var ok atomic.Int32
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for attempt := 0; attempt < 10; attempt++ { // a conflict is retried, as redelivery would
				if _, err := e.try(ev, nil); err == nil {
					ok.Add(1)
					return
				}
			}
		}()
	}
	wg.Wait()
	if ok.Load() != 4 {
		t.Fatalf("%d of 4 deliveries succeeded", ok.Load())
	}
	live := 0
	for _, q := range append(e.jk.Queued("folder/unit-tests"), e.jk.Builds("folder/unit-tests")...) {
		if q.Result != "ABORTED" && q.Result != "NOT_BUILT" {
			live++
		}
	}
	if live != 1 {
		t.Errorf("unit-tests has %d live queue items or builds; want exactly 1", live)
	}
}

func TestCrashBetweenJenkinsAndRecordStartsOneBuild(t *testing.T) {
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
	outs := e.handle(ev, nil) // redelivery
	if n := e.jk.BuildRequests("folder/unit-tests"); n != 1 {
		t.Errorf("unit-tests build requests = %d; want 1 (the redelivery must find the build it started)", n)
	}
	var tr build.Triggered
	for _, o := range bySubject(outs, subject.BuildsTriggered) {
		if err := build.Decode(o.Data, &tr); err == nil && tr.Job == "unit" && tr.QueueID == 0 {
			t.Errorf("recovered build has no queue id: %+v", tr)
		}
	}
}

func TestNewPatchsetSupersedesAndAbandonCancels(t *testing.T) {
	e := newEnv(t)
	change, _, ev1 := e.upload(gerritsim.Upload{Branch: "main"})
	first := bySubject(e.handle(ev1, nil), subject.BuildsTriggered)
	_, _, ev2 := e.upload(gerritsim.Upload{Change: change})
	outs := e.handle(ev2, nil)
	cancels := bySubject(outs, subject.BuildsCancel)
	if len(cancels) != len(first) {
		t.Fatalf("cancels = %d; want %d (every build of patch set 1): %v", len(cancels), len(first), ids(outs))
	}
	var c build.Cancel
	if err := build.Decode(cancels[0].Data, &c); err != nil || c.Reason != "superseded by patch set 2" {
		t.Errorf("cancel = %+v, %v", c, err)
	}
	ps1Set := e.setOf(first[0])
	if ps1Set.State != build.SetSuperseded {
		t.Errorf("patch set 1 build set state = %q; want superseded", ps1Set.State)
	}
	// A recheck of patch set 1 arriving late starts nothing.
	late, err := e.gerrit.Comment(change, 1, gerritsim.Account{Name: "Bob", Username: "bob"}, "recheck", nil)
	if err != nil {
		t.Fatal(err)
	}
	if outs := e.handle(late, nil); len(bySubject(outs, subject.BuildsTriggered)) != 0 {
		t.Errorf("recheck of outdated patch set triggered %v", ids(outs))
	}
	abandon, err := e.gerrit.Abandon(change, gerritsim.Account{Name: "Ann", Username: "ann"}, "no longer needed")
	if err != nil {
		t.Fatal(err)
	}
	outs = e.handle(abandon, nil)
	if got := len(bySubject(outs, subject.BuildsCancel)); got != 2 {
		t.Errorf("abandon cancels = %d; want 2 (patch set 2's builds)", got)
	}
}

func TestRecheckCreatesNewBuildSet(t *testing.T) {
	e := newEnv(t)
	change, _, ev := e.upload(gerritsim.Upload{Branch: "main"})
	first := bySubject(e.handle(ev, nil), subject.BuildsTriggered)
	recheck, err := e.gerrit.Comment(change, 1, gerritsim.Account{Name: "Bob", Username: "bob"}, "recheck", nil)
	if err != nil {
		t.Fatal(err)
	}
	outs := bySubject(e.handle(recheck, nil), subject.BuildsTriggered)
	if len(outs) != 1 || e.setOf(outs[0]).ID == e.setOf(first[0]).ID {
		t.Fatalf("recheck triggered %v; want one build in a new build set", ids(outs))
	}
	if n := e.jk.BuildRequests("folder/unit-tests"); n != 2 {
		t.Errorf("unit-tests build requests = %d; want 2", n)
	}
}

func TestIgnoresOwnEventsUnconfiguredProjectsAndReplaysOnPurpose(t *testing.T) {
	e := newEnv(t)
	_, _, other := e.upload(gerritsim.Upload{Project: "unconfigured/repo", Branch: "main"})
	if outs := e.handle(other, nil); len(outs) != 0 {
		t.Errorf("unconfigured project gave %v", ids(outs))
	}
	change, _, ev := e.upload(gerritsim.Upload{Branch: "main"})
	e.handle(ev, nil)
	own, err := e.gerrit.Comment(change, 1, gerritsim.Account{Name: "CI", Username: "ci"}, "recheck", nil)
	if err != nil {
		t.Fatal(err)
	}
	if outs := e.handle(own, nil); len(outs) != 0 {
		t.Errorf("the CI account's own comment gave %v", ids(outs))
	}
	if n := e.jk.BuildRequests("folder/unit-tests"); n != 1 {
		t.Fatalf("unit-tests build requests = %d; want 1", n)
	}
	replayed := e.handle(ev, nats.Header{bus.Replay: {"r-1"}})
	if len(bySubject(replayed, subject.BuildsTriggered)) != 2 {
		t.Errorf("replay triggered %v; want both jobs again", ids(replayed))
	}
	if n := e.jk.BuildRequests("folder/unit-tests"); n != 2 {
		t.Errorf("unit-tests build requests after replay = %d; want 2", n)
	}
}

func TestCheckJobsNamesJobWithoutBuildID(t *testing.T) {
	e := newEnv(t)
	e.jk.AddJob("legacy", "GERRIT_PROJECT")
	client, err := jenkins.New(context.Background(), e.jk.URL(), e.jk.User(), e.jk.Token(), nil)
	if err != nil {
		t.Fatal(err)
	}
	err = CheckJobs(context.Background(), client, []config.Job{{Name: "ok", JenkinsJob: "lint"}, {Name: "old", JenkinsJob: "legacy"}, {Name: "gone", JenkinsJob: "missing"}})
	if err == nil {
		t.Fatal("CheckJobs = nil")
	}
	for _, want := range []string{"jobs[1] (old): jenkins job legacy does not declare the string parameter GERRITFLOW_BUILD_ID", "jobs[2] (gone)"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("CheckJobs = %q; want it to contain %q", err, want)
		}
	}
	if strings.Contains(err.Error(), "jobs[0]") {
		t.Errorf("CheckJobs blamed the good job: %v", err)
	}
}

func (e *env) setOf(o stage.Out) build.Set {
	e.t.Helper()
	var tr build.Triggered
	if err := build.Decode(o.Data, &tr); err != nil {
		e.t.Fatal(err)
	}
	got, err := e.b.BuildSets.Get(context.Background(), tr.BuildSet)
	if err != nil {
		e.t.Fatalf("get buildset %s: %v", tr.BuildSet, err)
	}
	var s build.Set
	if err := build.Decode(got.Value(), &s); err != nil {
		e.t.Fatal(err)
	}
	return s
}

func ids(outs []stage.Out) []string {
	var r []string
	for _, o := range outs {
		r = append(r, o.Subject+" "+o.MsgID)
	}
	return r
}

// TestConcurrentPatchSetsOnTwoReplicas hands patch sets 1 and 2 of a change to
// two trigger replicas at the same moment: whatever the interleaving, patch
// set 2 runs and every build of patch set 1 that started is cancelled.
func TestConcurrentPatchSetsOnTwoReplicas(t *testing.T) {
	e := newEnv(t)
	other, err := New(e.cfg, e.h.jenkins, e.h.files, e.b, e.tel)
	if err != nil {
		t.Fatal(err)
	}
	replicas := []*Handler{e.h, other}
	for round := 0; round < 8; round++ {
		change, _, ev1 := e.upload(gerritsim.Upload{Branch: "main"})
		_, _, ev2 := e.upload(gerritsim.Upload{Change: change})
		var mu sync.Mutex
		var outs []stage.Out
		var wg sync.WaitGroup
		for i, ev := range [][]byte{ev1, ev2} {
			wg.Add(1)
			go func(h *Handler, ev []byte) {
				defer wg.Done()
				for attempt := 0; attempt < 20; attempt++ { // a conflict is redelivered
					o, err := h.Handle(context.Background(), stage.Msg{Data: ev, Header: nats.Header{}, Delivered: 1, Log: slog.New(slog.DiscardHandler)})
					if err == nil {
						mu.Lock()
						outs = append(outs, o...)
						mu.Unlock()
						return
					}
				}
				t.Errorf("change %d: a delivery kept failing", change)
			}(replicas[(i+round)%2], ev)
		}
		wg.Wait()
		cancelled := map[string]bool{}
		for _, o := range bySubject(outs, subject.BuildsCancel) {
			var c build.Cancel
			if err := build.Decode(o.Data, &c); err != nil {
				t.Fatal(err)
			}
			cancelled[c.BuildID] = true
		}
		live := map[int]int{}
		for _, o := range bySubject(outs, subject.BuildsTriggered) {
			var tr build.Triggered
			if err := build.Decode(o.Data, &tr); err != nil {
				t.Fatal(err)
			}
			if !cancelled[tr.BuildID] {
				live[tr.PatchSet]++
			}
		}
		if live[1] != 0 || live[2] != 2 {
			t.Errorf("round %d change %d: live builds per patch set = %v; want patch set 2's two jobs only (cancelled %v)", round, change, live, cancelled)
		}
	}
}

func TestFilePatternsAskGerritForTheChangedFiles(t *testing.T) {
	e := newEnv(t)
	_, _, code := e.upload(gerritsim.Upload{Project: "docs/site", Branch: "main", Files: []string{"src/main.go"}})
	if outs := e.handle(code, nil); len(outs) != 0 {
		t.Errorf("a code-only change started %v; want nothing (no file matches docs/**)", ids(outs))
	}
	_, _, docs := e.upload(gerritsim.Upload{Project: "docs/site", Branch: "main", Files: []string{"src/main.go", "docs/guide/intro.md"}})
	if outs := bySubject(e.handle(docs, nil), subject.BuildsTriggered); len(outs) != 1 {
		t.Errorf("a docs change started %v; want the docs job", ids(outs))
	}
	cfg := *e.cfg
	if _, err := New(&cfg, e.h.jenkins, nil, e.b, e.tel); err == nil || !strings.Contains(err.Error(), "jobs[3].files") {
		t.Errorf("New without a Gerrit client = %v; want an error naming jobs[3].files", err)
	}
}

func TestMergeCancelsCheckOnlyJobsAndStartsPostMergeJobs(t *testing.T) {
	e := newEnv(t)
	change, _, ev := e.upload(gerritsim.Upload{Branch: "main"})
	e.handle(ev, nil)
	merged, err := e.gerrit.Merge(change, gerritsim.Account{Name: "Mo", Username: "mo"})
	if err != nil {
		t.Fatal(err)
	}
	outs := e.handle(merged, nil)
	var cancelled []string
	for _, o := range bySubject(outs, subject.BuildsCancel) {
		var c build.Cancel
		if err := build.Decode(o.Data, &c); err != nil {
			t.Fatal(err)
		}
		cancelled = append(cancelled, c.Job)
	}
	if strings.Join(cancelled, ",") != "lint" {
		t.Errorf("merge cancelled %v; want only lint (cancel_on_merge), unit keeps running", cancelled)
	}
	trig := bySubject(outs, subject.BuildsTriggered)
	if len(trig) != 1 || !strings.Contains(trig[0].MsgID, ".gate.") {
		t.Errorf("merge triggered %v; want the post-merge gate job", ids(trig))
	}
	// A recheck on the merged change starts nothing.
	recheck, err := e.gerrit.Comment(change, 1, gerritsim.Account{Name: "Bob", Username: "bob"}, "recheck", nil)
	if err != nil {
		t.Fatal(err)
	}
	if outs := e.handle(recheck, nil); len(bySubject(outs, subject.BuildsTriggered)) != 0 {
		t.Errorf("recheck of a merged change triggered %v", ids(outs))
	}
}

// openBuckets binds the KV buckets the trigger writes (main does it through service.KeyValue).
func openBuckets(ctx context.Context, js jetstream.JetStream) (Buckets, error) {
	var b Buckets
	var err error
	for name, dst := range map[string]*jetstream.KeyValue{
		streams.BucketChanges: &b.Changes, streams.BucketBuildSets: &b.BuildSets, streams.BucketBuilds: &b.Builds,
	} {
		if *dst, err = js.KeyValue(ctx, name); err != nil {
			return b, fmt.Errorf("open kv %s: %w", name, err)
		}
	}
	return b, nil
}

// TestHalfStartedSetIsRetiredWhenItsChangeClosed: a delivery starts the unit
// build, then fails before lint starts; the change merges; the redelivery is
// skipped (change MERGED) and must not leave the build set running forever:
// it is closed and the started build cancelled. A set whose every job started
// is left running, as before, so its builds are voted on.
func TestHalfStartedSetIsRetiredWhenItsChangeClosed(t *testing.T) {
	e := newEnv(t)
	redeliver := func(data []byte) []stage.Out {
		t.Helper()
		outs, err := e.h.Handle(context.Background(), stage.Msg{Data: data, Header: nats.Header{}, Delivered: 2, Log: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatalf("redelivery: %v", err)
		}
		return outs
	}
	state := func(change, ps int, ev []byte) build.Set {
		t.Helper()
		parsed, err := event.Parse(ev, 0)
		if err != nil {
			t.Fatal(err)
		}
		got, err := e.b.BuildSets.Get(context.Background(), build.SetID(change, ps, parsed.ID(), ""))
		if err != nil {
			t.Fatal(err)
		}
		var s build.Set
		if err := build.Decode(got.Value(), &s); err != nil {
			t.Fatal(err)
		}
		return s
	}

	half, _, ev := e.upload(gerritsim.Upload{Branch: "main"})
	e.h.afterBuild = func(job string) error {
		if job == "unit" {
			return errors.New("injected crash after buildWithParameters")
		}
		return nil
	}
	if _, err := e.try(ev, nil); err == nil {
		t.Fatal("first delivery succeeded; the injected crash did not happen")
	}
	e.h.afterBuild = nil
	merged, err := e.gerrit.Merge(half, gerritsim.Account{Name: "Ann", Username: "ann"})
	if err != nil {
		t.Fatal(err)
	}
	e.handle(merged, nil)
	outs := redeliver(ev)
	if n := len(bySubject(outs, subject.BuildsTriggered)); n != 0 {
		t.Errorf("redelivery after the merge triggered %d builds; want 0", n)
	}
	cancels := bySubject(outs, subject.BuildsCancel)
	if len(cancels) != 1 {
		t.Fatalf("redelivery after the merge: %v; want one cancel (the unit build that started)", ids(outs))
	}
	var c build.Cancel
	if err := build.Decode(cancels[0].Data, &c); err != nil || c.Job != "unit" || c.Reason != "change merged before every job started" {
		t.Errorf("cancel = %+v, %v", c, err)
	}
	if s := state(half, 1, ev); s.State != build.SetClosed {
		t.Errorf("half-started set of the merged change: state %q; want %q", s.State, build.SetClosed)
	}
	if n := e.jk.BuildRequests("lint"); n != 0 {
		t.Errorf("lint started %d times; want 0 (its change merged first)", n)
	}

	// Every job started, then the ack was lost: the redelivery after the
	// merge leaves the set running.
	whole, _, ev2 := e.upload(gerritsim.Upload{Branch: "main"})
	e.handle(ev2, nil)
	merged2, err := e.gerrit.Merge(whole, gerritsim.Account{Name: "Ann", Username: "ann"})
	if err != nil {
		t.Fatal(err)
	}
	e.handle(merged2, nil)
	// (The merge's cancel of the cancel_on_merge lint build is repeated, the
	// same message deduplicated by its Msg-Id; unit is not cancelled.)
	for _, o := range redeliver(ev2) {
		if o.Subject != subject.BuildsCancel || !strings.HasSuffix(o.MsgID, ".lint.cancel") {
			t.Errorf("redelivery of a fully started set after the merge published %s %s; want only lint's cancel again", o.Subject, o.MsgID)
		}
	}
	if s := state(whole, 1, ev2); s.State != build.SetRunning {
		t.Errorf("fully started set of a merged change: state %q; want running (its builds are voted on)", s.State)
	}
}
