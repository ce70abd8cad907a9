//go:build browser

// The status page in a real browser: `make test-browser` (go test -tags
// browser) installs Debian's chromium if needed and runs this file. It is not
// compiled into `make test`.

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/gerritflow/gerritflow/cmd/gfdev/internal/stack"
	"github.com/gerritflow/gerritflow/pkg/build"
	"github.com/gerritflow/gerritflow/pkg/gerritsim"
	"github.com/gerritflow/gerritflow/pkg/subject"
)

// chromium finds the browser, or fails the test saying how to get one: with
// -tags browser (GERRITFLOW_BROWSER_TEST=1 in make test-browser) a missing
// browser is a failure, never a skip.
func chromium(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("GERRITFLOW_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatalf("the browser test needs Chromium and found none on PATH (GERRITFLOW_BROWSER_TEST=%q): "+
		"run `make test-browser` (it runs `apt-get install -y chromium`), or install it yourself, "+
		"or set GERRITFLOW_CHROMIUM to a Chrome or Chromium binary", os.Getenv("GERRITFLOW_BROWSER_TEST"))
	return ""
}

// browser starts a headless Chromium with a fresh profile and returns a tab.
func browser(t *testing.T, ctx context.Context, exe string) context.Context {
	t.Helper()
	alloc, cancelAlloc := chromedp.NewExecAllocator(ctx,
		chromedp.ExecPath(exe),
		chromedp.Flag("headless", true),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 900),
	)
	tab, cancelTab := chromedp.NewContext(alloc, chromedp.WithLogf(t.Logf))
	t.Cleanup(func() { cancelTab(); cancelAlloc() })
	if err := chromedp.Do(tab); err != nil { // starts the browser
		t.Fatalf("start %s: %v", exe, err)
	}
	return tab
}

// artifacts is where screenshots go: $ARTIFACTS, or the test's temp dir.
func artifacts(t *testing.T) string {
	if d := os.Getenv("ARTIFACTS"); d != "" {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		return d
	}
	return t.TempDir()
}

// shoot saves a screenshot of the tab at width x height under artifacts().
func shoot(t *testing.T, tab context.Context, name string, width, height int64) {
	t.Helper()
	if err := chromedp.Do(tab, chromedp.EmulateViewport(width, height), chromedp.Sleep(300*time.Millisecond)); err != nil {
		t.Fatalf("viewport %dx%d: %v", width, height, err)
	}
	png, err := chromedp.Run(tab, chromedp.CaptureScreenshot())
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	p := filepath.Join(artifacts(t), name)
	if err := os.WriteFile(p, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", p)
}

// changeState is what the page shows of one change.
type changeState struct {
	Present bool              `json:"present"`
	Hidden  bool              `json:"hidden"`
	Jobs    map[string]string `json:"jobs"` // job -> state badge
	Links   map[string]string `json:"links"`
	Elapsed map[string]string `json:"elapsed"`
	Vote    string            `json:"vote"`
	Gerrit  string            `json:"gerrit"`
}

const readChange = `(function (id) {
  var a = document.getElementById(id), out = {present: !!a, hidden: !!(a && a.hidden), jobs: {}, links: {}, elapsed: {}, vote: "", gerrit: ""};
  if (!a) return JSON.stringify(out);
  var set = a.querySelector(".set");
  set.querySelectorAll("tr[data-job]").forEach(function (tr) {
    var j = tr.getAttribute("data-job");
    out.jobs[j] = tr.querySelector(".badge").textContent;
    var l = tr.querySelector("td a"); if (l) out.links[j] = l.href;
    var e = tr.querySelector(".elapsed"); if (e) out.elapsed[j] = e.textContent;
  });
  out.vote = set.querySelector("tfoot td").textContent.trim();
  var g = a.querySelector("h3 a"); if (g) out.gerrit = g.href;
  return JSON.stringify(out);
})(%q)`

func pageChange(t *testing.T, tab context.Context, id string) changeState {
	t.Helper()
	raw, err := chromedp.Run(tab, chromedp.Evaluate[string](fmt.Sprintf(readChange, id)))
	if err != nil {
		t.Fatalf("read the page: %v", err)
	}
	var st changeState
	if err := json.Unmarshal([]byte(raw), &st); err != nil {
		t.Fatalf("read the page: %v in %s", err, raw)
	}
	return st
}

// TestStatusPageInBrowser loads the status page in headless Chromium while
// the pipeline runs on the simulators, uploads a change, and watches the page
// (never reloaded) show its build set, a job running then passing, and the vote.
func TestStatusPageInBrowser(t *testing.T) {
	exe := chromium(t)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	s, err := stack.Start(ctx, stack.Options{Dir: filepath.Join(t.TempDir(), "dev")}) // logs: <dir>/logs
	if err != nil {
		t.Fatalf("start stack: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Stop(); err != nil {
			t.Errorf("stack did not stop cleanly: %v", err)
		}
	})
	if s.StatusURL() == "" {
		t.Fatal("the stack runs no status process")
	}
	s.ScriptJenkins(4 * time.Second) // unit runs 4s, lint 2s: long enough to see them running

	tab := browser(t, ctx, exe)
	if err := chromedp.Do(tab,
		chromedp.Navigate(s.StatusURL()),
		chromedp.WaitVisible(chromedp.CSS("#filters")),
		chromedp.Poll[chromedp.Void](`document.getElementById("conn").textContent === "Live"`, chromedp.WithPollingTimeout(20*time.Second)),
		chromedp.Evaluate[chromedp.Void](`window.__loadMarker = "first-load"`),
	); err != nil {
		t.Fatalf("load %s: %v", s.StatusURL(), err)
	}

	c, _, _, err := s.Gerrit.Upload(gerritsim.Upload{Project: "platform/core", Branch: "main",
		Subject: "Show every change in flight on the status page", Uploader: stack.Developer})
	if err != nil {
		t.Fatal(err)
	}
	id := "c-" + subject.ChangeKey("platform/core", c)
	seen := map[string]bool{}
	var last changeState
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		last = pageChange(t, tab, id)
		if last.Present {
			seen["build set"] = true
		}
		if last.Jobs["unit"] == "running" {
			seen["unit running"] = true
			if last.Links["unit"] == "" || last.Elapsed["unit"] == "" {
				t.Errorf("running unit: link %q, elapsed %q; want a Jenkins link and an elapsed time", last.Links["unit"], last.Elapsed["unit"])
			}
		}
		if seen["unit running"] && last.Jobs["unit"] == "success" {
			seen["unit success"] = true
		}
		if strings.Contains(last.Vote, "Verified +1") {
			seen["vote"] = true
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, want := range []string{"build set", "unit running", "unit success", "vote"} {
		if !seen[want] {
			t.Errorf("the page never showed %s of change %d (last seen %+v)", want, c, last)
		}
	}
	if want := fmt.Sprintf("/c/platform/core/+/%d", c); !strings.HasSuffix(last.Gerrit, want) {
		t.Errorf("change link = %q; want the Gerrit change (…%s)", last.Gerrit, want)
	}
	if l := last.Links["unit"]; !strings.HasPrefix(l, s.Jenkins.URL()+"/job/folder/job/unit-tests/") {
		t.Errorf("unit build link = %q; want a build of folder/unit-tests on %s", l, s.Jenkins.URL())
	}
	if marker, err := chromedp.Run(tab, chromedp.Evaluate[string](`window.__loadMarker || ""`)); err != nil || marker != "first-load" {
		t.Errorf("the page was reloaded (marker %q, %v); updates must arrive without reloading", marker, err)
	}

	t.Run("a failing change runs with an estimate and gets -1", func(t *testing.T) {
		// unit passed once: the next unit build shows how long it should take.
		f, _, _, err := s.Gerrit.Upload(gerritsim.Upload{Project: "tools/cli", Branch: "main",
			Subject: "[fail] Drop the null check in the parser", Uploader: stack.Developer})
		if err != nil {
			t.Fatal(err)
		}
		fid := "c-" + subject.ChangeKey("tools/cli", f)
		if err := chromedp.Do(tab, chromedp.Poll[chromedp.Void](fmt.Sprintf(
			`(function(a){ return a && a.querySelector("tr[data-job=unit] progress") !== null })(document.getElementById(%q))`, fid),
			chromedp.WithPollingTimeout(time.Minute))); err != nil {
			t.Fatalf("change %d: no running unit build with a progress bar: %v (page: %+v)", f, err, pageChange(t, tab, fid))
		}
		shoot(t, tab, "status-running.png", 1280, 900)
		if err := chromedp.Do(tab, chromedp.Poll[chromedp.Void](fmt.Sprintf(
			`(function(a){ return a && a.querySelector("tfoot td").textContent.indexOf("Verified -1") >= 0 })(document.getElementById(%q))`, fid),
			chromedp.WithPollingTimeout(time.Minute))); err != nil {
			t.Fatalf("change %d: no Verified -1 shown: %v (page: %+v)", f, err, pageChange(t, tab, fid))
		}
		if got := pageChange(t, tab, fid).Jobs["unit"]; got != "failure" {
			t.Errorf("change %d unit = %q; want failure", f, got)
		}
	})

	t.Run("landmarks, labels and contrast", func(t *testing.T) {
		problems, err := chromedp.Run(tab, chromedp.Evaluate[[]string](a11yCheck))
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range problems {
			t.Error(p)
		}
	})

	t.Run("filters typed with the keyboard hide and show the change", func(t *testing.T) {
		if err := chromedp.Do(tab,
			chromedp.Focus(chromedp.CSS("#f-project")),
			chromedp.SendKeys(chromedp.CSS("#f-project"), "no/such-project"),
			chromedp.Poll[chromedp.Void](fmt.Sprintf(`document.getElementById(%q).hidden && !document.getElementById("empty").hidden`, id), chromedp.WithPollingTimeout(5*time.Second)),
			chromedp.Evaluate[chromedp.Void](`document.getElementById("f-project").value = ""; document.getElementById("f-project").dispatchEvent(new Event("input", {bubbles: true}))`),
			chromedp.SetValue(chromedp.CSS("#f-state"), "voted"),
			chromedp.Evaluate[chromedp.Void](`document.getElementById("f-state").dispatchEvent(new Event("change", {bubbles: true}))`),
			chromedp.Poll[chromedp.Void](fmt.Sprintf(`!document.getElementById(%q).hidden && location.search === "?state=voted"`, id), chromedp.WithPollingTimeout(5*time.Second)),
		); err != nil {
			t.Fatalf("filter: %v", err)
		}
	})

	shoot(t, tab, "status.png", 1280, 900)
	shoot(t, tab, "status-phone.png", 390, 844)
}

// a11yCheck lists what a person with a screen reader, a keyboard or low
// vision would trip on: missing landmarks, unlabeled fields, tables without
// headers, text under 4.5:1 contrast (WCAG AA).
const a11yCheck = `(function () {
  var out = [];
  ["header", "nav", "main", "footer"].forEach(function (l) { if (!document.querySelector(l)) out.push("no <" + l + "> landmark"); });
  if (!document.querySelector("[aria-live]")) out.push("no aria-live region for updates");
  document.querySelectorAll("input, select").forEach(function (f) {
    if (!f.id || !document.querySelector("label[for='" + f.id + "']")) out.push("field without a label: " + f.outerHTML.slice(0, 80));
  });
  document.querySelectorAll("table").forEach(function (t) {
    if (!t.querySelector("caption") || !t.querySelector("thead th[scope=col]")) out.push("table without caption or column headers");
  });
  function rgb(s) { var m = s.match(/[\d.]+/g); return m ? m.map(Number) : [0, 0, 0, 0]; }
  function lum(c) {
    var a = c.slice(0, 3).map(function (v) { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); });
    return 0.2126 * a[0] + 0.7152 * a[1] + 0.0722 * a[2];
  }
  function bg(el) {
    for (; el; el = el.parentElement) {
      var c = rgb(getComputedStyle(el).backgroundColor);
      if (c.length < 4 || c[3] > 0) return c;
    }
    return [255, 255, 255];
  }
  document.querySelectorAll("h1, h2, h3, th, td, a, .badge, .vote, .meta, .reason, .nv, .est, label, .help, .conn, .summary, footer p").forEach(function (el) {
    if (!el.textContent.trim() || el.offsetParent === null) return;
    var l1 = lum(rgb(getComputedStyle(el).color)), l2 = lum(bg(el));
    var ratio = (Math.max(l1, l2) + 0.05) / (Math.min(l1, l2) + 0.05);
    if (ratio < 4.5) out.push("contrast " + ratio.toFixed(2) + ":1 < 4.5:1 for " + el.outerHTML.slice(0, 80));
  });
  return out;
})()`

// TestStatusPageScaleInBrowser seeds 2 000 build sets in flight (three jobs
// each) into the stack's KV, loads the page in Chromium and reports its first
// full render; then one build record changes and the page, never reloaded,
// shows it. The figures go to docs/BENCHMARKS.md (make test-browser prints them).
func TestStatusPageScaleInBrowser(t *testing.T) {
	const sets = 2000
	exe := chromium(t)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	s, err := stack.Start(ctx, stack.Options{Dir: filepath.Join(t.TempDir(), "dev")})
	if err != nil {
		t.Fatalf("start stack: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Stop(); err != nil {
			t.Errorf("stack did not stop cleanly: %v", err)
		}
	})
	now := time.Now().UTC()
	first := ""
	for i := 0; i < sets; i++ {
		change := 10000 + i
		project := []string{"platform/core", "platform/ui", "tools/cli", "infra/deploy", "docs/site"}[i%5]
		id := build.SetID(change, 1, fmt.Sprint("scale-", i), "")
		if i == 0 {
			first = id
		}
		set := build.Set{ID: id, Project: project, Branch: "main", Change: change, PatchSet: 1, EventType: "patchset-created",
			Subject: fmt.Sprintf("Make the thing %d faster", i), URL: fmt.Sprintf("%s/c/%s/+/%d", s.Gerrit.URL(), project, change),
			State: build.SetRunning, Created: now.Add(-time.Duration(sets-i) * time.Second),
			Traceparent: fmt.Sprintf("00-%032x-%016x-01", i+1, i+1),
			Jobs: []build.Job{{Name: "unit", JenkinsJob: "folder/unit-tests", Voting: true},
				{Name: "integration", JenkinsJob: "folder/integration", Voting: true}, {Name: "lint", JenkinsJob: "lint"}}}
		kvPut(t, s, "buildsets", id, set)
		kvPut(t, s, "builds", subject.BuildKey(id, "unit"), build.Build{BuildSet: id, Job: "unit", State: build.StateRunning,
			Number: int64(i), URL: fmt.Sprintf("%s/job/folder/job/unit-tests/%d/", s.Jenkins.URL(), i), Triggered: set.Created})
		kvPut(t, s, "builds", subject.BuildKey(id, "integration"), build.Build{BuildSet: id, Job: "integration", State: build.StateQueued, Triggered: set.Created})
		kvPut(t, s, "builds", subject.BuildKey(id, "lint"), build.Build{BuildSet: id, Job: "lint", State: build.StateCompleted,
			Result: build.ResultSuccess, Number: int64(i), Duration: 40 * time.Second, Finished: now, Triggered: set.Created})
	}
	select {
	case <-s.JS.PublishAsyncComplete():
	case <-ctx.Done():
		t.Fatal("seeding KV did not complete")
	}
	tab := browser(t, ctx, exe)
	// The status process already watches: wait until its model holds every record.
	last := fmt.Sprintf("%sapi/changes/%d", s.StatusURL(), 10000+sets-1)
	for deadline := time.Now().Add(time.Minute); ; {
		var c struct {
			BuildSets []struct {
				Jobs []struct{ Result string } `json:"jobs"`
			} `json:"buildsets"`
		}
		if getJSON(t, last, &c) && len(c.BuildSets) == 1 && c.BuildSets[0].Jobs[2].Result == build.ResultSuccess {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: the last build set and its builds not listed after 1m", last)
		}
		time.Sleep(200 * time.Millisecond)
	}
	var all struct {
		InFlight int `json:"in_flight"`
	}
	if !getJSON(t, s.StatusURL()+"api/buildsets", &all) || all.InFlight != sets {
		t.Fatalf("GET /api/buildsets: %d in flight; want %d", all.InFlight, sets)
	}

	start := time.Now()
	if err := chromedp.Do(tab, chromedp.Navigate(s.StatusURL()),
		chromedp.Poll[chromedp.Void](fmt.Sprintf(`document.querySelectorAll("article.change").length === %d && performance.getEntriesByName("gerritflow-ready").length === 1`, sets),
			chromedp.WithPollingTimeout(time.Minute))); err != nil {
		t.Fatalf("load the page with %d build sets: %v", sets, err)
	}
	wall := time.Since(start)
	timing, err := chromedp.Run(tab, chromedp.Evaluate[map[string]float64](`(function () {
  var n = performance.getEntriesByType("navigation")[0], fcp = performance.getEntriesByName("first-contentful-paint")[0];
  return {response_end: n.responseEnd, dom_content_loaded: n.domContentLoadedEventEnd, load: n.loadEventEnd,
    first_contentful_paint: fcp ? fcp.startTime : -1, script: performance.getEntriesByName("gerritflow-script")[0].startTime, ready: performance.getEntriesByName("gerritflow-ready")[0].startTime,
    transfer_bytes: n.transferSize, html_bytes: n.decodedBodySize, heap_bytes: performance.memory ? performance.memory.usedJSHeapSize : -1};
})()`))
	if err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(tab, chromedp.Poll[chromedp.Void](`document.getElementById("conn").textContent === "Live"`, chromedp.WithPollingTimeout(30*time.Second)),
		chromedp.Evaluate[chromedp.Void](`window.__loadMarker = "scale"`)); err != nil {
		t.Fatal(err)
	}

	// One build changes among 2 000 build sets: time from the KV write to the page.
	updated := time.Now()
	kvPut(t, s, "builds", subject.BuildKey(first, "integration"), build.Build{BuildSet: first, Job: "integration", State: build.StateRunning,
		Number: 4242, URL: s.Jenkins.URL() + "/job/folder/job/integration/4242/", Triggered: now})
	if err := chromedp.Do(tab, chromedp.Poll[chromedp.Void](fmt.Sprintf(
		`(function(a){ return a && a.querySelector("tr[data-job=integration] .badge").textContent === "running" && window.__loadMarker === "scale" })(document.getElementById(%q))`,
		"c-"+subject.ChangeKey("platform/core", 10000)), chromedp.WithPollingTimeout(30*time.Second), chromedp.WithPollingInterval(10*time.Millisecond))); err != nil {
		t.Fatalf("the update did not reach the page: %v", err)
	}
	update := time.Since(updated)
	shoot(t, tab, "status-2000.png", 1280, 900)

	fmt.Printf("browser sets=%d wall=%dms response_end=%.0fms dom_content_loaded=%.0fms first_contentful_paint=%.0fms script=%.0fms ready=%.0fms load=%.0fms transfer_bytes=%.0f html_bytes=%.0f js_heap=%.1fMiB update=%dms\n",
		sets, wall.Milliseconds(), timing["response_end"], timing["dom_content_loaded"], timing["first_contentful_paint"], timing["script"], timing["ready"],
		timing["load"], timing["transfer_bytes"], timing["html_bytes"], timing["heap_bytes"]/(1<<20), update.Milliseconds())
}

// getJSON decodes a 200 answer of url into v; false on any other status.
func getJSON(t *testing.T, url string, v any) bool {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return false
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return true
}

func kvPut(t *testing.T, s *stack.Stack, bucket, key string, v any) {
	t.Helper()
	if _, err := s.JS.PublishAsync("$KV."+bucket+"."+key, build.Encode(v)); err != nil {
		t.Fatal(err)
	}
}
