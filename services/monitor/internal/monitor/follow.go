package monitor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/gerritflow/gerritflow/pkg/build"
	"github.com/gerritflow/gerritflow/pkg/jenkins"
	"github.com/gerritflow/gerritflow/pkg/stage"
	"github.com/gerritflow/gerritflow/pkg/telemetry"
)

// maxLoadTries bounds the reads of a build record that is missing or still
// "triggering" (a KV read lagging behind the trigger's write) before the
// message is handed back for redelivery.
const maxLoadTries = 5

// follower follows one build from its queue item to its result. Its step
// runs on the scheduler's workers, never concurrently with itself, so the
// fields below waiters need no lock.
//
// Ten thousand followers live at once, so a follower keeps only what the
// stage does not hold already: its span attributes and logger are derived
// from the message (header, logger) when needed rather than kept.
type follower struct {
	m      *Monitor
	run    *run
	ctx    context.Context // the stage's, with the consumer span of the message
	msgLog *slog.Logger    // the message's logger (held by the stage)
	header nats.Header     // the message's header (held by the stage)
	t      build.Triggered
	key    string // BuildID: the builds key and GERRITFLOW_BUILD_ID

	entry   *Entry   // guarded by m.mu
	waiters []waiter // guarded by m.mu

	loaded     bool
	loadTries  int
	queueID    int64 // written under m.mu (setQueue), read freely by step
	number     int64
	misses     int  // polls in a row Jenkins did not know the item or build
	errs       int  // failed polls in a row
	stopped    bool // stopped for exceeding the build timeout
	cancelSent bool // asked Jenkins to cancel (record had a cancel reason)
}

// step is one poll round: a short span of the build's trace.
func (f *follower) step() (time.Duration, bool) {
	if f.ctx.Err() != nil {
		return 0, true // the stage stopped; the message goes to another replica
	}
	ctx, cancel := context.WithTimeout(f.ctx, stepTimeout)
	defer cancel()
	ctx, span := f.m.tracer.Start(ctx, "poll "+f.t.JenkinsJob, trace.WithAttributes(f.attrs()...))
	defer span.End()
	again, stop := f.poll(ctx)
	span.SetAttributes(attribute.Int64("jenkins.queue_id", f.queueID), attribute.Int64("jenkins.build_number", f.number))
	return again, stop
}

// attrs are the attributes of the poll spans.
func (f *follower) attrs() []attribute.KeyValue {
	return append([]attribute.KeyValue{
		telemetry.AttrBuildSet.String(f.t.BuildSet), telemetry.AttrJob.String(f.t.Job),
		telemetry.AttrJenkinsJob.String(f.t.JenkinsJob),
	}, stage.ChangeAttrs(f.header)...)
}

// log is the build's logger.
func (f *follower) log() *slog.Logger {
	return f.msgLog.With(telemetry.KeyJob, f.t.Job, "build_id", f.t.BuildID)
}

func (f *follower) poll(ctx context.Context) (time.Duration, bool) {
	if !f.loaded {
		if again, stop := f.load(ctx); stop || !f.loaded {
			return again, stop
		}
	}
	if f.number == 0 {
		return f.pollQueue(ctx)
	}
	return f.pollBuild(ctx)
}

// load reads the build record: where to start (queue item or build), or the
// result to announce again.
func (f *follower) load(ctx context.Context) (time.Duration, bool) {
	rec, _, err := f.m.read(ctx, f.key)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound), err == nil && rec.State == build.StateTriggering:
		// The trigger records the queue item before it publishes; a lagging
		// read can still miss it. Retry a few times, then redeliver.
		f.loadTries++
		if f.loadTries >= maxLoadTries {
			return f.fail(ctx, fmt.Errorf("build %s: no queued record after %d reads", f.key, f.loadTries))
		}
		return f.m.set.ErrorBackoff(f.loadTries), false
	case err != nil:
		return f.retry(ctx, err)
	}
	f.loaded = true
	if rec.State == build.StateCompleted {
		f.log().InfoContext(ctx, "decision", telemetry.KeyDecision, "announce", telemetry.KeyReason, "already completed", "result", rec.Result)
		return f.emit(ctx, rec, false, jenkins.Build{})
	}
	id := rec.QueueID
	if id == 0 {
		id = f.t.QueueID
	}
	f.m.setQueue(f, id)
	f.number = rec.Number
	if rec.Cancel != "" { // cancelled before we followed it: make sure Jenkins was asked
		f.abort(ctx)
	}
	return 0, false
}

func (f *follower) pollQueue(ctx context.Context) (time.Duration, bool) {
	if f.queueID == 0 {
		return f.recover(ctx)
	}
	var qi jenkins.QueueItem
	err := f.m.call(ctx, "queue_item", func(ctx context.Context) (err error) { qi, err = f.m.jenkins.QueueItem(ctx, f.queueID); return err })
	switch {
	case errors.Is(err, jenkins.ErrNotFound): // forgotten (5 minutes after it left the queue)
		return f.recover(ctx)
	case err != nil:
		return f.retry(ctx, err)
	}
	f.errs, f.misses = 0, 0
	switch {
	case qi.Cancelled:
		return f.complete(ctx, Outcome{QueueCancelled: true}, jenkins.Build{})
	case qi.BuildNumber > 0:
		return f.started(ctx, qi.BuildNumber, qi.BuildURL)
	}
	return f.m.set.PollInterval, false // waiting or blocked
}

// recover finds a forgotten queue item's build by its GERRITFLOW_BUILD_ID;
// what stays unfound LostAfter polls in a row is LOST.
func (f *follower) recover(ctx context.Context) (time.Duration, bool) {
	var ref jenkins.Ref
	var found bool
	err := f.m.call(ctx, "find", func(ctx context.Context) (err error) {
		ref, found, err = f.m.jenkins.FindByBuildID(ctx, f.t.JenkinsJob, f.key)
		return err
	})
	switch {
	case errors.Is(err, jenkins.ErrNotFound): // the job is gone: counts as not found
	case err != nil:
		return f.retry(ctx, err)
	case found && ref.Number > 0:
		f.errs, f.misses = 0, 0
		f.log().InfoContext(ctx, "decision", telemetry.KeyDecision, "recover", telemetry.KeyReason, "queue item forgotten; build found by build id", "number", ref.Number)
		return f.started(ctx, ref.Number, ref.URL)
	case found:
		f.errs, f.misses = 0, 0
		f.m.setQueue(f, ref.QueueID)
		return f.m.set.PollInterval, false
	}
	f.errs = 0
	f.misses++
	if f.misses >= f.m.set.LostAfter {
		f.log().WarnContext(ctx, "decision", telemetry.KeyDecision, "lost", telemetry.KeyReason, "Jenkins knows neither the queue item nor a build with this build id", "queue_id", f.queueID)
		return f.complete(ctx, Outcome{Lost: true}, jenkins.Build{})
	}
	return f.m.set.PollInterval, false
}

// started records the build number (CAS to running) and polls the build at once.
func (f *follower) started(ctx context.Context, number int64, url string) (time.Duration, bool) {
	rec, err := f.m.cas(ctx, f.key, func(cur *build.Build) bool {
		if cur.State == build.StateCompleted || cur.State == build.StateRunning && cur.Number == number {
			return false
		}
		cur.State, cur.Number, cur.URL = build.StateRunning, number, url
		return true
	})
	if err != nil {
		return f.retry(ctx, err)
	}
	if rec.State == build.StateCompleted {
		return f.emit(ctx, rec, false, jenkins.Build{})
	}
	f.number = number
	f.log().InfoContext(ctx, "build running", "number", number, "url", url)
	if rec.Cancel != "" {
		f.abort(ctx)
	}
	return 0, false
}

func (f *follower) pollBuild(ctx context.Context) (time.Duration, bool) {
	var b jenkins.Build
	err := f.m.call(ctx, "get_build", func(ctx context.Context) (err error) {
		b, err = f.m.jenkins.GetBuild(ctx, f.t.JenkinsJob, f.number)
		return err
	})
	switch {
	case errors.Is(err, jenkins.ErrNotFound):
		f.errs = 0
		f.misses++
		if f.misses >= f.m.set.LostAfter {
			f.log().WarnContext(ctx, "decision", telemetry.KeyDecision, "lost", telemetry.KeyReason, "Jenkins no longer knows the build", "number", f.number)
			return f.complete(ctx, Outcome{Lost: true}, jenkins.Build{})
		}
		return f.m.set.PollInterval, false
	case err != nil:
		return f.retry(ctx, err)
	}
	f.errs, f.misses = 0, 0
	now := f.m.clock.Now()
	if b.Building || b.Result == "" {
		if !f.stopped && f.m.set.Overtime(b, now) {
			err := f.m.call(ctx, "stop", func(ctx context.Context) error { return f.m.jenkins.StopBuild(ctx, f.t.JenkinsJob, f.number) })
			if err != nil && !errors.Is(err, jenkins.ErrNotFound) {
				return f.retry(ctx, err)
			}
			f.stopped = true
			f.log().WarnContext(ctx, "decision", telemetry.KeyDecision, "stop", telemetry.KeyReason, "build timeout",
				"timeout", f.m.set.BuildTimeout.String(), "number", f.number)
			return f.m.set.PollInterval, false
		}
		return f.m.set.RunningPoll(b, now), false
	}
	return f.complete(ctx, f.m.set.Finished(b, f.stopped), b)
}

// complete records the result (CAS to completed), then announces it.
func (f *follower) complete(ctx context.Context, o Outcome, b jenkins.Build) (time.Duration, bool) {
	now := f.m.clock.Now()
	wrote := false
	rec, err := f.m.cas(ctx, f.key, func(cur *build.Build) bool {
		wrote = false
		if cur.State == build.StateCompleted {
			return false
		}
		wrote = true
		cur.State, cur.Result = build.StateCompleted, FinalResult(o, cur.Cancel != "")
		if b.Number > 0 {
			cur.Number, cur.URL = b.Number, b.URL
		}
		cur.Duration, cur.Finished = b.Duration, now
		if end, ok := ended(b); ok {
			cur.Finished = end
		}
		return true
	})
	if err != nil {
		return f.retry(ctx, err)
	}
	if wrote {
		f.m.completions.WithLabelValues(rec.Result).Inc()
		f.log().InfoContext(ctx, "decision", telemetry.KeyDecision, "completed", "result", rec.Result,
			"number", rec.Number, "duration", rec.Duration.String(), "cancel", rec.Cancel)
	}
	return f.emit(ctx, rec, wrote, b)
}

// ended is when Jenkins says b ended (its start plus its duration).
func ended(b jenkins.Build) (time.Time, bool) {
	if b.Number == 0 || b.Timestamp.Unix() <= 0 {
		return time.Time{}, false
	}
	return b.Timestamp.Add(b.Duration), true
}

// emit hands the completed record to every waiting message: the stage
// publishes ci.builds.completed, then acks.
func (f *follower) emit(ctx context.Context, rec build.Build, measure bool, b jenkins.Build) (time.Duration, bool) {
	trace.SpanFromContext(ctx).SetAttributes(attribute.String("ci.result", rec.Result))
	for _, w := range f.m.release(f) {
		w.done([]stage.Out{completedOut(f.t, f.key, rec, w)}, nil)
	}
	if end, ok := ended(b); ok && measure {
		f.m.detect.Observe(max(f.m.clock.Now().Sub(end), 0).Seconds())
	}
	return 0, true
}

// fail hands the messages back: err decides between redelivery and the DLQ.
func (f *follower) fail(ctx context.Context, err error) (time.Duration, bool) {
	span := trace.SpanFromContext(ctx)
	span.RecordError(err)
	span.SetStatus(codes.Error, err.Error())
	for _, w := range f.m.release(f) {
		w.done(nil, err)
	}
	return 0, true
}

// retry backs off after a failed poll; a permanent KV error fails the follow.
func (f *follower) retry(ctx context.Context, err error) (time.Duration, bool) {
	if stage.IsPermanent(err) && !isJenkins(err) {
		return f.fail(ctx, err)
	}
	f.errs++
	d := f.m.set.ErrorBackoff(f.errs)
	trace.SpanFromContext(ctx).RecordError(err)
	level := slog.LevelDebug
	if f.errs == 1 || f.errs%10 == 0 { // an outage of Jenkins must not log a line per build per poll
		level = slog.LevelWarn
	}
	f.log().Log(ctx, level, "poll failed; will retry", telemetry.KeyErr, err, "failures", f.errs, "delay", d.String())
	return d, false
}

// isJenkins tells Jenkins' errors (retried until Jenkins answers: a 403
// after a credentials change must not drop a build) from the record's.
func isJenkins(err error) bool {
	var se *jenkins.StatusError
	return errors.As(err, &se)
}

// abort asks Jenkins to cancel the build whose record holds a cancel reason.
func (f *follower) abort(ctx context.Context) {
	if f.cancelSent {
		return
	}
	if err := f.m.cancelInJenkins(ctx, f.t.JenkinsJob, f.key, f.queueID, f.number); err != nil {
		f.log().WarnContext(ctx, "cancel in Jenkins failed; the cancel message retries", telemetry.KeyErr, err)
		return
	}
	f.cancelSent = true
}
