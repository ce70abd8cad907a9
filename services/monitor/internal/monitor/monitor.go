// Package monitor follows the Jenkins builds the trigger started, from queue
// item to result, and publishes one ci.builds.completed per build.
//
// Each ci.builds.triggered message is taken on with stage.RunAsync: the
// message stays un-acked (kept in progress) while its build runs, so
// JetStream assigns every build to exactly one monitor replica, and a crashed
// or stopped replica's builds are redelivered to the others. A replica follows
// all of its builds with one Scheduler: a timer heap driven by one goroutine,
// and a pool of workers that make the Jenkins calls within one budget (a rate
// limiter and a concurrency cap). Poll intervals adapt to the build's
// estimated duration. The Jenkins Notification plugin may push a hint to
// POST /jenkins/notify, which polls that build at once; polling stays the
// source of truth.
//
// State moves only by compare-and-set on builds/<BuildID>: queued -> running
// (number, url) -> completed (result, duration). The record is completed
// before ci.builds.completed is published; a build whose record is already
// completed (a redelivery) is announced again with the same Msg-Id.
//
// ci.builds.cancel records the cancel reason on the build (CAS), and asks
// Jenkins to cancel the queue item or stop the build. The replica following
// the build then sees it cancelled or aborted and reports CANCELED.
package monitor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/gerritflow/gerritflow/pkg/build"
	"github.com/gerritflow/gerritflow/pkg/bus"
	"github.com/gerritflow/gerritflow/pkg/config"
	"github.com/gerritflow/gerritflow/pkg/jenkins"
	"github.com/gerritflow/gerritflow/pkg/stage"
	"github.com/gerritflow/gerritflow/pkg/subject"
	"github.com/gerritflow/gerritflow/pkg/telemetry"
	"github.com/gerritflow/gerritflow/streams"
)

// Spec is the monitor's consumer. MaxPending bounds the builds one replica
// follows; the consumer's max_ack_pending (20 000) allows two replicas at
// the full bound.
var Spec = stage.Spec{Service: "monitor", Stream: streams.CIBuilds, Durable: "monitor", Concurrency: 16, MaxPending: 10000}

// Needs is what the monitor binds to.
var Needs = streams.Need{
	Streams:   []string{streams.CIBuilds, streams.DLQ},
	Consumers: []string{"monitor"},
	Buckets:   []string{streams.BucketBuilds},
}

// Jenkins is what the monitor needs from Jenkins.
type Jenkins interface {
	QueueItem(ctx context.Context, id int64) (jenkins.QueueItem, error)
	GetBuild(ctx context.Context, job string, number int64) (jenkins.Build, error)
	FindByBuildID(ctx context.Context, job, buildID string) (jenkins.Ref, bool, error)
	CancelQueueItem(ctx context.Context, id int64) error
	StopBuild(ctx context.Context, job string, number int64) error
}

// stepTimeout bounds one poll round (budget wait, Jenkins and KV calls).
const stepTimeout = 2 * time.Minute

// Monitor is the monitor stage (a stage.AsyncHandler).
type Monitor struct {
	set     Settings
	jenkins Jenkins
	builds  jetstream.KeyValue
	tracer  trace.Tracer
	log     *slog.Logger
	clock   Clock
	budget  *budget
	workers int

	mu    sync.Mutex
	cur   *run       // the scheduler of the current stage run
	peers *nats.Conn // where notifications for other replicas go (SharePokes)

	inFlight    prometheus.Gauge
	requests    *prometheus.CounterVec
	latency     *prometheus.HistogramVec
	completions *prometheus.CounterVec
	detect      prometheus.Observer
	notices     *prometheus.CounterVec
}

// run is one stage run's scheduler and the builds it follows.
type run struct {
	ctx       context.Context
	sched     *Scheduler
	following map[string]*follower // by BuildID
	byQueue   map[int64]*follower  // by Jenkins queue id
}

// An Option changes what New builds.
type Option func(*Monitor)

// WithClock sets the clock of the scheduler and the request budget (tests).
func WithClock(c Clock) Option { return func(m *Monitor) { m.clock = c } }

// New builds the monitor and adds POST /jenkins/notify to tel's HTTP server.
// Invalid monitor settings give an error naming the key.
func New(cfg *config.Config, jk Jenkins, builds jetstream.KeyValue, tel *telemetry.Telemetry, opts ...Option) (*Monitor, error) {
	set, err := SettingsFrom(cfg)
	if err != nil {
		return nil, err
	}
	m := &Monitor{
		set: set, jenkins: jk, builds: builds, tracer: tel.Tracer, log: tel.Logger, clock: Real,
		workers:  2 * set.MaxConcurrent, // Jenkins calls are capped by the budget; the rest is KV work
		inFlight: tel.Gauge("builds_in_flight", "Builds this replica follows now.").WithLabelValues(),
		requests: tel.Counter("jenkins_requests_total", "Jenkins calls, by operation and outcome (ok, not_found, error).", "op", "outcome"),
		latency:  tel.Histogram("jenkins_request_seconds", "Latency of Jenkins calls, by operation (budget wait excluded).", "op"),
		completions: tel.Counter("completions_total",
			"Builds this replica recorded completed, by result.", "result"),
		detect: tel.Histogram("detect_delay_seconds",
			"Time from a build's end (Jenkins timestamp + duration) to its ci.builds.completed being published.").WithLabelValues(),
		notices: tel.Counter("notifications_total",
			"Jenkins notifications, by outcome: polled, relayed (to the other replicas), polled_for_peer (relayed by another replica), unknown, ignored, bad.", "outcome"),
	}
	for _, o := range opts {
		o(m)
	}
	m.budget = newBudget(m.clock, set.RequestsPerSecond, set.MaxConcurrent)
	tel.Handle("POST /jenkins/notify", http.HandlerFunc(m.ServeNotify))
	return m, nil
}

// Start takes on one ci.builds.triggered (follow the build) or
// ci.builds.cancel (cancel it in Jenkins) message and returns at once; done
// is called when the work is finished. ctx is the stage's: it ends when the
// stage stops, and with it the scheduler and every follow of this replica.
func (m *Monitor) Start(ctx context.Context, msg stage.Msg, done func([]stage.Out, error)) {
	r := m.running(ctx)
	switch msg.Subject {
	case subject.BuildsTriggered:
		var t build.Triggered
		if err := build.Decode(msg.Data, &t); err != nil {
			done(nil, stage.Permanent(err))
			return
		}
		if t.BuildID == "" || t.JenkinsJob == "" {
			done(nil, stage.Permanent(fmt.Errorf("triggered build without build_id or jenkins_job: %s", msg.Data)))
			return
		}
		m.follow(ctx, r, msg, t, done)
	case subject.BuildsCancel:
		var c build.Cancel
		if err := build.Decode(msg.Data, &c); err != nil {
			done(nil, stage.Permanent(err))
			return
		}
		if c.BuildID == "" && c.BuildSet != "" && c.Job != "" {
			c.BuildID = subject.BuildKey(c.BuildSet, c.Job)
		}
		if c.BuildID == "" {
			done(nil, stage.Permanent(fmt.Errorf("cancel without build_id: %s", msg.Data)))
			return
		}
		r.sched.Add(0, func() (time.Duration, bool) {
			done(nil, m.cancel(ctx, msg, c))
			return 0, true
		})
	default:
		done(nil, stage.Permanent(fmt.Errorf("monitor: unexpected subject %s", msg.Subject)))
	}
}

// running returns the scheduler of the stage run ctx belongs to, starting
// it on the first message.
func (m *Monitor) running(ctx context.Context) *run {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cur != nil && m.cur.ctx.Err() == nil {
		return m.cur
	}
	r := &run{ctx: ctx, sched: NewScheduler(m.clock, m.workers), following: map[string]*follower{}, byQueue: map[int64]*follower{}}
	m.cur = r
	go func() {
		r.sched.Run(ctx)
		m.mu.Lock()
		defer m.mu.Unlock()
		clear(r.following)
		clear(r.byQueue)
		if m.cur == r {
			m.inFlight.Set(0)
		}
	}()
	return r
}

// waiter is one message waiting for a build's end (a replayed
// ci.builds.triggered may join a build already followed).
type waiter struct {
	done             func([]stage.Out, error)
	replay, replayOf string
}

func (m *Monitor) follow(ctx context.Context, r *run, msg stage.Msg, t build.Triggered, done func([]stage.Out, error)) {
	w := waiter{done: done, replay: msg.Header.Get(bus.Replay), replayOf: msg.Header.Get(bus.ReplayOf)}
	m.mu.Lock()
	defer m.mu.Unlock()
	if f, ok := r.following[t.BuildID]; ok {
		f.waiters = append(f.waiters, w)
		return
	}
	f := &follower{
		m: m, run: r, ctx: ctx, msgLog: msg.Log, header: msg.Header, t: t, key: t.BuildID, waiters: []waiter{w},
	}
	r.following[f.key] = f
	f.entry = r.sched.Add(0, f.step)
	m.inFlight.Set(float64(len(r.following)))
}

// release forgets f and returns the messages waiting for it.
func (m *Monitor) release(f *follower) []waiter {
	m.mu.Lock()
	defer m.mu.Unlock()
	r := f.run
	if r.following[f.key] == f {
		delete(r.following, f.key)
	}
	if r.byQueue[f.queueID] == f {
		delete(r.byQueue, f.queueID)
	}
	ws := f.waiters
	f.waiters = nil
	if m.cur == r {
		m.inFlight.Set(float64(len(r.following)))
	}
	return ws
}

// setQueue records f's queue item id (for notifications by queue id).
func (m *Monitor) setQueue(f *follower, id int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r := f.run
	if r.byQueue[f.queueID] == f {
		delete(r.byQueue, f.queueID)
	}
	f.queueID = id
	if id > 0 {
		r.byQueue[id] = f
	}
}

// poke polls the build with buildID (or, failing that, queue item queueID)
// now, if this replica follows it.
func (m *Monitor) poke(buildID string, queueID int64) bool {
	m.mu.Lock()
	r := m.cur
	var e *Entry
	if r != nil {
		f := r.following[buildID]
		if f == nil && queueID > 0 {
			f = r.byQueue[queueID]
		}
		if f != nil {
			e = f.entry
		}
	}
	m.mu.Unlock()
	if e == nil {
		return false
	}
	r.sched.Poke(e)
	return true
}

// call makes one Jenkins call within the budget, measured.
func (m *Monitor) call(ctx context.Context, op string, fn func(context.Context) error) error {
	release, err := m.budget.acquire(ctx)
	if err != nil {
		return fmt.Errorf("jenkins %s: %w", op, err)
	}
	defer release()
	start := time.Now()
	err = fn(ctx)
	m.latency.WithLabelValues(op).Observe(time.Since(start).Seconds())
	outcome := "ok"
	switch {
	case errors.Is(err, jenkins.ErrNotFound):
		outcome = "not_found"
	case err != nil:
		outcome = "error"
	}
	m.requests.WithLabelValues(op, outcome).Inc()
	return err
}

// read returns the build record at key and its revision. A missing key wraps
// jetstream.ErrKeyNotFound; an undecodable record is permanent.
func (m *Monitor) read(ctx context.Context, key string) (build.Build, uint64, error) {
	e, err := m.builds.Get(ctx, key)
	if err != nil {
		return build.Build{}, 0, fmt.Errorf("read build %s: %w", key, err)
	}
	var b build.Build
	if err := build.Decode(e.Value(), &b); err != nil {
		return build.Build{}, 0, stage.Permanent(fmt.Errorf("read build %s: %w", key, err))
	}
	return b, e.Revision(), nil
}

// cas applies change to the existing build record at key by compare-and-set
// (build.Update: a conflict re-reads and decides again, never a blind Put).
// change returns false when nothing needs writing. It returns the record as stored.
func (m *Monitor) cas(ctx context.Context, key string, change func(cur *build.Build) bool) (build.Build, error) {
	rec, err := build.Update(ctx, m.builds, key, func(cur *build.Build, exists bool) bool { return exists && change(cur) })
	if err != nil {
		return rec, fmt.Errorf("update build %s: %w", key, err)
	}
	return rec, nil
}

// cancel handles ci.builds.cancel: record the reason (CAS), then ask Jenkins
// to cancel the queue item or stop the build. The follower of the build
// reports the result.
func (m *Monitor) cancel(ctx context.Context, msg stage.Msg, c build.Cancel) error {
	ctx, cancel := context.WithTimeout(ctx, stepTimeout)
	defer cancel()
	ctx, span := m.tracer.Start(ctx, "cancel "+c.JenkinsJob, trace.WithAttributes(append(stage.ChangeAttrs(msg.Header),
		telemetry.AttrBuildSet.String(c.BuildSet), telemetry.AttrJob.String(c.Job), telemetry.AttrJenkinsJob.String(c.JenkinsJob))...))
	defer span.End()
	log := msg.Log.With(telemetry.KeyJob, c.Job, "build_id", c.BuildID)
	reason := c.Reason
	if reason == "" {
		reason = "cancelled"
	}
	rec, err := m.cas(ctx, c.BuildID, func(cur *build.Build) bool {
		if cur.State == build.StateCompleted || cur.Cancel != "" {
			return false
		}
		cur.Cancel = reason
		return true
	})
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		log.InfoContext(ctx, "decision", telemetry.KeyDecision, "skip", telemetry.KeyReason, "no build record: nothing was started")
		return nil
	case err != nil:
		span.SetStatus(codes.Error, err.Error())
		return err
	case rec.State == build.StateCompleted:
		log.InfoContext(ctx, "decision", telemetry.KeyDecision, "skip", telemetry.KeyReason, "build already completed")
		return nil
	}
	job := rec.JenkinsJob
	if job == "" {
		job = c.JenkinsJob
	}
	if err := m.cancelInJenkins(ctx, job, c.BuildID, rec.QueueID, rec.Number); err != nil {
		span.SetStatus(codes.Error, err.Error())
		return fmt.Errorf("cancel build %s: %w", c.BuildID, err)
	}
	log.InfoContext(ctx, "decision", telemetry.KeyDecision, "cancel", telemetry.KeyReason, reason,
		"queue_id", rec.QueueID, "number", rec.Number)
	m.poke(c.BuildID, rec.QueueID) // if this replica follows it, look now
	return nil
}

// cancelInJenkins cancels the queue item, or stops the build, of buildID.
// An item that left the queue meanwhile is looked up and its build stopped.
// Nothing found is not an error.
func (m *Monitor) cancelInJenkins(ctx context.Context, job, buildID string, queueID, number int64) error {
	if number == 0 && queueID > 0 {
		if err := m.call(ctx, "cancel_queue_item", func(ctx context.Context) error { return m.jenkins.CancelQueueItem(ctx, queueID) }); err != nil {
			return err
		}
		var qi jenkins.QueueItem
		err := m.call(ctx, "queue_item", func(ctx context.Context) (err error) { qi, err = m.jenkins.QueueItem(ctx, queueID); return err })
		switch {
		case errors.Is(err, jenkins.ErrNotFound): // forgotten: find its build below
		case err != nil:
			return err
		case qi.BuildNumber > 0:
			number = qi.BuildNumber
		case qi.Cancelled:
			return nil
		default:
			return fmt.Errorf("queue item %d still waiting after cancel", queueID)
		}
	}
	if number == 0 {
		var ref jenkins.Ref
		var found bool
		err := m.call(ctx, "find", func(ctx context.Context) (err error) {
			ref, found, err = m.jenkins.FindByBuildID(ctx, job, buildID)
			return err
		})
		switch {
		case errors.Is(err, jenkins.ErrNotFound), err == nil && !found:
			return nil
		case err != nil:
			return err
		case ref.Number == 0:
			return m.call(ctx, "cancel_queue_item", func(ctx context.Context) error { return m.jenkins.CancelQueueItem(ctx, ref.QueueID) })
		}
		number = ref.Number
	}
	err := m.call(ctx, "stop", func(ctx context.Context) error { return m.jenkins.StopBuild(ctx, job, number) })
	if errors.Is(err, jenkins.ErrNotFound) {
		return nil // nothing to stop; its follower reports LOST
	}
	return err
}

// completedOut is the ci.builds.completed message of rec for w.
func completedOut(t build.Triggered, key string, rec build.Build, w waiter) stage.Out {
	h := nats.Header{}
	h.Set(bus.BuildSet, t.BuildSet)
	h.Set(bus.Job, t.Job)
	bus.SetChange(h, t.Project, t.Change, t.PatchSet)
	id := key + ".completed"
	if w.replay != "" { // a deliberate redo: its own Msg-Id, and the voter sees the replay
		id += "." + subject.Token(w.replay)
		h.Set(bus.Replay, w.replay)
		if w.replayOf != "" {
			h.Set(bus.ReplayOf, w.replayOf)
		}
	}
	job, jenkinsJob := rec.Job, rec.JenkinsJob
	if job == "" {
		job = t.Job
	}
	if jenkinsJob == "" {
		jenkinsJob = t.JenkinsJob
	}
	return stage.Out{
		Subject: subject.BuildsCompleted, MsgID: id, Header: h,
		Data: build.Encode(build.Completed{
			BuildSet: t.BuildSet, Job: job, JenkinsJob: jenkinsJob, BuildID: key, Result: rec.Result,
			Number: rec.Number, URL: rec.URL, Duration: rec.Duration, Voting: rec.Voting,
		}),
	}
}
