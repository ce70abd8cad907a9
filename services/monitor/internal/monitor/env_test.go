package monitor_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/gerritflow/gerritflow/pkg/build"
	"github.com/gerritflow/gerritflow/pkg/bus"
	"github.com/gerritflow/gerritflow/pkg/config"
	"github.com/gerritflow/gerritflow/pkg/jenkins"
	"github.com/gerritflow/gerritflow/pkg/jenkinssim"
	"github.com/gerritflow/gerritflow/pkg/natstest"
	"github.com/gerritflow/gerritflow/pkg/servicetest"
	"github.com/gerritflow/gerritflow/pkg/stage"
	"github.com/gerritflow/gerritflow/pkg/subject"
	"github.com/gerritflow/gerritflow/pkg/telemetry"
	"github.com/gerritflow/gerritflow/services/monitor/internal/monitor"
	"github.com/gerritflow/gerritflow/streams"
)

const (
	jenkinsJob = "folder/unit-tests"
	project    = "platform/core"
)

// env is a broker with gerritflow's streams, a simulated Jenkins behind the
// real adapter, and the builds bucket.
type env struct {
	t      *testing.T
	srv    *natstest.Server
	js     jetstream.JetStream
	sim    *jenkinssim.Server
	url    string
	jk     *jenkins.Client
	builds jetstream.KeyValue

	outcomes sync.Map // build id -> jenkinssim.Outcome
	cur      atomic.Int64
	peak     atomic.Int64 // most Jenkins requests at once
	slow     atomic.Int64 // added latency of every Jenkins request (ns)
	setSeq   atomic.Int64
}

func newEnv(t *testing.T, opts jenkinssim.Options) *env {
	t.Helper()
	srv, js := natstest.JetStream(t)
	e := &env{t: t, srv: srv, js: js, sim: jenkinssim.New(opts)}
	e.sim.AddJob(jenkinsJob, jenkins.BuildIDParam, "GERRIT_CHANGE_NUMBER")
	e.sim.Script(jenkinsJob, func(p map[string]string) jenkinssim.Outcome {
		if o, ok := e.outcomes.Load(p[jenkins.BuildIDParam]); ok {
			return o.(jenkinssim.Outcome)
		}
		return jenkinssim.Outcome{}
	})
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := e.cur.Add(1)
		defer e.cur.Add(-1)
		for p := e.peak.Load(); n > p && !e.peak.CompareAndSwap(p, n); p = e.peak.Load() {
		}
		time.Sleep(time.Duration(e.slow.Load()))
		e.sim.Handler().ServeHTTP(w, r)
	}))
	t.Cleanup(ts.Close)
	t.Cleanup(func() { _ = e.sim.Close() })
	e.url = ts.URL
	e.jk = e.client(nil)
	var err error
	if e.builds, err = js.KeyValue(t.Context(), streams.BucketBuilds); err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *env) client(hc *http.Client) *jenkins.Client {
	e.t.Helper()
	c, err := jenkins.New(e.t.Context(), e.url, e.sim.User(), e.sim.Token(), hc)
	if err != nil {
		e.t.Fatal(err)
	}
	return c
}

// replica is one monitor replica: its own NATS connection, telemetry,
// Jenkins client and stage.RunAsync on the shared durable consumer.
type replica struct {
	m     *monitor.Monitor
	tel   *telemetry.Telemetry
	spans *tracetest.InMemoryExporter
	stop  func()
}

func defaultConfig() *config.Config {
	return &config.Config{
		Monitor: config.Monitor{PollInterval: config.Duration(20 * time.Millisecond), MaxPollInterval: config.Duration(200 * time.Millisecond)},
		Jenkins: config.Jenkins{RequestsPerSecond: 2000, MaxConcurrent: 4},
	}
}

func (e *env) replica(mod func(*config.Config)) *replica {
	t := e.t
	t.Helper()
	cfg := defaultConfig()
	if mod != nil {
		mod(cfg)
	}
	logs := &servicetest.Buffer{}
	spans := tracetest.NewInMemoryExporter()
	tel, err := telemetry.Start(context.Background(), "monitor", config.Otel{}, "127.0.0.1:0",
		telemetry.WithLogOutput(logs), telemetry.WithSpanExporter(spans))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = tel.Shutdown(context.Background())
		if t.Failed() {
			t.Logf("replica log:\n%s", logs.String())
		}
	})
	_, js := e.srv.Connect(t)
	builds, err := js.KeyValue(t.Context(), streams.BucketBuilds)
	if err != nil {
		t.Fatal(err)
	}
	m, err := monitor.New(cfg, e.client(tel.HTTPClient("jenkins", 5*time.Second)), builds, tel)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.SharePokes(js.Conn()); err != nil {
		t.Fatal(err)
	}
	spec := monitor.Spec
	spec.DrainTimeout = 5 * time.Second
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- stage.RunAsync(ctx, js, spec, m, tel) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("RunAsync = %v", err)
				}
			case <-time.After(15 * time.Second):
				t.Error("RunAsync did not return 15s after cancel")
			}
		})
	}
	t.Cleanup(stop)
	return &replica{m: m, tel: tel, spans: spans, stop: stop}
}

// metric sums the samples of gerritflow_monitor_<name> whose labels include want.
func (r *replica) metric(name string, want ...string) float64 {
	mfs, err := r.tel.Registry.Gather()
	if err != nil {
		panic(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != "gerritflow_monitor_"+name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			for i := 0; i+1 < len(want); i += 2 {
				if labels[want[i]] != want[i+1] {
					continue next
				}
			}
			sum += m.GetCounter().GetValue() + m.GetGauge().GetValue() + float64(m.GetHistogram().GetSampleCount())
		}
	}
	return sum
}

// queue starts a build the way the trigger does: the record in state
// triggering, Jenkins asked with GERRITFLOW_BUILD_ID, the record updated to
// queued with the queue id. It returns the ci.builds.triggered body.
func (e *env) queue(out jenkinssim.Outcome) build.Triggered {
	e.t.Helper()
	ctx := e.t.Context()
	change := 1000 + int(e.setSeq.Add(1))
	set := build.SetID(change, 1, "event-"+strconv.Itoa(change), "")
	key := subject.BuildKey(set, "unit")
	e.outcomes.Store(key, out)
	rec := build.Build{BuildSet: set, Job: "unit", JenkinsJob: jenkinsJob, BuildID: key, Voting: true,
		State: build.StateTriggering, Triggered: time.Now()}
	rev, err := e.builds.Create(ctx, key, build.Encode(rec))
	if err != nil {
		e.t.Fatal(err)
	}
	qid, err := e.jk.Build(ctx, jenkinsJob, map[string]string{jenkins.BuildIDParam: key, "GERRIT_CHANGE_NUMBER": strconv.Itoa(change)})
	if err != nil {
		e.t.Fatal(err)
	}
	rec.State, rec.QueueID = build.StateQueued, qid
	if _, err := e.builds.Update(ctx, key, build.Encode(rec), rev); err != nil {
		e.t.Fatal(err)
	}
	return build.Triggered{BuildSet: set, Job: "unit", JenkinsJob: jenkinsJob, BuildID: key, QueueID: qid,
		Project: project, Change: change, PatchSet: 1, Revision: "deadbeef", Voting: true}
}

func headers(set, job string, change int) nats.Header {
	h := nats.Header{}
	h.Set(bus.BuildSet, set)
	h.Set(bus.Job, job)
	bus.SetChange(h, project, change, 1)
	return h
}

// publishTriggered publishes ci.builds.triggered as the trigger does, with
// extra headers (e.g. a traceparent) given as name, value pairs.
func (e *env) publishTriggered(tr build.Triggered, kv ...string) {
	e.t.Helper()
	h := headers(tr.BuildSet, tr.Job, tr.Change)
	h.Set(bus.MsgID, tr.BuildID+".triggered")
	for i := 0; i+1 < len(kv); i += 2 {
		h.Set(kv[i], kv[i+1])
	}
	if _, err := e.js.PublishMsg(e.t.Context(), &nats.Msg{Subject: subject.BuildsTriggered, Header: h, Data: build.Encode(tr)}); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) trigger(out jenkinssim.Outcome) build.Triggered {
	e.t.Helper()
	tr := e.queue(out)
	e.publishTriggered(tr)
	return tr
}

func (e *env) publishCancel(tr build.Triggered, reason string) {
	e.t.Helper()
	h := headers(tr.BuildSet, tr.Job, tr.Change)
	h.Set(bus.MsgID, tr.BuildID+".cancel")
	body := build.Cancel{BuildSet: tr.BuildSet, Job: tr.Job, JenkinsJob: tr.JenkinsJob, BuildID: tr.BuildID, Reason: reason}
	if _, err := e.js.PublishMsg(e.t.Context(), &nats.Msg{Subject: subject.BuildsCancel, Header: h, Data: build.Encode(body)}); err != nil {
		e.t.Fatal(err)
	}
}

// completion is one ci.builds.completed message.
type completion struct {
	build.Completed
	msgID  string
	header nats.Header
	stored time.Time // when the stream stored it
}

// completed collects n ci.builds.completed messages, by build id, failing
// on a build completed twice.
func (e *env) completed(n int, timeout time.Duration) map[string]completion {
	e.t.Helper()
	got := map[string]completion{}
	for _, m := range natstest.Collect(e.t, e.js, subject.BuildsCompleted, n, timeout) {
		var c build.Completed
		if err := build.Decode(m.Data(), &c); err != nil {
			e.t.Fatal(err)
		}
		md, err := m.Metadata()
		if err != nil {
			e.t.Fatal(err)
		}
		if prev, dup := got[c.BuildID]; dup {
			e.t.Errorf("build %s completed twice: %s and %s", c.BuildID, prev.msgID, m.Headers().Get(bus.MsgID))
		}
		got[c.BuildID] = completion{Completed: c, msgID: m.Headers().Get(bus.MsgID), header: m.Headers(), stored: md.Timestamp}
	}
	return got
}

// one waits for the completion of tr.
func (e *env) one(tr build.Triggered, timeout time.Duration) completion {
	e.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		n := natstest.Count(e.t, e.js, subject.BuildsCompleted)
		if n > 0 {
			for id, c := range e.completed(n, 5*time.Second) {
				if id == tr.BuildID {
					return c
				}
			}
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("build %s not completed after %v (record: %+v)", tr.BuildID, timeout, e.record(tr.BuildID))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (e *env) record(key string) build.Build {
	e.t.Helper()
	b, _ := e.entry(key)
	return b
}

func (e *env) entry(key string) (build.Build, jetstream.KeyValueEntry) {
	e.t.Helper()
	en, err := e.builds.Get(context.Background(), key)
	if err != nil {
		e.t.Fatalf("get build %s: %v", key, err)
	}
	var b build.Build
	if err := build.Decode(en.Value(), &b); err != nil {
		e.t.Fatal(err)
	}
	return b, en
}

// checkRecordFirst asserts that the build record says what c says, and
// that it was written completed before c was published.
func (e *env) checkRecordFirst(c completion) {
	e.t.Helper()
	rec, en := e.entry(c.BuildID)
	if rec.State != build.StateCompleted || rec.Result != c.Result || rec.Number != c.Number || rec.URL != c.URL || rec.Duration != c.Duration {
		e.t.Errorf("record %s = %s %s #%d %s %v; want completed like the message: %s #%d %s %v",
			c.BuildID, rec.State, rec.Result, rec.Number, rec.URL, rec.Duration, c.Result, c.Number, c.URL, c.Duration)
	}
	if en.Created().After(c.stored) {
		e.t.Errorf("record %s written completed at %v, after ci.builds.completed was stored at %v",
			c.BuildID, en.Created().Format(time.StampMicro), c.stored.Format(time.StampMicro))
	}
}

// eventually polls cond every 10ms for up to 10s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (e *env) waitState(key string, want build.State) build.Build {
	e.t.Helper()
	var rec build.Build
	eventually(e.t, fmt.Sprintf("build %s %s", key, want), func() bool {
		rec = e.record(key)
		return rec.State == want
	})
	return rec
}

func (e *env) queueItemGone(id int64) bool {
	_, err := e.jk.QueueItem(context.Background(), id)
	return errors.Is(err, jenkins.ErrNotFound)
}
