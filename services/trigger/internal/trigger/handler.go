// Package trigger decides which Jenkins jobs each Gerrit event asks for and
// starts each of them exactly once.
//
// Decisions are pure functions (rules.go); this file holds the effects, in
// order: reconcile the change (changes bucket, CAS), cancel what a newer patch
// set or an abandon made obsolete, create the build set (Create: the first
// writer wins), and for every job write the build record in state
// "triggering" before Jenkins is asked, so that after a crash the build
// already started is found by its GERRITFLOW_BUILD_ID instead of started again.
package trigger

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/gerritflow/gerritflow/pkg/build"
	"github.com/gerritflow/gerritflow/pkg/bus"
	"github.com/gerritflow/gerritflow/pkg/config"
	"github.com/gerritflow/gerritflow/pkg/event"
	"github.com/gerritflow/gerritflow/pkg/jenkins"
	"github.com/gerritflow/gerritflow/pkg/stage"
	"github.com/gerritflow/gerritflow/pkg/subject"
	"github.com/gerritflow/gerritflow/pkg/telemetry"
	"github.com/gerritflow/gerritflow/streams"
)

// Spec is the trigger's consumer.
var Spec = stage.Spec{Service: "trigger", Stream: streams.GerritEvents, Durable: "trigger", HandleTimeout: 5 * time.Minute}

// Needs is what the trigger binds to.
var Needs = streams.Need{
	Streams:   []string{streams.GerritEvents, streams.CIBuilds, streams.DLQ},
	Consumers: []string{"trigger"},
	Buckets:   []string{streams.BucketChanges, streams.BucketBuildSets, streams.BucketBuilds},
}

// Jenkins is what the trigger needs from Jenkins.
type Jenkins interface {
	Build(ctx context.Context, job string, params map[string]string) (queueID int64, err error)
	FindByBuildID(ctx context.Context, job, buildID string) (jenkins.Ref, bool, error)
	CancelQueueItem(ctx context.Context, id int64) error
}

// Files is what the trigger needs from Gerrit: the paths a revision changes
// (for jobs with file patterns).
type Files interface {
	Files(ctx context.Context, project string, number int, revision string) ([]string, error)
}

// Handler is the trigger stage.
type Handler struct {
	jobs      []Job
	files     Files // nil when no job has file patterns
	ciUser    string
	gerritURL string
	jenkins   Jenkins
	changes   jetstream.KeyValue
	sets      jetstream.KeyValue
	builds    jetstream.KeyValue
	calls     chan struct{} // bounds concurrent Jenkins calls
	now       func() time.Time
	tracer    trace.Tracer

	decisions *prometheus.CounterVec
	started   *prometheus.CounterVec

	// afterBuild runs between the Jenkins call and recording its queue item
	// (tests inject a crash there).
	afterBuild func(job string) error
}

// Buckets are the KV buckets the trigger writes.
type Buckets struct{ Changes, BuildSets, Builds jetstream.KeyValue }

// New builds the handler. jenkins.max_concurrent bounds concurrent Jenkins
// calls (default 16). files may be nil unless a job has file patterns.
func New(cfg *config.Config, jk Jenkins, files Files, b Buckets, tel *telemetry.Telemetry) (*Handler, error) {
	jobs, err := Compile(cfg.Jobs)
	if err != nil {
		return nil, err
	}
	for i, j := range jobs {
		if j.NeedsFiles() && files == nil {
			return nil, fmt.Errorf("jobs[%d].files: needs gerrit.url and gerrit.password_env to read a change's files", i)
		}
	}
	maxCalls := cfg.Jenkins.MaxConcurrent
	if maxCalls <= 0 {
		maxCalls = 16
	}
	return &Handler{
		jobs: jobs, files: files, ciUser: cfg.Gerrit.User, gerritURL: cfg.Gerrit.URL, jenkins: jk,
		changes: b.Changes, sets: b.BuildSets, builds: b.Builds,
		calls: make(chan struct{}, maxCalls), now: time.Now, tracer: tel.Tracer,
		decisions: tel.Counter("decisions_total", "Trigger decisions by kind.", "decision"),
		started:   tel.Counter("builds_started_total", "Jenkins builds started, by job.", "job"),
	}, nil
}

// Handle processes one gerrit.events.<type> message.
func (h *Handler) Handle(ctx context.Context, m stage.Msg) ([]stage.Out, error) {
	ev, err := event.Parse(m.Data, 0)
	if err != nil {
		return nil, stage.Permanent(fmt.Errorf("decode event: %w", err))
	}
	log := m.Log.With("type", ev.Type)
	if a := ev.Account(); a != nil && h.ciUser != "" && a.Username == h.ciUser {
		h.decide(ctx, log, "ignore", "own event")
		return nil, nil
	}
	var outs []stage.Out
	if ev.ChangeNumber() > 0 {
		chg, cancels, err := h.reconcile(ctx, ev)
		if err != nil {
			return nil, err
		}
		outs = cancels
		if asksForCheck(ev) {
			if chg.Status != build.ChangeNew {
				h.decide(ctx, log, "skip", "change "+chg.Status)
				state := build.SetClosed
				if chg.Status == build.ChangeAbandoned {
					state = build.SetAbandoned
				}
				return h.retireHalfStarted(ctx, log, m, ev, outs, state, "change "+strings.ToLower(chg.Status))
			}
			if Supersedes(chg.Latest, ev.PatchSetNumber()) {
				h.decide(ctx, log, "skip", fmt.Sprintf("patch set %d is outdated (latest %d)", ev.PatchSetNumber(), chg.Latest))
				return h.retireHalfStarted(ctx, log, m, ev, outs, build.SetSuperseded, "superseded by patch set "+strconv.Itoa(chg.Latest))
			}
		}
	}
	var jobs []Job
	var files []string // read once, when a matched job has file patterns
	for _, j := range h.jobs {
		ok, why := Match(j, ev)
		if ok && j.NeedsFiles() && ev.Revision() != "" {
			if files == nil {
				if files, err = h.files.Files(ctx, ev.ProjectName(), ev.ChangeNumber(), ev.Revision()); err != nil {
					return nil, err
				}
			}
			ok, why = MatchFiles(j, files), "no changed file matches"
		}
		if ok {
			jobs = append(jobs, j)
		} else if ev.ProjectName() != "" {
			log.DebugContext(ctx, "job not matched", telemetry.KeyJob, j.Name, telemetry.KeyReason, why)
		}
	}
	if len(jobs) == 0 {
		h.decide(ctx, log, "skip", "no job matches")
		return outs, nil
	}
	set, err := h.buildSet(ctx, ev, m.Header.Get(bus.Replay), jobs)
	if err != nil {
		return nil, err
	}
	log = log.With(telemetry.KeyBuildSet, set.ID)
	trace.SpanFromContext(ctx).SetAttributes(telemetry.AttrBuildSet.String(set.ID))
	if set.State != build.SetRunning {
		h.decide(ctx, log, "skip", "build set "+set.State)
		return outs, nil
	}
	if ev.ChangeNumber() > 0 && asksForCheck(ev) {
		latest, err := h.register(ctx, ev, set)
		if err != nil {
			return nil, err
		}
		if Supersedes(latest, set.PatchSet) { // a newer patch set won the race
			more, err := h.retire(ctx, set.ID, build.SetSuperseded, "superseded by patch set "+strconv.Itoa(latest), nil)
			h.decide(ctx, log, "skip", "superseded while starting")
			return append(outs, more...), err
		}
	}
	byName := map[string]Job{}
	for _, j := range h.jobs {
		byName[j.Name] = j
	}
	for _, sj := range set.Jobs {
		j, ok := byName[sj.Name]
		if !ok {
			log.WarnContext(ctx, "job of build set no longer configured", telemetry.KeyJob, sj.Name)
			continue
		}
		out, err := h.start(ctx, log, set, j, ev)
		if err != nil {
			return nil, err
		}
		outs = append(outs, out...)
		// A newer patch set (or an abandon) may have retired the set while
		// this build was being created, after the retiring delivery read the
		// set's builds: then cancelling this build falls to us.
		state, err := h.setState(ctx, set.ID)
		if err != nil {
			return nil, err
		}
		if state != build.SetRunning {
			more, err := h.retire(ctx, set.ID, state, "build set "+state, nil)
			h.decide(ctx, log, "cancel", "build set "+state+" while starting")
			return append(outs, more...), err
		}
	}
	return outs, nil
}

// retireHalfStarted handles the redelivery of an event that is skipped now
// (its change closed, or a newer patch set came) although an earlier delivery
// created its build set and failed part-way: the jobs it did not start will
// never start, so the set could never be voted and would stay running. Such a
// set is retired to state and every build it did start is cancelled (nobody
// follows a build whose ci.builds.triggered was never published). A set whose
// every job got past Jenkins is left alone: its builds finish and are voted
// on as usual. First deliveries cost nothing here.
func (h *Handler) retireHalfStarted(ctx context.Context, log *slog.Logger, m stage.Msg, ev *event.Event, outs []stage.Out, state, reason string) ([]stage.Out, error) {
	if m.Delivered <= 1 {
		return outs, nil
	}
	id := build.SetID(ev.ChangeNumber(), ev.PatchSetNumber(), ev.ID(), m.Header.Get(bus.Replay))
	e, err := h.sets.Get(ctx, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return outs, nil
	}
	if err != nil {
		return nil, fmt.Errorf("get buildset %s: %w", id, err)
	}
	var set build.Set
	if err := build.Decode(e.Value(), &set); err != nil {
		return nil, stage.Permanent(err)
	}
	if set.State != build.SetRunning {
		return outs, nil
	}
	half := false
	for _, j := range set.Jobs {
		be, err := h.builds.Get(ctx, subject.BuildKey(set.ID, j.Name))
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			half = true
			break
		}
		if err != nil {
			return nil, fmt.Errorf("get build %s: %w", subject.BuildKey(set.ID, j.Name), err)
		}
		var b build.Build
		if err := build.Decode(be.Value(), &b); err != nil {
			return nil, stage.Permanent(err)
		}
		if b.State == build.StateTriggering {
			half = true
			break
		}
	}
	if !half {
		return outs, nil
	}
	more, err := h.retire(ctx, set.ID, state, reason+" before every job started", nil)
	if err != nil {
		return nil, err
	}
	h.decide(ctx, log.With(telemetry.KeyBuildSet, set.ID), "cancel", "half-started build set "+state)
	return append(outs, more...), nil
}

func (h *Handler) setState(ctx context.Context, id string) (string, error) {
	e, err := h.sets.Get(ctx, id)
	if err != nil {
		return "", fmt.Errorf("get buildset %s: %w", id, err)
	}
	var s build.Set
	if err := build.Decode(e.Value(), &s); err != nil {
		return "", stage.Permanent(err)
	}
	return s.State, nil
}

// asksForCheck reports whether ev asks to check a patch set (as opposed to
// post-merge or ref jobs): those are skipped for closed changes and outdated
// patch sets, and superseded by newer ones.
func asksForCheck(ev *event.Event) bool {
	switch ev.Type {
	case event.TypePatchsetCreated, event.TypeCommentAdded, event.TypeWIPStateChanged,
		event.TypePrivateStateChanged, event.TypeChangeRestored, event.TypeTopicChanged:
		return true
	}
	return false
}

func (h *Handler) decide(ctx context.Context, log *slog.Logger, decision, reason string) {
	h.decisions.WithLabelValues(decision).Inc()
	log.InfoContext(ctx, "decision", telemetry.KeyDecision, decision, telemetry.KeyReason, reason)
}

// reconcile folds ev into the change record by CAS and returns the record
// and the cancel messages for build sets ev made obsolete.
func (h *Handler) reconcile(ctx context.Context, ev *event.Event) (build.Change, []stage.Out, error) {
	key := subject.ChangeKey(ev.ProjectName(), ev.ChangeNumber())
	chg, err := build.Update(ctx, h.changes, key, func(cur *build.Change, exists bool) bool {
		if !exists {
			*cur = build.Change{Project: ev.ProjectName(), Number: ev.ChangeNumber(), Status: build.ChangeNew}
		}
		before := [...]any{cur.Latest, cur.Status, cur.WIP}
		if ps := ev.PatchSetNumber(); ps > cur.Latest && ev.Type == event.TypePatchsetCreated {
			cur.Latest = ps
		} else if cur.Latest == 0 {
			cur.Latest = ps
		}
		if ev.Change != nil {
			cur.WIP = ev.Change.WIP
		}
		switch ev.Type {
		case event.TypeChangeAbandoned:
			cur.Status = build.ChangeAbandoned
		case event.TypeChangeMerged:
			cur.Status = build.ChangeMerged
		case event.TypeChangeRestored:
			cur.Status = build.ChangeNew
		}
		cur.Updated = h.now()
		return !exists || before != [...]any{cur.Latest, cur.Status, cur.WIP}
	})
	if err != nil {
		return chg, nil, err
	}
	var outs []stage.Out
	for _, ref := range chg.BuildSets {
		var state, reason string
		var only func(build.Job) bool
		switch {
		case chg.Status == build.ChangeAbandoned:
			state, reason = build.SetAbandoned, "change abandoned"
		case chg.Status == build.ChangeMerged:
			state, reason = "", "change merged"
			only = h.cancelOnMerge
		case Supersedes(chg.Latest, ref.PatchSet):
			state, reason = build.SetSuperseded, "superseded by patch set "+strconv.Itoa(chg.Latest)
		default:
			continue
		}
		more, err := h.retire(ctx, ref.ID, state, reason, only)
		if err != nil {
			return chg, nil, err
		}
		outs = append(outs, more...)
	}
	return chg, outs, nil
}

func (h *Handler) cancelOnMerge(j build.Job) bool {
	for _, c := range h.jobs {
		if c.Name == j.Name {
			return c.CancelOnMerge
		}
	}
	return false
}

// retire moves a running build set to state (by CAS; "" keeps it running) and
// returns a cancel message for each of its unfinished builds (those only
// selects). Running it again yields the same messages, deduplicated by Msg-Id.
func (h *Handler) retire(ctx context.Context, setID, state, reason string, only func(build.Job) bool) ([]stage.Out, error) {
	set, err := build.Update(ctx, h.sets, setID, func(cur *build.Set, exists bool) bool {
		if !exists || state == "" || cur.State != build.SetRunning {
			return false
		}
		cur.State, cur.Reason = state, reason
		return true
	})
	if errors.Is(err, jetstream.ErrKeyNotFound) || set.ID == "" {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	// Cancel the builds of a set this call retired, or that an earlier
	// delivery retired the same way (it may have died before publishing);
	// a set retired for another reason was cancelled then.
	if want := state; want == "" && set.State != build.SetRunning || want != "" && set.State != want {
		return nil, nil
	}
	var outs []stage.Out
	for _, j := range set.Jobs {
		if only != nil && !only(j) {
			continue
		}
		key := subject.BuildKey(set.ID, j.Name)
		e, err := h.builds.Get(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("get build %s: %w", key, err)
		}
		var b build.Build
		if err := build.Decode(e.Value(), &b); err != nil {
			return nil, stage.Permanent(err)
		}
		if b.State == build.StateCompleted {
			continue
		}
		hdr := nats.Header{}
		hdr.Set(bus.BuildSet, set.ID)
		hdr.Set(bus.Job, j.Name)
		bus.SetChange(hdr, set.Project, set.Change, set.PatchSet)
		outs = append(outs, stage.Out{
			Subject: subject.BuildsCancel, MsgID: key + ".cancel", Header: hdr,
			Data: build.Encode(build.Cancel{BuildSet: set.ID, Job: j.Name, JenkinsJob: j.JenkinsJob, BuildID: key, Reason: reason}),
		})
	}
	return outs, nil
}

// buildSet creates the build set of ev (first writer wins) or finds the one
// an earlier delivery created.
func (h *Handler) buildSet(ctx context.Context, ev *event.Event, replay string, jobs []Job) (build.Set, error) {
	set := build.Set{
		ID:      build.SetID(ev.ChangeNumber(), ev.PatchSetNumber(), ev.ID(), replay),
		Project: ev.ProjectName(), Branch: ev.Branch(), Change: ev.ChangeNumber(), PatchSet: ev.PatchSetNumber(),
		Revision: ev.Revision(), EventType: ev.Type, EventID: ev.ID(), Replay: replay,
		State: build.SetRunning, Created: h.now(),
	}
	if ev.Change != nil {
		set.ChangeID, set.Subject, set.URL = ev.Change.ID, ev.Change.Subject, ev.Change.URL
	}
	if ev.PatchSet != nil {
		set.Ref = ev.PatchSet.Ref
	}
	if ev.Type == event.TypeRefUpdated && ev.RefUpdate != nil {
		set.Revision, set.Ref = ev.RefUpdate.NewRev, ev.RefUpdate.RefName
	}
	for _, j := range jobs {
		set.Jobs = append(set.Jobs, build.Job{Name: j.Name, JenkinsJob: j.JenkinsJob, Voting: j.IsVoting()})
	}
	set.Traceparent = traceparent(ctx)
	_, err := h.sets.Create(ctx, set.ID, build.Encode(set))
	if err == nil {
		return set, nil
	}
	if !errors.Is(err, jetstream.ErrKeyExists) {
		return set, fmt.Errorf("create buildset %s: %w", set.ID, err)
	}
	e, err := h.sets.Get(ctx, set.ID)
	if err != nil {
		return set, fmt.Errorf("get buildset %s: %w", set.ID, err)
	}
	var found build.Set
	if err := build.Decode(e.Value(), &found); err != nil {
		return set, stage.Permanent(err)
	}
	return found, nil
}

// register adds set to its change's record and returns the latest patch set
// the record holds at that moment: one CAS orders the registration against a
// newer patch set's superseding.
func (h *Handler) register(ctx context.Context, ev *event.Event, set build.Set) (int, error) {
	chg, err := build.Update(ctx, h.changes, subject.ChangeKey(set.Project, set.Change), func(cur *build.Change, exists bool) bool {
		if !exists {
			*cur = build.Change{Project: set.Project, Number: set.Change, Latest: set.PatchSet, Status: build.ChangeNew}
		}
		if slices.ContainsFunc(cur.BuildSets, func(r build.SetRef) bool { return r.ID == set.ID }) {
			return false
		}
		cur.BuildSets = append(cur.BuildSets, build.SetRef{ID: set.ID, PatchSet: set.PatchSet, Event: set.EventType})
		if n := len(cur.BuildSets); n > build.MaxSetRefs {
			cur.BuildSets = cur.BuildSets[n-build.MaxSetRefs:]
		}
		cur.Updated = h.now()
		return true
	})
	return chg.Latest, err
}

// start makes sure job's build of set exists in Jenkins exactly once and
// returns its ci.builds.triggered message. It is a span of its own, the
// parent of the Jenkins calls: the build's record keeps it as the build's
// trace context, which the voter links to.
func (h *Handler) start(ctx context.Context, log *slog.Logger, set build.Set, j Job, ev *event.Event) (outs []stage.Out, err error) {
	ctx, span := h.tracer.Start(ctx, "start "+j.JenkinsJob, trace.WithAttributes(append(
		telemetry.ChangeAttrs(set.Project, set.Change, set.PatchSet),
		telemetry.AttrBuildSet.String(set.ID), telemetry.AttrJob.String(j.Name), telemetry.AttrJenkinsJob.String(j.JenkinsJob))...))
	defer func() {
		if err != nil {
			span.RecordError(err)
			span.SetStatus(codes.Error, err.Error())
		}
		span.End()
	}()
	key := subject.BuildKey(set.ID, j.Name)
	log = log.With(telemetry.KeyJob, j.Name)
	rec := build.Build{
		BuildSet: set.ID, Job: j.Name, JenkinsJob: j.JenkinsJob, BuildID: key, Voting: j.IsVoting(),
		State: build.StateTriggering, Triggered: h.now(), Traceparent: traceparent(ctx),
	}
	rev, err := h.builds.Create(ctx, key, build.Encode(rec))
	recovering := false
	switch {
	case errors.Is(err, jetstream.ErrKeyExists):
		e, err := h.builds.Get(ctx, key)
		if err != nil {
			return nil, fmt.Errorf("get build %s: %w", key, err)
		}
		if err := build.Decode(e.Value(), &rec); err != nil {
			return nil, stage.Permanent(err)
		}
		if rec.State != build.StateTriggering {
			// Started before; announce it again (same Msg-Id) in case the
			// earlier delivery died before its publish.
			return []stage.Out{triggered(set, rec)}, nil
		}
		rev, recovering = e.Revision(), true
	case err != nil:
		return nil, fmt.Errorf("create build %s: %w", key, err)
	}

	var queueID int64
	if recovering { // an earlier delivery may have asked Jenkins already
		ref, found, err := h.jenkinsFind(ctx, j.JenkinsJob, key)
		if err != nil {
			return nil, err
		}
		if found {
			log.InfoContext(ctx, "build found after restart", telemetry.KeyDecision, "recover", "queue_id", ref.QueueID, "number", ref.Number)
			queueID, rec.Number, rec.URL = ref.QueueID, ref.Number, ref.URL
		}
	}
	if queueID == 0 && rec.Number == 0 {
		if queueID, err = h.jenkinsBuild(ctx, j.JenkinsJob, Params(j, ev, key, h.gerritURL)); err != nil {
			return nil, err
		}
		h.started.WithLabelValues(j.Name).Inc()
		log.InfoContext(ctx, "build started", telemetry.KeyDecision, "build", "jenkins_job", j.JenkinsJob, "queue_id", queueID)
		if h.afterBuild != nil {
			if err := h.afterBuild(j.Name); err != nil {
				return nil, err
			}
		}
	}
	rec.State, rec.QueueID = build.StateQueued, queueID
	if _, err := h.builds.Update(ctx, key, build.Encode(rec), rev); err != nil {
		if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			// Another delivery recorded a build meanwhile. Jenkins merges
			// identical queued requests, so it is often this very item; if it
			// is another one, cancel ours to keep exactly one. The redelivery
			// then reads what was recorded.
			if queueID != 0 && h.recordedOther(ctx, key, queueID) {
				log.WarnContext(ctx, "concurrent start: cancelling the duplicate", telemetry.KeyDecision, "cancel", "queue_id", queueID)
				_ = h.jenkins.CancelQueueItem(ctx, queueID)
			}
			return nil, fmt.Errorf("record build %s: concurrent start: %w", key, err)
		}
		return nil, fmt.Errorf("record build %s: %w", key, err)
	}
	return []stage.Out{triggered(set, rec)}, nil
}

// recordedOther reports whether the build record at key names a queue item
// or build other than queueID (when in doubt, false: never cancel the one build).
func (h *Handler) recordedOther(ctx context.Context, key string, queueID int64) bool {
	e, err := h.builds.Get(ctx, key)
	if err != nil {
		return false
	}
	var b build.Build
	if err := build.Decode(e.Value(), &b); err != nil {
		return false
	}
	return b.State != build.StateTriggering && b.QueueID != queueID
}

func triggered(set build.Set, b build.Build) stage.Out {
	hdr := nats.Header{}
	hdr.Set(bus.BuildSet, set.ID)
	hdr.Set(bus.Job, b.Job)
	bus.SetChange(hdr, set.Project, set.Change, set.PatchSet)
	return stage.Out{
		Subject: subject.BuildsTriggered, MsgID: b.BuildID + ".triggered", Header: hdr,
		Data: build.Encode(build.Triggered{
			BuildSet: set.ID, Job: b.Job, JenkinsJob: b.JenkinsJob, BuildID: b.BuildID, QueueID: b.QueueID,
			Project: set.Project, Change: set.Change, PatchSet: set.PatchSet, Revision: set.Revision, Voting: b.Voting,
		}),
	}
}

func (h *Handler) jenkinsBuild(ctx context.Context, job string, params map[string]string) (int64, error) {
	select {
	case h.calls <- struct{}{}:
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	defer func() { <-h.calls }()
	return h.jenkins.Build(ctx, job, params)
}

func (h *Handler) jenkinsFind(ctx context.Context, job, id string) (jenkins.Ref, bool, error) {
	select {
	case h.calls <- struct{}{}:
	case <-ctx.Done():
		return jenkins.Ref{}, false, ctx.Err()
	}
	defer func() { <-h.calls }()
	return h.jenkins.FindByBuildID(ctx, job, id)
}

func traceparent(ctx context.Context) string {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return ""
	}
	hdr := nats.Header{}
	bus.Inject(ctx, hdr)
	return hdr.Get(bus.Traceparent)
}
