package jenkinssim_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/gerritflow/gerritflow/pkg/jenkinssim"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

var noRedirect = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

type reply struct {
	code   int
	header http.Header
	body   string
}

// call makes one request as user ci (auth false: anonymous), without following redirects.
func call(t *testing.T, s *jenkinssim.Server, method, path string, form url.Values, auth bool, hdr ...string) reply {
	t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequestWithContext(t.Context(), method, s.URL()+path, body)
	if err != nil {
		t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	if auth {
		req.SetBasicAuth(s.User(), s.Token())
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := noRedirect.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return reply{resp.StatusCode, resp.Header, string(b)}
}

func decode(t *testing.T, r reply) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(r.body), &m); err != nil {
		t.Fatalf("decode %q: %v", r.body, err)
	}
	return m
}

func TestAuth(t *testing.T) {
	s := jenkinssim.Start(t)
	if r := call(t, s, "GET", "/api/json", nil, false); r.code != http.StatusForbidden || r.header.Get("X-Jenkins") == "" {
		t.Errorf("anonymous GET /api/json: %d, X-Jenkins %q; want 403 with X-Jenkins", r.code, r.header.Get("X-Jenkins"))
	}
	bad := call(t, s, "GET", "/api/json", nil, false, "Authorization", "Basic "+basic("ci", "nope"))
	if bad.code != http.StatusUnauthorized || bad.header.Get("X-Jenkins") == "" {
		t.Errorf("wrong token: %d; want 401 with X-Jenkins", bad.code)
	}
	if r := call(t, s, "GET", "/api/json", nil, true); r.code != http.StatusOK {
		t.Errorf("GET /api/json with token: %d; want 200", r.code)
	}
}

func basic(u, p string) string {
	req, _ := http.NewRequest("GET", "http://x", nil)
	req.SetBasicAuth(u, p)
	return strings.TrimPrefix(req.Header.Get("Authorization"), "Basic ")
}

func TestCrumbBoundToSession(t *testing.T) {
	s := jenkinssim.Start(t, jenkinssim.Options{RequireCrumb: true})
	s.AddJob("j", "P")
	path := "/job/j/buildWithParameters"
	if r := call(t, s, "POST", path, url.Values{"P": {"1"}}, true); r.code != http.StatusForbidden {
		t.Errorf("POST without crumb: %d; want 403", r.code)
	}
	cr := call(t, s, "GET", "/crumbIssuer/api/json", nil, true)
	doc := decode(t, cr)
	if doc["crumbRequestField"] != "Jenkins-Crumb" || doc["crumb"] == "" {
		t.Fatalf("crumb issuer: %v", doc)
	}
	crumb := doc["crumb"].(string)
	cookie := strings.Split(cr.header.Get("Set-Cookie"), ";")[0]
	if r := call(t, s, "POST", path, url.Values{"P": {"2"}}, true, "Jenkins-Crumb", crumb); r.code != http.StatusForbidden {
		t.Errorf("POST with crumb but without its session cookie: %d; want 403", r.code)
	}
	if r := call(t, s, "POST", path, url.Values{"P": {"3"}}, true, "Jenkins-Crumb", crumb, "Cookie", cookie); r.code != http.StatusCreated {
		t.Errorf("POST with crumb and cookie: %d; want 201", r.code)
	}
	if r := call(t, s, "POST", path, url.Values{"P": {"4"}, "Jenkins-Crumb": {crumb}}, true, "Cookie", cookie); r.code != http.StatusCreated {
		t.Errorf("POST with crumb as form field: %d; want 201", r.code)
	}
}

func TestBuildWithParameters(t *testing.T) {
	clk := newClock()
	s := jenkinssim.Start(t, jenkinssim.Options{Now: clk.Now})
	s.AddJob("f/j", "A", "B")
	path := "/job/f/job/j/buildWithParameters"

	r1 := call(t, s, "POST", path, url.Values{"A": {"1"}, "X": {"dropped"}}, true)
	if r1.code != http.StatusCreated || r1.header.Get("Location") != s.URL()+"/queue/item/1/" {
		t.Fatalf("first POST: %d Location %q; want 201 .../queue/item/1/", r1.code, r1.header.Get("Location"))
	}
	r2 := call(t, s, "POST", path+"?A=1", nil, true) // query parameters work too
	if r2.code != http.StatusSeeOther || r2.header.Get("Location") != s.URL()+"/queue/item/1/" {
		t.Errorf("identical POST: %d Location %q; want 303 to item 1", r2.code, r2.header.Get("Location"))
	}
	r3 := call(t, s, "POST", path, url.Values{"A": {"1"}, "B": {"2"}}, true)
	if r3.code != http.StatusCreated || r3.header.Get("Location") != s.URL()+"/queue/item/2/" {
		t.Errorf("different POST: %d Location %q; want 201 item 2", r3.code, r3.header.Get("Location"))
	}
	if n := s.BuildRequests("f/j"); n != 2 {
		t.Errorf("BuildRequests = %d; want 2", n)
	}
	if r := call(t, s, "GET", path, nil, true); r.code != http.StatusMethodNotAllowed {
		t.Errorf("GET buildWithParameters: %d; want 405", r.code)
	}
	if r := call(t, s, "POST", "/job/f/job/nope/buildWithParameters", url.Values{"A": {"1"}}, true); r.code != http.StatusNotFound {
		t.Errorf("unknown job: %d; want 404", r.code)
	}
	if r := call(t, s, "GET", "/queue/item/1/", nil, true); r.code != http.StatusOK {
		t.Errorf("GET the 303 Location itself: %d; want 200 (Jenkins >= 2.468)", r.code)
	}

	item := decode(t, call(t, s, "GET", "/queue/item/1/api/json", nil, true))
	want := map[string]any{"A": "1", "B": ""}
	if diff := cmp.Diff(want, params(item)); diff != "" {
		t.Errorf("queue item parameters (-want +got):\n%s", diff)
	}
	if _, ok := item["executable"]; ok || item["_class"] != "hudson.model.Queue$WaitingItem" {
		t.Errorf("waiting item = %v; want a WaitingItem without executable", item)
	}

	clk.Add(100 * time.Millisecond)
	item = decode(t, call(t, s, "GET", "/queue/item/1/api/json", nil, true))
	exe, _ := item["executable"].(map[string]any)
	if item["_class"] != "hudson.model.Queue$LeftItem" || exe["number"] != 1.0 || exe["url"] != s.URL()+"/job/f/job/j/1/" || item["cancelled"] != false {
		t.Errorf("started item = %v; want a LeftItem with executable #1", item)
	}
	b := decode(t, call(t, s, "GET", "/job/f/job/j/1/api/json", nil, true))
	if b["building"] != true || b["result"] != nil || b["queueId"] != 1.0 || b["fullDisplayName"] != "f » j #1" {
		t.Errorf("running build = %v", b)
	}
	clk.Add(200 * time.Millisecond)
	b = decode(t, call(t, s, "GET", "/job/f/job/j/lastBuild/api/json", nil, true))
	if b["building"] != false || b["result"] != "SUCCESS" || b["duration"] != 200.0 || b["number"] != 2.0 {
		t.Errorf("lastBuild = %v; want #2 SUCCESS after 200ms", b)
	}
}

func params(doc map[string]any) map[string]any {
	out := map[string]any{}
	acts, _ := doc["actions"].([]any)
	for _, a := range acts {
		ps, _ := a.(map[string]any)["parameters"].([]any)
		for _, p := range ps {
			pm := p.(map[string]any)
			out[pm["name"].(string)] = pm["value"]
		}
	}
	return out
}

func TestCancelAndForget(t *testing.T) {
	clk := newClock()
	s := jenkinssim.Start(t, jenkinssim.Options{Now: clk.Now, ForgetAfter: time.Minute})
	s.AddJob("j", "A")
	call(t, s, "POST", "/job/j/buildWithParameters", url.Values{"A": {"1"}}, true)
	call(t, s, "POST", "/job/j/buildWithParameters", url.Values{"A": {"2"}}, true)

	if r := call(t, s, "POST", "/queue/cancelItem?id=1", nil, true); r.code != http.StatusNoContent {
		t.Errorf("cancel waiting item: %d; want 204", r.code)
	}
	if r := call(t, s, "POST", "/queue/cancelItem?id=1", nil, true); r.code != http.StatusInternalServerError {
		t.Errorf("cancel cancelled item: %d; want 500 (a remembered LeftItem)", r.code)
	}
	clk.Add(time.Second)
	if r := call(t, s, "POST", "/queue/cancelItem?id=2", nil, true); r.code != http.StatusInternalServerError {
		t.Errorf("cancel started item: %d; want 500", r.code)
	}
	item := decode(t, call(t, s, "GET", "/queue/item/1/api/json", nil, true))
	if item["cancelled"] != true || item["executable"] != nil {
		t.Errorf("cancelled item = %v; want cancelled, executable null", item)
	}
	if got := s.Builds("j"); len(got) != 1 || got[0].QueueID != 2 || got[0].Number != 1 {
		t.Errorf("Builds = %+v; want only #1 from item 2", got)
	}
	clk.Add(time.Minute)
	if r := call(t, s, "GET", "/queue/item/1/api/json", nil, true); r.code != http.StatusNotFound {
		t.Errorf("forgotten item: %d; want 404", r.code)
	}
	if r := call(t, s, "POST", "/queue/cancelItem?id=1", nil, true); r.code != http.StatusNotFound {
		t.Errorf("cancel forgotten item: %d; want 404", r.code)
	}
}

func TestStop(t *testing.T) {
	clk := newClock()
	s := jenkinssim.Start(t, jenkinssim.Options{Now: clk.Now})
	s.AddJob("j", "A")
	s.Script("j", func(map[string]string) jenkinssim.Outcome { return jenkinssim.Outcome{Duration: time.Hour} })
	call(t, s, "POST", "/job/j/buildWithParameters", url.Values{"A": {"1"}}, true)
	clk.Add(time.Minute)
	r := call(t, s, "POST", "/job/j/1/stop", nil, true)
	if r.code != http.StatusFound || r.header.Get("Location") != s.URL()+"/job/j/1/" {
		t.Errorf("stop: %d Location %q; want 302 to the build page", r.code, r.header.Get("Location"))
	}
	if got := s.Builds("j"); len(got) != 1 || got[0].Result != "ABORTED" || got[0].Building {
		t.Errorf("Builds after stop = %+v; want ABORTED", got)
	}
	if r := call(t, s, "POST", "/job/j/9/stop", nil, true); r.code != http.StatusNotFound {
		t.Errorf("stop unknown build: %d; want 404", r.code)
	}
}

func TestTreeAndFolders(t *testing.T) {
	clk := newClock()
	s := jenkinssim.Start(t, jenkinssim.Options{Now: clk.Now})
	s.AddJob("f/j", "ID")
	for i := range 3 {
		call(t, s, "POST", "/job/f/job/j/buildWithParameters", url.Values{"ID": {fmt.Sprint(i)}}, true)
	}
	clk.Add(time.Second)

	root := decode(t, call(t, s, "GET", "/api/json?tree=jobs[name]", nil, true))
	if diff := cmp.Diff(map[string]any{"_class": "hudson.model.Hudson", "jobs": []any{
		map[string]any{"_class": "com.cloudbees.hudson.plugins.folder.Folder", "name": "f"},
	}}, root); diff != "" {
		t.Errorf("root tree=jobs[name] (-want +got):\n%s", diff)
	}
	folder := decode(t, call(t, s, "GET", "/job/f/api/json", nil, true))
	if jobs, _ := folder["jobs"].([]any); len(jobs) != 1 || jobs[0].(map[string]any)["url"] != s.URL()+"/job/f/job/j/" {
		t.Errorf("folder jobs = %v", folder["jobs"])
	}

	got := decode(t, call(t, s, "GET", "/job/f/job/j/api/json?tree=builds[number,queueId,actions[parameters[name,value]]]{0,2}", nil, true))
	want := map[string]any{"_class": "hudson.model.FreeStyleProject", "builds": []any{
		build(3, 3, "2"), build(2, 2, "1"),
	}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("tree=builds[...]{0,2} (-want +got):\n%s", diff)
	}

	job := decode(t, call(t, s, "GET", "/job/f/job/j/api/json", nil, true))
	defs := job["property"].([]any)[0].(map[string]any)["parameterDefinitions"].([]any)
	if len(defs) != 1 || defs[0].(map[string]any)["name"] != "ID" || job["nextBuildNumber"] != 4.0 || job["color"] != "blue" {
		t.Errorf("job doc = %v", job)
	}
	if r := call(t, s, "GET", "/job/f/job/j/api/json?tree=builds[", nil, true); r.code != http.StatusBadRequest {
		t.Errorf("malformed tree: %d; want 400", r.code)
	}
	// gojenkins' Job.GetBuild asks for /job/j//N/api/json; Stapler ignores empty segments.
	if r := call(t, s, "GET", "/job/f/job/j//2/api/json", nil, true); r.code != http.StatusOK {
		t.Errorf("double slash: %d; want 200", r.code)
	}
}

func build(n, q int, id string) map[string]any {
	return map[string]any{
		"_class": "hudson.model.FreeStyleBuild", "number": float64(n), "queueId": float64(q),
		"actions": []any{
			map[string]any{"_class": "hudson.model.ParametersAction", "parameters": []any{
				map[string]any{"_class": "hudson.model.StringParameterValue", "name": "ID", "value": id},
			}},
			map[string]any{"_class": "hudson.model.CauseAction"},
		},
	}
}

// TestManyBuildsAreCheap drives 10 000 builds through the handler without a
// network and checks numbering, the 100-build cap and the queue listing.
func TestManyBuildsAreCheap(t *testing.T) {
	clk := newClock()
	s := jenkinssim.New(jenkinssim.Options{Now: clk.Now})
	s.AddJob("j", "ID")
	h := s.Handler()
	do := func(method, target string) *httptest.ResponseRecorder {
		req := httptest.NewRequest(method, target, nil)
		req.SetBasicAuth(s.User(), s.Token())
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec
	}
	const n = 10000
	for i := range n {
		if rec := do("POST", fmt.Sprintf("http://127.0.0.1/job/j/buildWithParameters?ID=%d", i)); rec.Code != http.StatusCreated {
			t.Fatalf("POST %d: %d", i, rec.Code)
		}
		if i%2 == 0 {
			clk.Add(time.Millisecond)
		}
	}
	var q struct{ Items []map[string]any }
	if err := json.Unmarshal(do("GET", "http://127.0.0.1/queue/api/json").Body.Bytes(), &q); err != nil || len(q.Items) == 0 {
		t.Fatalf("queue: %d items, %v", len(q.Items), err)
	}
	clk.Add(time.Hour)
	builds := s.Builds("j")
	if len(builds) != n {
		t.Fatalf("Builds = %d; want %d", len(builds), n)
	}
	for i, b := range builds {
		if b.Number != i+1 || b.QueueID != int64(i+1) || b.Result != "SUCCESS" {
			t.Fatalf("build %d = %+v; want number %d from item %d", i, b, i+1, i+1)
		}
	}
	var job struct {
		Builds []struct{ Number int }
	}
	if err := json.Unmarshal(do("GET", "http://127.0.0.1/job/j/api/json").Body.Bytes(), &job); err != nil {
		t.Fatal(err)
	}
	if len(job.Builds) != 100 || job.Builds[0].Number != n || job.Builds[99].Number != n-99 {
		t.Errorf("job builds: %d entries from #%d; want the newest 100 from #%d", len(job.Builds), job.Builds[0].Number, n)
	}
}

func TestFailWith(t *testing.T) {
	s := jenkinssim.Start(t)
	s.FailWith(http.StatusServiceUnavailable, time.Minute)
	if r := call(t, s, "GET", "/api/json", nil, true); r.code != http.StatusServiceUnavailable {
		t.Errorf("during FailWith(503): %d; want 503", r.code)
	}
	s.FailWith(0, 0)
	if r := call(t, s, "GET", "/api/json", nil, true); r.code != http.StatusOK {
		t.Errorf("after FailWith ended: %d; want 200", r.code)
	}

	s.FailWith(0, 150*time.Millisecond) // hang, then serve
	start := time.Now()
	if r := call(t, s, "GET", "/api/json", nil, true); r.code != http.StatusOK || time.Since(start) < 150*time.Millisecond {
		t.Errorf("held request: %d after %v; want 200 after >= 150ms", r.code, time.Since(start))
	}
	before := s.Requests()
	call(t, s, "GET", "/api/json", nil, true)
	if got := s.Requests() - before; got != 1 {
		t.Errorf("Requests delta = %d; want 1", got)
	}
}

func TestListen(t *testing.T) {
	s, err := jenkinssim.Listen("127.0.0.1:0", jenkinssim.Options{})
	if err != nil {
		t.Fatal(err)
	}
	s.FailWith(0, time.Hour) // Close must release held requests
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, "GET", s.URL()+"/api/json", nil)
		req.SetBasicAuth("ci", "secret-token")
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		done <- err
	}()
	time.Sleep(50 * time.Millisecond)
	start := time.Now()
	if err := s.Close(); err != nil {
		t.Errorf("Close = %v", err)
	}
	<-done
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Close took %v with a held request", d)
	}
}

func TestLatencyDelaysEveryAnswer(t *testing.T) {
	s := jenkinssim.Start(t, jenkinssim.Options{Latency: 60 * time.Millisecond})
	req, _ := http.NewRequest("GET", s.URL()+"/api/json", nil)
	req.SetBasicAuth(s.User(), s.Token())
	start := time.Now()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	// A lower bound, not a timing goal: the answer cannot come before the latency.
	if d := time.Since(start); d < 60*time.Millisecond {
		t.Errorf("answer after %v; want at least the 60ms latency", d)
	}
}
