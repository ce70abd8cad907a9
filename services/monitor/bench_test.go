package main

import (
	"bufio"
	"context"
	"fmt"
	"hash/fnv"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/gerritflow/gerritflow/pkg/build"
	"github.com/gerritflow/gerritflow/pkg/bus"
	"github.com/gerritflow/gerritflow/pkg/jenkins"
	"github.com/gerritflow/gerritflow/pkg/jenkinssim"
	"github.com/gerritflow/gerritflow/pkg/natstest"
	"github.com/gerritflow/gerritflow/pkg/servicetest"
	"github.com/gerritflow/gerritflow/pkg/subject"
	"github.com/gerritflow/gerritflow/streams"
)

// monitorBench is the workload and the monitor's configuration; the
// environment overrides each (MONITOR_BENCH_BUILDS, _RPS, _CONCURRENT, _POLL,
// _MAX_POLL, _PHASES = "push,poll", "push" or "poll", and _GOMEMLIMIT: the
// monitor process's GOMEMLIMIT, unset by default).
type monitorBench struct {
	builds     int
	rps        float64
	concurrent int
	poll       time.Duration
	maxPoll    time.Duration
	phases     []string
	memLimit   string
}

func monitorBenchFromEnv() monitorBench {
	m := monitorBench{builds: 10000, rps: 200, concurrent: 16, poll: 2 * time.Second, maxPoll: 30 * time.Second, phases: []string{"push", "poll"}}
	if v, err := strconv.Atoi(os.Getenv("MONITOR_BENCH_BUILDS")); err == nil && v > 0 {
		m.builds = v
	}
	if v, err := strconv.ParseFloat(os.Getenv("MONITOR_BENCH_RPS"), 64); err == nil && v > 0 {
		m.rps = v
	}
	if v, err := strconv.Atoi(os.Getenv("MONITOR_BENCH_CONCURRENT")); err == nil && v > 0 {
		m.concurrent = v
	}
	if v, err := time.ParseDuration(os.Getenv("MONITOR_BENCH_POLL")); err == nil && v > 0 {
		m.poll = v
	}
	if v, err := time.ParseDuration(os.Getenv("MONITOR_BENCH_MAX_POLL")); err == nil && v > 0 {
		m.maxPoll = v
	}
	if v := os.Getenv("MONITOR_BENCH_PHASES"); v != "" {
		m.phases = strings.Split(v, ",")
	}
	m.memLimit = os.Getenv("MONITOR_BENCH_GOMEMLIMIT")
	return m
}

// Shape of the builds: 20 jobs; 1–5 s in the queue, 20–60 s of building,
// one in twenty fails (spread by a hash of the build id).
const (
	benchJobs        = 20
	benchCreators    = 32 // builds being created at once (Jenkins call, KV, publish)
	benchPhaseBudget = 20 * time.Minute
)

func benchOutcome(buildID string) jenkinssim.Outcome {
	h := fnv.New64a()
	h.Write([]byte(buildID))
	v := h.Sum64()
	o := jenkinssim.Outcome{
		QueueDelay: time.Second + time.Duration(v%4000)*time.Millisecond,
		Duration:   20*time.Second + time.Duration((v>>16)%40000)*time.Millisecond,
	}
	if (v>>40)%20 == 0 {
		o.Result = build.ResultFailure
	}
	return o
}

// BenchmarkMonitorBuilds runs one monitor process (the real binary, built
// into a temp dir, with a generated config) following 10 000 builds in flight
// on the Jenkins simulator, twice in one run: with the simulator pushing
// COMPLETED notifications to POST /jenkins/notify, then poll only (a fresh
// process, broker and simulator for each phase). Builds are started as the
// trigger starts them: queue item through pkg/jenkins' Build, the builds KV
// record (queued, queue id), then ci.builds.triggered.
//
// Per phase it reports the monitor's peak RSS (VmHWM of /proc/<pid>/status),
// its Jenkins requests per second (the simulator's count minus this
// benchmark's own Build calls: the mean, and the busiest second as they
// arrive) against the budget, and the delay from each build's scripted end
// to the stream timestamp of its ci.builds.completed (p50, p90, p99, max).
// Its last two lines are
// "poll_only builds=... p99_detect_ms=<z>" and
// "builds=<n> rss_mb=<x> req_per_s=<y> budget=<b> p99_detect_ms=<z>" (push on).
func BenchmarkMonitorBuilds(b *testing.B) {
	cfg := monitorBenchFromEnv()
	bin := buildMonitor(b)
	results := map[string]phaseResult{}
	for i := 0; i < b.N; i++ {
		for _, ph := range cfg.phases {
			results[ph] = runMonitorPhase(b, bin, cfg, ph == "push")
		}
	}
	for _, ph := range cfg.phases {
		r := results[ph]
		fmt.Printf("push=%-3s builds=%d wall_s=%.1f rss_mb=%.1f cpu_cores=%.2f jenkins_requests=%d req_per_s=%.1f busiest_second=%.1f budget=%g "+
			"detect_ms p50=%d p90=%d p99=%d max=%d notifications=%d/%d results=%s\n",
			map[string]string{"push": "on", "poll": "off"}[ph], cfg.builds, r.wall.Seconds(), r.rssMB, r.cores, r.requests, r.reqPerSec, r.busiest, cfg.rps,
			r.p50.Milliseconds(), r.p90.Milliseconds(), r.p99.Milliseconds(), r.max.Milliseconds(), r.delivered, r.delivered+r.failed, r.results)
	}
	if r, ok := results["poll"]; ok {
		b.ReportMetric(float64(r.p99.Milliseconds()), "poll_p99_ms")
		fmt.Printf("poll_only builds=%d rss_mb=%.1f req_per_s=%.1f budget=%g p99_detect_ms=%d\n", cfg.builds, r.rssMB, r.reqPerSec, cfg.rps, r.p99.Milliseconds())
	}
	if r, ok := results["push"]; ok {
		b.ReportMetric(r.rssMB, "rss_MB")
		b.ReportMetric(float64(r.p99.Milliseconds()), "push_p99_ms")
		fmt.Printf("builds=%d rss_mb=%.1f req_per_s=%.1f budget=%g p99_detect_ms=%d\n", cfg.builds, r.rssMB, r.reqPerSec, cfg.rps, r.p99.Milliseconds())
	}
}

type phaseResult struct {
	wall               time.Duration // first build created to last completion stored
	rssMB, cores       float64
	requests           int64
	reqPerSec          float64
	busiest            float64 // the monitor's request rate in its busiest second
	p50, p90, p99, max time.Duration
	delivered, failed  int64 // notifications
	results            string
}

// buildMonitor builds ./services/monitor of the workspace into a temp dir.
func buildMonitor(b *testing.B) string {
	b.Helper()
	wd, err := os.Getwd()
	if err != nil {
		b.Fatal(err)
	}
	root := wd
	for {
		if _, err := os.Stat(filepath.Join(root, "go.work")); err == nil {
			break
		}
		parent := filepath.Dir(root)
		if parent == root {
			b.Fatalf("no go.work above %s", wd)
		}
		root = parent
	}
	bin := filepath.Join(b.TempDir(), "monitor")
	cmd := exec.Command("go", "build", "-o", bin, "./services/monitor")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("go build ./services/monitor: %v\n%s", err, out)
	}
	return bin
}

// benchHeader marks this benchmark's own Jenkins requests.
const benchHeader = "X-Gerritflow-Bench"

// countingTransport counts and marks this benchmark's own Jenkins requests.
type countingTransport struct{ n atomic.Int64 }

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	c.n.Add(1)
	r = r.Clone(r.Context())
	r.Header.Set(benchHeader, "1")
	return http.DefaultTransport.RoundTrip(r)
}

func runMonitorPhase(b *testing.B, bin string, cfg monitorBench, push bool) phaseResult {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), benchPhaseBudget)
	defer cancel()
	srv, js := natstest.JetStream(b)
	addr := servicetest.FreeAddr(b)
	opts := jenkinssim.Options{User: "ci", Token: "bench-token"}
	if push {
		opts.NotifyURL = "http://" + addr + "/jenkins/notify"
		opts.NotifyPhases = []string{jenkinssim.PhaseCompleted}
		opts.NotifyConcurrency = 8
	}
	// The simulator behind a counter of the requests that are not this
	// benchmark's (its own are marked): the monitor's, as Jenkins sees them
	// arrive, for the busiest second. The total is checked against
	// jk.Requests() minus this benchmark's own at the end.
	jk := jenkinssim.New(opts)
	var seen atomic.Int64
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get(benchHeader) == "" {
			seen.Add(1)
		}
		jk.Handler().ServeHTTP(w, r)
	}))
	b.Cleanup(func() { ts.Close(); _ = jk.Close() })
	for j := range benchJobs {
		job := fmt.Sprintf("bench/job-%02d", j)
		jk.AddJob(job, jenkins.BuildIDParam)
		jk.Script(job, func(p map[string]string) jenkinssim.Outcome { return benchOutcome(p[jenkins.BuildIDParam]) })
	}

	dir := b.TempDir()
	cfgPath := filepath.Join(dir, "gerritflow.yaml")
	yaml := fmt.Sprintf(`nats: { url: %q }
listen: { monitor: %q }
jenkins: { url: %q, user: ci, token_env: JENKINS_TOKEN, requests_per_second: %g, max_concurrent: %d }
monitor: { poll_interval: %s, max_poll_interval: %s }
`, srv.URL(), addr, ts.URL, cfg.rps, cfg.concurrent, cfg.poll, cfg.maxPoll)
	if err := os.WriteFile(cfgPath, []byte(yaml), 0o600); err != nil {
		b.Fatal(err)
	}
	logFile, err := os.Create(filepath.Join(dir, "monitor.log"))
	if err != nil {
		b.Fatal(err)
	}
	defer logFile.Close()
	cmd := exec.Command(bin, "--config", cfgPath)
	cmd.Env = append(os.Environ(), "JENKINS_TOKEN=bench-token")
	if cfg.memLimit != "" {
		cmd.Env = append(cmd.Env, "GOMEMLIMIT="+cfg.memLimit)
	}
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	pid := cmd.Process.Pid
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		_ = syscall.Kill(pid, syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			_ = syscall.Kill(pid, syscall.SIGKILL)
			<-exited
		}
	}
	defer stop()
	waitReady(b, addr, exited)

	// The benchmark's own Jenkins client: the trigger's adapter.
	ct := &countingTransport{}
	client, err := jenkins.New(ctx, ts.URL, "ci", "bench-token", &http.Client{Transport: ct, Timeout: time.Minute})
	if err != nil {
		b.Fatal(err)
	}
	kv, err := js.KeyValue(ctx, streams.BucketBuilds)
	if err != nil {
		b.Fatal(err)
	}
	monitorRequests := func() int64 { return jk.Requests() - ct.n.Load() }

	// The monitor's request rate over each second, sampled while the phase
	// runs; the busiest one is reported.
	var busiest atomic.Uint64 // math.Float64bits
	samplerDone := make(chan struct{})
	samplerStop := make(chan struct{})
	go func() {
		defer close(samplerDone)
		t := time.NewTicker(time.Second)
		defer t.Stop()
		last, lastAt := seen.Load(), time.Now()
		for {
			select {
			case <-samplerStop:
				return
			case <-t.C:
			}
			cur, at := seen.Load(), time.Now()
			if rate := float64(cur-last) / at.Sub(lastAt).Seconds(); rate > math.Float64frombits(busiest.Load()) {
				busiest.Store(math.Float64bits(rate))
			}
			last, lastAt = cur, at
		}
	}()

	req0, seen0, cpu0 := monitorRequests(), seen.Load(), processCPU(b, pid)
	start := time.Now()
	createBuilds(b, ctx, client, kv, js, cfg.builds)
	created := time.Since(start)

	// Wait for every ci.builds.completed.
	for {
		n := natstest.Count(b, js, subject.BuildsCompleted)
		if n >= cfg.builds {
			break
		}
		select {
		case err := <-exited:
			b.Fatalf("monitor exited: %v (log: %s)", err, logFile.Name())
		case <-ctx.Done():
			b.Fatalf("%d of %d builds completed after %v", n, cfg.builds, benchPhaseBudget)
		case <-time.After(200 * time.Millisecond):
		}
	}
	var r phaseResult
	r.wall = time.Since(start)
	close(samplerStop)
	<-samplerDone
	r.requests = monitorRequests() - req0
	if n := seen.Load() - seen0; n != r.requests {
		b.Errorf("the monitor's requests: %d by jk.Requests() less this benchmark's own, %d seen arriving", r.requests, n)
	}
	r.busiest = math.Float64frombits(busiest.Load())
	r.rssMB = float64(procStatusKB(b, pid, "VmHWM")) / 1024
	r.cores = float64(processCPU(b, pid)-cpu0) / float64(r.wall)
	r.delivered, r.failed = jk.Notified()

	// Detect delays: scripted end -> stream timestamp of ci.builds.completed.
	ends := map[string]time.Time{}
	for j := range benchJobs {
		job := fmt.Sprintf("bench/job-%02d", j)
		for _, rec := range jk.Builds(job) {
			ends[job+"#"+strconv.Itoa(rec.Number)] = rec.End
		}
	}
	msgs := natstest.Collect(b, js, subject.BuildsCompleted, cfg.builds, time.Minute)
	delays := make([]time.Duration, 0, len(msgs))
	results := map[string]int{}
	var last time.Time
	for _, m := range msgs {
		var c build.Completed
		if err := build.Decode(m.Data(), &c); err != nil {
			b.Fatal(err)
		}
		md, err := m.Metadata()
		if err != nil {
			b.Fatal(err)
		}
		end, ok := ends[c.JenkinsJob+"#"+strconv.FormatInt(c.Number, 10)]
		if !ok {
			b.Fatalf("completed %s (%s #%d %s): no such build in the simulator", c.BuildID, c.JenkinsJob, c.Number, c.Result)
		}
		delays = append(delays, md.Timestamp.Sub(end))
		results[c.Result]++
		if md.Timestamp.After(last) {
			last = md.Timestamp
		}
	}
	r.reqPerSec = float64(r.requests) / last.Sub(start).Seconds()
	slices.Sort(delays)
	pct := func(p float64) time.Duration { return delays[min(len(delays)-1, int(p*float64(len(delays))))] }
	r.p50, r.p90, r.p99, r.max = pct(0.50), pct(0.90), pct(0.99), delays[len(delays)-1]
	keys := make([]string, 0, len(results))
	for k := range results {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		r.results += fmt.Sprintf("%s:%d,", k, results[k])
	}
	r.results = strings.TrimSuffix(r.results, ",")
	if results[build.ResultSuccess]+results[build.ResultFailure] != cfg.builds {
		b.Errorf("results %s; want only SUCCESS and FAILURE", r.results)
	}
	b.Logf("push=%v: %d builds created in %v; monitor log %s", push, cfg.builds, created, logFile.Name())
	stop()
	return r
}

// createBuilds starts n builds as the trigger does, benchCreators at a time.
func createBuilds(b *testing.B, ctx context.Context, client *jenkins.Client, kv jetstream.KeyValue, js jetstream.JetStream, n int) {
	b.Helper()
	next := make(chan int)
	errs := make(chan error, benchCreators)
	var wg sync.WaitGroup
	for range benchCreators {
		wg.Go(func() {
			for i := range next {
				if err := createBuild(ctx, client, kv, js, i); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	for i := 0; i < n; i++ {
		select {
		case next <- i:
		case err := <-errs:
			close(next)
			wg.Wait()
			b.Fatal(err)
		}
	}
	close(next)
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
}

func createBuild(ctx context.Context, client *jenkins.Client, kv jetstream.KeyValue, js jetstream.JetStream, i int) error {
	change := 10000 + i
	setID := fmt.Sprintf("%d-1-%016x", change, uint64(i)*0x9e3779b97f4a7c15)
	job := fmt.Sprintf("job-%02d", i%benchJobs)
	jenkinsJob := "bench/" + job
	key := subject.BuildKey(setID, job)
	qid, err := client.Build(ctx, jenkinsJob, map[string]string{jenkins.BuildIDParam: key})
	if err != nil {
		return err
	}
	rec := build.Build{BuildSet: setID, Job: job, JenkinsJob: jenkinsJob, BuildID: key, Voting: true,
		State: build.StateQueued, QueueID: qid, Triggered: time.Now()}
	if _, err := kv.Create(ctx, key, build.Encode(rec)); err != nil {
		return fmt.Errorf("create build %s: %w", key, err)
	}
	h := nats.Header{}
	h.Set(bus.MsgID, key+".triggered")
	h.Set(bus.BuildSet, setID)
	h.Set(bus.Job, job)
	bus.SetChange(h, "platform/core", change, 1)
	data := build.Encode(build.Triggered{BuildSet: setID, Job: job, JenkinsJob: jenkinsJob, BuildID: key, QueueID: qid,
		Project: "platform/core", Change: change, PatchSet: 1, Revision: fmt.Sprintf("%040x", i), Voting: true})
	if _, err := js.PublishMsg(ctx, &nats.Msg{Subject: subject.BuildsTriggered, Header: h, Data: data}); err != nil {
		return fmt.Errorf("publish triggered %s: %w", key, err)
	}
	return nil
}

func waitReady(b *testing.B, addr string, exited <-chan error) {
	b.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case err := <-exited:
			b.Fatalf("monitor exited before ready: %v", err)
		default:
		}
		resp, err := http.Get("http://" + addr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			b.Fatalf("monitor not ready after 30s")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// procStatusKB reads a "<field>: <n> kB" line of /proc/<pid>/status.
func procStatusKB(b *testing.B, pid int, field string) int64 {
	b.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			v, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				b.Fatalf("/proc/%d/status %s: %v", pid, field, err)
			}
			return v
		}
	}
	b.Fatalf("/proc/%d/status has no %s", pid, field)
	return 0
}

// processCPU is the user + system CPU time of process pid (/proc/<pid>/stat
// fields 14 and 15, in clock ticks of 1/100 s).
func processCPU(b *testing.B, pid int) time.Duration {
	b.Helper()
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	s := string(raw)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		b.Fatalf("parse /proc/%d/stat: %q", pid, s)
	}
	return time.Duration(ut+st) * 10 * time.Millisecond
}
