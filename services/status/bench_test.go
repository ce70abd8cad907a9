package main

import (
	"bufio"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/gerritflow/gerritflow/pkg/build"
	"github.com/gerritflow/gerritflow/pkg/natstest"
	"github.com/gerritflow/gerritflow/pkg/servicetest"
	"github.com/gerritflow/gerritflow/pkg/subject"
)

// BenchmarkStatusScale seeds KV with 2 000 build sets in flight (three jobs
// each: one running, one queued, one passed; 6 000 build records), runs the
// status binary as its own process against it, and measures (make
// bench-status):
//   - ready: process start to /readyz 200 (connect, watch and load every record);
//   - page: GET / (the server-rendered page with every build set), first byte
//     and whole body, plain and gzipped;
//   - api: GET /api/buildsets;
//   - update: a build record written to KV until the event reaches a browser's stream;
//   - rss and heap of the process after the load and the requests.
//
// It runs once with empty buckets (the baseline) and once with the 2 000;
// each prints one line of figures, the 2 000 last.
func BenchmarkStatusScale(b *testing.B) {
	bin := filepath.Join(b.TempDir(), "status")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		b.Fatalf("go build: %v\n%s", err, out)
	}
	for i := 0; i < b.N; i++ {
		for _, sets := range []int{0, 2000} { // empty first: the baseline of the process
			measureStatus(b, bin, sets)
		}
	}
}

func measureStatus(b *testing.B, bin string, sets int) {
	srv, js := natstest.JetStream(b)
	seedInFlight(b, js, sets)
	addr := servicetest.FreeAddr(b)
	cfg := servicetest.WriteConfig(b, fmt.Sprintf("nats: { url: %q }\nlisten: { status: %q }\nstatus: { recent: 1h, jaeger_url: \"http://127.0.0.1:16686\" }\n", srv.URL(), addr))

	start := time.Now()
	cmd := exec.Command(bin, "--config", cfg)
	cmd.Stderr = io.Discard
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { _ = cmd.Process.Signal(syscall.SIGTERM); _ = cmd.Wait() }()
	for !get200(addr, "/readyz") {
		if time.Since(start) > time.Minute {
			b.Fatal("status not ready after 1m")
		}
		time.Sleep(5 * time.Millisecond)
	}
	ready := time.Since(start)

	ttfb, page, size := timeGet(b, "http://"+addr+"/", false)
	_, pageGz, sizeGz := timeGet(b, "http://"+addr+"/", true)
	_, api, apiSize := timeGet(b, "http://"+addr+"/api/buildsets", false)
	var update time.Duration
	if sets > 0 {
		update = updateLatency(b, js, addr)
	}
	rss, hwm := procMemory(b, cmd.Process.Pid)
	heap := metric(b, addr, "go_memstats_heap_inuse_bytes")

	if sets > 0 {
		b.ReportMetric(ready.Seconds()*1000, "ready-ms")
		b.ReportMetric(page.Seconds()*1000, "page-ms")
		b.ReportMetric(rss/(1<<20), "rss-MiB")
	}
	fmt.Printf("sets=%d ready=%dms page_ttfb=%dms page=%dms page_bytes=%d page_gzip=%dms page_gzip_bytes=%d api=%dms api_bytes=%d update=%dms rss=%.1fMiB rss_peak=%.1fMiB heap_inuse=%.1fMiB\n",
		sets, ready.Milliseconds(), ttfb.Milliseconds(), page.Milliseconds(), size, pageGz.Milliseconds(), sizeGz,
		api.Milliseconds(), apiSize, update.Milliseconds(), rss/(1<<20), hwm/(1<<20), heap/(1<<20))
}

// seedInFlight writes n build sets in flight, each with three jobs, through
// asynchronous KV publishes.
func seedInFlight(b *testing.B, js jetstream.JetStream, n int) {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	now := time.Now().UTC()
	projects := []string{"platform/core", "platform/ui", "tools/cli", "infra/deploy", "docs/site"}
	put := func(bucket, key string, v any) {
		if _, err := js.PublishAsync("$KV."+bucket+"."+key, build.Encode(v)); err != nil {
			b.Fatal(err)
		}
	}
	for i := 0; i < n; i++ {
		change := 10000 + i
		id := build.SetID(change, 1, "bench-"+strconv.Itoa(i), "")
		set := build.Set{ID: id, Project: projects[i%len(projects)], Branch: "main", Change: change, PatchSet: 1,
			Revision: fmt.Sprintf("%040x", i), Subject: fmt.Sprintf("Change %d: make the thing %d faster", change, i),
			URL:       fmt.Sprintf("https://review.example.com/c/%s/+/%d", projects[i%len(projects)], change),
			EventType: "patchset-created", EventID: "bench-" + strconv.Itoa(i), State: build.SetRunning,
			Created:     now.Add(-time.Duration(n-i) * time.Second),
			Traceparent: fmt.Sprintf("00-%032x-%016x-01", i+1, i+1),
			Jobs: []build.Job{{Name: "unit", JenkinsJob: "folder/unit-tests", Voting: true},
				{Name: "integration", JenkinsJob: "folder/integration", Voting: true}, {Name: "lint", JenkinsJob: "lint"}}}
		put("buildsets", id, set)
		for j, job := range set.Jobs {
			bd := build.Build{BuildSet: id, Job: job.Name, JenkinsJob: job.JenkinsJob, BuildID: subject.BuildKey(id, job.Name),
				Voting: job.Voting, Triggered: set.Created, QueueID: int64(i*3 + j)}
			switch j {
			case 0:
				bd.State, bd.Number, bd.URL = build.StateRunning, int64(i), fmt.Sprintf("https://ci.example.com/job/folder/job/unit-tests/%d/", i)
			case 1:
				bd.State = build.StateQueued
			default:
				bd.State, bd.Result, bd.Number, bd.Duration, bd.Finished = build.StateCompleted, build.ResultSuccess, int64(i), 40*time.Second, now
				bd.URL = fmt.Sprintf("https://ci.example.com/job/lint/%d/", i)
			}
			put("builds", subject.BuildKey(id, job.Name), bd)
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-ctx.Done():
		b.Fatal("seeding KV did not complete")
	}
}

func get200(addr, path string) bool {
	resp, err := http.Get("http://" + addr + path)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// timeGet returns the time to the first byte and to the end of the body, and
// the body's size on the wire.
func timeGet(b *testing.B, url string, gz bool) (ttfb, total time.Duration, size int) {
	b.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	if gz {
		req.Header.Set("Accept-Encoding", "gzip")
	}
	start := time.Now()
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	ttfb = time.Since(start)
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		b.Fatal(err)
	}
	total = time.Since(start)
	if gz {
		zr, err := gzip.NewReader(strings.NewReader(string(body)))
		if err != nil {
			b.Fatalf("GET %s: not gzipped: %v", url, err)
		}
		if _, err := io.Copy(io.Discard, zr); err != nil {
			b.Fatal(err)
		}
	}
	return ttfb, total, len(body)
}

// updateLatency writes one build record and times its arrival on an event stream.
func updateLatency(b *testing.B, js jetstream.JetStream, addr string) time.Duration {
	b.Helper()
	resp, err := http.Get("http://" + addr + "/api/events")
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	r := bufio.NewReader(resp.Body)
	for { // the first event is a reset with every build set
		line, err := r.ReadString('\n')
		if err != nil {
			b.Fatal(err)
		}
		if strings.HasPrefix(line, "data: ") {
			break
		}
	}
	id := build.SetID(10000, 1, "bench-0", "")
	bd := build.Build{BuildSet: id, Job: "integration", JenkinsJob: "folder/integration", BuildID: subject.BuildKey(id, "integration"),
		State: build.StateRunning, Number: 1, URL: "https://ci.example.com/job/folder/job/integration/1/", Triggered: time.Now()}
	start := time.Now()
	if _, err := js.Publish(context.Background(), "$KV.builds."+subject.BuildKey(id, "integration"), build.Encode(bd)); err != nil {
		b.Fatal(err)
	}
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			b.Fatal(err)
		}
		if strings.HasPrefix(line, "data: ") && strings.Contains(line, "integration/1/") {
			return time.Since(start)
		}
	}
}

// procMemory returns the resident set size and its peak, in bytes.
func procMemory(b *testing.B, pid int) (rss, peak float64) {
	b.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		kb, _ := strconv.ParseFloat(f[1], 64)
		switch f[0] {
		case "VmRSS:":
			rss = kb * 1024
		case "VmHWM:":
			peak = kb * 1024
		}
	}
	return rss, peak
}

// metric reads one gauge from /metrics.
func metric(b *testing.B, addr, name string) float64 {
	b.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	b.Fatalf("no metric %s", name)
	return 0
}
