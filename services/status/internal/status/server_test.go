package status

import (
	"bufio"
	"compress/gzip"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/gerritflow/gerritflow/pkg/build"
	"github.com/gerritflow/gerritflow/pkg/config"
	"github.com/gerritflow/gerritflow/pkg/natstest"
	"github.com/gerritflow/gerritflow/pkg/subject"
	"github.com/gerritflow/gerritflow/pkg/telemetry"
)

// env is a status server watching a real JetStream's buckets.
type env struct {
	t   *testing.T
	b   Buckets
	srv *Server
	web *httptest.Server
}

func newEnv(t *testing.T) *env {
	t.Helper()
	_, js := natstest.JetStream(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b, err := OpenBuckets(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	return &env{t: t, b: b}
}

// start runs the server (after whatever was seeded) and waits for its load.
func (e *env) start(set Settings) {
	e.t.Helper()
	tel, err := telemetry.Start(context.Background(), "status", config.Otel{}, "", telemetry.WithLogOutput(io.Discard))
	if err != nil {
		e.t.Fatal(err)
	}
	if set.FlushEvery == 0 {
		set.FlushEvery = 20 * time.Millisecond
	}
	if e.srv, err = New(set, tel); err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan struct{})
	done := make(chan error, 1)
	go func() { done <- e.srv.Run(ctx, e.b, func() { close(ready) }) }()
	e.t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			e.t.Errorf("Run = %v; want nil after cancel", err)
		}
	})
	select {
	case <-ready:
	case err := <-done:
		e.t.Fatalf("Run returned before ready: %v", err)
	case <-time.After(20 * time.Second):
		e.t.Fatal("not loaded after 20s")
	}
	e.web = httptest.NewServer(e.srv.Handler())
	e.t.Cleanup(e.web.Close)
}

func (e *env) put(kv jetstream.KeyValue, key string, v any) {
	e.t.Helper()
	if _, err := kv.Put(context.Background(), key, build.Encode(v)); err != nil {
		e.t.Fatalf("put %s/%s: %v", kv.Bucket(), key, err)
	}
}

func (e *env) putSet(s build.Set)     { e.put(e.b.BuildSets, s.ID, s) }
func (e *env) putBuild(b build.Build) { e.put(e.b.Builds, subject.BuildKey(b.BuildSet, b.Job), b) }
func (e *env) putVote(v build.Vote)   { e.put(e.b.Votes, v.BuildSet, v) }

// seed writes change 42 of platform/core (unit running, lint done) and
// change 7 of tools/cli (voted +1).
func (e *env) seed() {
	now := time.Now().UTC()
	s := testSet("42-1-aaaa", "platform/core", 42, 1, "unit", "lint")
	s.Created = now.Add(-time.Minute)
	e.putSet(s)
	e.putBuild(testBuild(s.ID, "unit", build.StateRunning, ""))
	e.putBuild(testBuild(s.ID, "lint", build.StateCompleted, "SUCCESS"))
	d := testSet("7-3-bbbb", "tools/cli", 7, 3, "unit")
	d.Created = now.Add(-2 * time.Minute)
	e.putSet(d)
	e.putBuild(testBuild(d.ID, "unit", build.StateCompleted, "SUCCESS"))
	v := posted(d.ID, 1)
	v.Posted = now
	e.putVote(v)
}

func (e *env) get(path string, v any) int {
	e.t.Helper()
	resp, err := http.Get(e.web.URL + path)
	if err != nil {
		e.t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatalf("GET %s: %v", path, err)
	}
	if v != nil {
		if err := json.Unmarshal(body, v); err != nil {
			e.t.Fatalf("GET %s: %v in %s", path, err, body)
		}
	}
	return resp.StatusCode
}

func (e *env) eventually(what string, cond func() bool) {
	e.t.Helper()
	deadline := time.Now().Add(40 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			e.t.Fatalf("%s: not after 40s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestAPIBuildSets(t *testing.T) {
	e := newEnv(t)
	e.seed()
	e.start(Settings{Links: Links{Jaeger: "http://jaeger:16686"}})

	var all BuildSets
	if code := e.get("/api/buildsets", &all); code != http.StatusOK {
		t.Fatalf("GET /api/buildsets = %d", code)
	}
	if len(all.BuildSets) != 2 || all.InFlight != 1 || all.Finished != 1 {
		t.Fatalf("GET /api/buildsets = %d build sets (%d in flight, %d finished); want 2 (1, 1)", len(all.BuildSets), all.InFlight, all.Finished)
	}
	got := all.BuildSets[0] // newest first
	if got.ID != "42-1-aaaa" || got.State != "running" || got.TraceURL != "http://jaeger:16686/trace/4bf92f3577b34da6a3ce929d0e0e4736" {
		t.Errorf("first = %s %s trace %q; want 42-1-aaaa running with a Jaeger link", got.ID, got.State, got.TraceURL)
	}
	if j := got.Jobs[0]; j.Name != "unit" || j.State != "running" || j.URL == "" || j.Since.IsZero() {
		t.Errorf("unit = %+v; want running with a Jenkins URL and a start time", j)
	}
	if v := all.BuildSets[1]; v.State != "voted" || len(v.Votes) != 1 || v.Votes[0].Labels["Verified"] != 1 {
		t.Errorf("second = %s votes %+v; want voted Verified +1", v.State, v.Votes)
	}

	for query, want := range map[string][]string{
		"?project=tools":                  {"7-3-bbbb"},
		"?state=running":                  {"42-1-aaaa"},
		"?state=finished":                 {"7-3-bbbb"},
		"?job=lint":                       {"42-1-aaaa"},
		"?change=7":                       {"7-3-bbbb"},
		"?project=platform&state=success": {"42-1-aaaa"}, // lint succeeded
		"?state=failure":                  {},
	} {
		var r BuildSets
		e.get("/api/buildsets"+query, &r)
		var ids []string
		for _, v := range r.BuildSets {
			ids = append(ids, v.ID)
		}
		if strings.Join(ids, ",") != strings.Join(want, ",") {
			t.Errorf("GET /api/buildsets%s = %v; want %v", query, ids, want)
		}
	}
	var bad map[string]string
	if code := e.get("/api/buildsets?change=x", &bad); code != http.StatusBadRequest || !strings.Contains(bad["error"], "change") {
		t.Errorf("GET ?change=x = %d %v; want 400 naming change", code, bad)
	}
}

func TestAPIChangeFollowsTheWatch(t *testing.T) {
	e := newEnv(t)
	e.seed()
	e.start(Settings{})

	var c Change
	if code := e.get("/api/changes/42", &c); code != http.StatusOK || c.Change != 42 || len(c.BuildSets) != 1 {
		t.Fatalf("GET /api/changes/42 = %d %+v; want one build set", code, c)
	}
	var nf map[string]string
	if code := e.get("/api/changes/99", &nf); code != http.StatusNotFound || !strings.Contains(nf["error"], "change 99") {
		t.Errorf("GET /api/changes/99 = %d %v; want 404 naming the change", code, nf)
	}
	if code := e.get("/api/changes/abc", &nf); code != http.StatusBadRequest {
		t.Errorf("GET /api/changes/abc = %d; want 400", code)
	}

	// Updates arrive through the watch: unit completes, the vote is posted,
	// and a new patch set supersedes the build set.
	e.putBuild(testBuild("42-1-aaaa", "unit", build.StateCompleted, "FAILURE"))
	e.eventually("unit completed", func() bool {
		e.get("/api/changes/42", &c)
		return c.BuildSets[0].Jobs[0].Result == "FAILURE" && c.BuildSets[0].State == "voting"
	})
	e.putVote(posted("42-1-aaaa", -1))
	e.eventually("vote posted", func() bool {
		e.get("/api/changes/42", &c)
		return c.BuildSets[0].State == "voted" && !c.BuildSets[0].InFlight
	})
	ps2 := testSet("42-2-cccc", "platform/core", 42, 2, "unit")
	ps2.Created = time.Now()
	e.putSet(ps2)
	e.eventually("patch set 2 listed", func() bool {
		e.get("/api/changes/42", &c)
		return len(c.BuildSets) == 2 && c.BuildSets[0].PatchSet == 2 && c.BuildSets[0].Jobs[0].State == "waiting"
	})
}

func TestPage(t *testing.T) {
	e := newEnv(t)
	e.seed()
	e.start(Settings{Links: Links{Jaeger: "http://jaeger:16686"}})

	page := e.text("/")
	for _, want := range []string{
		`<main id="sets"`, `<nav aria-label="Filters">`, `aria-live="polite"`, `<th scope="col">Job</th>`,
		`<h2 id="p-platform_2Fcore-h">platform/core</h2>`,
		`<a href="https://review.example.com/c/platform/core/&#43;/42" rel="noopener"><span class="visually-hidden">change </span><span class="num">42</span> <span class="subject">Add retries</span></a>`,
		`href="https://ci.example.com/job/folder/job/unit/7/"`,
		`<span class="badge j-running">running</span>`,
		`<span class="vote v-good">Verified &#43;1</span>`,
		`href="http://jaeger:16686/trace/4bf92f3577b34da6a3ce929d0e0e4736"`,
		`<label for="f-project">Project</label>`,
		`src="/static/status.js?v=`,
	} {
		if !strings.Contains(page, want) {
			t.Errorf("page lacks %s", want)
		}
	}
	if strings.Contains(page, "<script>") || strings.Contains(page, "style=") {
		t.Error("page has inline script or style; the CSP forbids them")
	}

	// The filter hides on the server too (the page works without script).
	filtered := e.text("/?project=tools")
	if !regexp.MustCompile(`<section class="project" id="p-platform_2Fcore"[^>]* hidden>`).MatchString(filtered) {
		t.Error("?project=tools: platform/core not hidden")
	}
	if !strings.Contains(filtered, `value="tools"`) {
		t.Error("?project=tools: the filter field does not show the value")
	}

	// Assets are embedded and versioned.
	resp, err := http.Get(e.web.URL + "/static/status.js")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/javascript; charset=utf-8" {
		t.Errorf("GET /static/status.js = %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	if resp.Header.Get("Content-Security-Policy") == "" || resp.Header.Get("X-Content-Type-Options") != "nosniff" {
		t.Error("no security headers")
	}
}

func TestPageIsGzipped(t *testing.T) {
	e := newEnv(t)
	e.seed()
	e.start(Settings{})
	req, _ := http.NewRequest("GET", e.web.URL+"/", nil)
	req.Header.Set("Accept-Encoding", "gzip")
	resp, err := http.DefaultTransport.RoundTrip(req) // no transparent decoding
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.Header.Get("Content-Encoding") != "gzip" {
		t.Fatalf("Content-Encoding = %q; want gzip", resp.Header.Get("Content-Encoding"))
	}
	zr, err := gzip.NewReader(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(zr)
	if !strings.Contains(string(body), "platform/core") {
		t.Error("gzipped page does not hold the build sets")
	}
}

func (e *env) text(path string) string {
	e.t.Helper()
	resp, err := http.Get(e.web.URL + path)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		e.t.Fatalf("GET %s = %d %s", path, resp.StatusCode, b)
	}
	return string(b)
}

// sse reads server-sent events.
type sse struct {
	resp *http.Response
	r    *bufio.Reader
}

type event struct {
	id, name, data string
}

func (e *env) events(since string, lastEventID string) *sse {
	e.t.Helper()
	req, _ := http.NewRequest("GET", e.web.URL+"/api/events?since="+since, nil)
	if lastEventID != "" {
		req.Header.Set("Last-Event-ID", lastEventID)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { resp.Body.Close() })
	if ct := resp.Header.Get("Content-Type"); resp.StatusCode != http.StatusOK || ct != "text/event-stream" {
		e.t.Fatalf("GET /api/events = %d %s", resp.StatusCode, ct)
	}
	return &sse{resp: resp, r: bufio.NewReader(resp.Body)}
}

// next returns the next event (comments and retry lines skipped).
func (s *sse) next(t *testing.T, timeout time.Duration) event {
	t.Helper()
	got := make(chan event, 1)
	fail := make(chan error, 1)
	go func() {
		var ev event
		for {
			line, err := s.r.ReadString('\n')
			if err != nil {
				fail <- err
				return
			}
			line = strings.TrimRight(line, "\n")
			switch {
			case line == "":
				if ev.name != "" {
					got <- ev
					return
				}
			case strings.HasPrefix(line, "id: "):
				ev.id = line[4:]
			case strings.HasPrefix(line, "event: "):
				ev.name = line[7:]
			case strings.HasPrefix(line, "data: "):
				ev.data = line[6:]
			}
		}
	}()
	select {
	case ev := <-got:
		return ev
	case err := <-fail:
		t.Fatalf("event stream: %v", err)
	case <-time.After(timeout):
		s.resp.Body.Close()
		t.Fatalf("no event within %v", timeout)
	}
	return event{}
}

func pageVersion(t *testing.T, page string) string {
	t.Helper()
	m := regexp.MustCompile(`<main id="sets"[^>]*data-version="(\d+)"`).FindStringSubmatch(page)
	if m == nil {
		t.Fatal("page has no data-version")
	}
	return m[1]
}

func TestEventsPushBuildChanges(t *testing.T) {
	e := newEnv(t)
	e.seed()
	e.start(Settings{})
	since := pageVersion(t, e.text("/"))
	stream := e.events(since, "")

	// A build record changes in KV: the browser gets the change, re-rendered.
	e.putBuild(testBuild("42-1-aaaa", "unit", build.StateCompleted, "SUCCESS"))
	ev := stream.next(t, 10*time.Second)
	if ev.name != "batch" {
		t.Fatalf("event = %s; want batch", ev.name)
	}
	var b batch
	if err := json.Unmarshal([]byte(ev.data), &b); err != nil {
		t.Fatal(err)
	}
	if len(b.Changes) != 1 || b.Changes[0].Key != "platform_2Fcore.42" || b.Changes[0].PToken != "platform_2Fcore" {
		t.Fatalf("batch changes = %+v; want change 42 of platform/core", b.Changes)
	}
	html := b.Changes[0].HTML
	if !strings.HasPrefix(html, `<article class="change" id="c-platform_2Fcore.42"`) || !strings.Contains(html, `<tr data-job="unit"><th scope="row">unit</th>`+"\n"+`<td><span class="badge j-success">success</span>`) {
		t.Errorf("fragment does not show unit succeeded:\n%s", html)
	}
	if b.Counts.InFlight != 1 || len(b.Notes) != 1 || b.Notes[0].Text != "change 42: unit SUCCESS" {
		t.Errorf("counts %+v notes %+v; want 1 in flight and a note for unit", b.Counts, b.Notes)
	}
	if v, _ := strconv.ParseUint(ev.id, 10, 64); v != b.V {
		t.Errorf("event id %s != version %d", ev.id, b.V)
	}

	// A second browser that was at the page's version catches up from the
	// ring (Last-Event-ID wins over ?since); one from an unknown past gets a reset.
	again := e.events("0", since)
	if ev := again.next(t, 5*time.Second); ev.name != "batch" || ev.id != strconv.FormatUint(b.V, 10) {
		t.Errorf("catch-up event = %s %s; want the batch %d", ev.name, ev.id, b.V)
	}
	fresh := e.events("999999", "")
	ev = fresh.next(t, 5*time.Second)
	var r reset
	if err := json.Unmarshal([]byte(ev.data), &r); err != nil || ev.name != "reset" || !strings.Contains(r.HTML, "tools/cli") || r.Counts.Finished != 1 {
		t.Errorf("event for an unknown version = %s %.200s (%v); want a reset holding every project", ev.name, ev.data, err)
	}

	// One watcher per bucket serves every browser: a vote reaches all three streams.
	e.putVote(posted("42-1-aaaa", 1))
	for i, s := range []*sse{stream, again, fresh} {
		ev := s.next(t, 10*time.Second)
		if ev.name != "batch" || !strings.Contains(ev.data, "Verified \\u0026#43;1") {
			t.Errorf("stream %d: %s %.300s; want the vote", i, ev.name, ev.data)
		}
	}
}

func TestEventsRemoveFinishedAfterRecent(t *testing.T) {
	e := newEnv(t)
	e.seed()
	e.start(Settings{Recent: time.Second, PruneEvery: 100 * time.Millisecond})
	stream := e.events(pageVersion(t, e.text("/")), "")
	// tools/cli 7 was voted at seed time: after a second it is dropped.
	for {
		ev := stream.next(t, 10*time.Second)
		var b batch
		if err := json.Unmarshal([]byte(ev.data), &b); err != nil {
			t.Fatal(err)
		}
		if len(b.Removed) == 1 && b.Removed[0] == "tools_2Fcli.7" {
			break
		}
	}
	var c map[string]string
	if code := e.get("/api/changes/7", &c); code != http.StatusNotFound {
		t.Errorf("GET /api/changes/7 after recent = %d; want 404", code)
	}
}

func TestWatchSurvivesNATSRestart(t *testing.T) {
	srv, js := natstest.JetStream(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b, err := OpenBuckets(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, b: b}
	e.seed()
	e.start(Settings{})
	stream := e.events(pageVersion(t, e.text("/")), "")

	srv.Restart() // same port and store: the watches resume where they were
	e.eventually("put after restart", func() bool {
		_, err := e.b.Builds.Put(context.Background(), subject.BuildKey("42-1-aaaa", "unit"),
			build.Encode(testBuild("42-1-aaaa", "unit", build.StateCompleted, "UNSTABLE")))
		return err == nil
	})
	e.eventually("unit unstable after the restart", func() bool {
		var c Change
		e.get("/api/changes/42", &c)
		return len(c.BuildSets) == 1 && c.BuildSets[0].Jobs[0].Result == "UNSTABLE"
	})
	if ev := stream.next(t, 10*time.Second); ev.name != "batch" || !strings.Contains(ev.data, "j-unstable") {
		t.Errorf("stream after the restart: %s %.200s; want the unstable build", ev.name, ev.data)
	}
}
