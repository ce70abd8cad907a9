package jenkinssim_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/gerritflow/gerritflow/pkg/jenkinssim"
)

// notification is the Notification plugin's JSON as a receiver reads it.
type notification struct {
	Name  string `json:"name"`
	URL   string `json:"url"`
	Build struct {
		FullURL    string            `json:"full_url"`
		Number     int               `json:"number"`
		QueueID    int64             `json:"queue_id"`
		Phase      string            `json:"phase"`
		Status     string            `json:"status"`
		URL        string            `json:"url"`
		Duration   int64             `json:"duration"`
		Parameters map[string]string `json:"parameters"`
	} `json:"build"`
	at time.Time // wall clock of receipt
}

// receiver is the endpoint the simulator posts to (the monitor's role).
type receiver struct {
	t   *testing.T
	srv *httptest.Server
	got chan notification

	mu               sync.Mutex
	inFlight, maxFly int
	hold             chan struct{} // when set, each request waits for it to close
	status           int           // answer (default 202)
}

func newReceiver(t *testing.T) *receiver {
	r := &receiver{t: t, got: make(chan notification, 100), status: http.StatusAccepted}
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) serve(w http.ResponseWriter, req *http.Request) {
	r.mu.Lock()
	r.inFlight++
	r.maxFly = max(r.maxFly, r.inFlight)
	hold, status := r.hold, r.status
	r.mu.Unlock()
	defer func() { r.mu.Lock(); r.inFlight--; r.mu.Unlock() }()
	if req.Method != http.MethodPost || req.Header.Get("Content-Type") != "application/json" {
		r.t.Errorf("notification: %s with Content-Type %q; want POST application/json", req.Method, req.Header.Get("Content-Type"))
	}
	body, _ := io.ReadAll(req.Body)
	var n notification
	if err := json.Unmarshal(body, &n); err != nil {
		r.t.Errorf("notification %q: %v", body, err)
	}
	n.at = time.Now()
	if hold != nil {
		select {
		case <-hold:
		case <-req.Context().Done():
			return
		}
	}
	w.WriteHeader(status)
	r.got <- n
}

func (r *receiver) url() string { return r.srv.URL + "/jenkins/notify" }

// next waits for the next notification (failing after 10s: a liveness bound).
func (r *receiver) next() notification {
	r.t.Helper()
	select {
	case n := <-r.got:
		return n
	case <-time.After(10 * time.Second):
		r.t.Fatal("no notification within 10s")
		return notification{}
	}
}

func (r *receiver) phases(n int) []string {
	r.t.Helper()
	var out []string
	for range n {
		nt := r.next()
		out = append(out, nt.Build.Phase+" "+nt.Build.Status)
	}
	return out
}

func TestNotifyPostsThePluginJSON(t *testing.T) {
	clk := newClock()
	rc := newReceiver(t)
	s := jenkinssim.Start(t, jenkinssim.Options{Now: clk.Now, NotifyURL: rc.url()})
	s.AddJob("f/j", "GERRITFLOW_BUILD_ID", "X")
	s.Script("f/j", func(map[string]string) jenkinssim.Outcome {
		return jenkinssim.Outcome{Result: "UNSTABLE", QueueDelay: time.Second, Duration: time.Minute}
	})
	call(t, s, "POST", "/job/f/job/j/buildWithParameters", url.Values{"GERRITFLOW_BUILD_ID": {"1-1-abc.unit"}}, true)

	clk.Add(time.Second) // it starts
	start := rc.next()
	if start.Build.Phase != jenkinssim.PhaseStarted || start.Build.Status != "" {
		t.Errorf("first notification %s %q; want STARTED without a status", start.Build.Phase, start.Build.Status)
	}
	clk.Add(time.Minute) // it ends
	done, final := rc.next(), rc.next()
	if done.Build.Phase != jenkinssim.PhaseCompleted || final.Build.Phase != jenkinssim.PhaseFinalized {
		t.Fatalf("phases %s, %s; want COMPLETED, FINALIZED", done.Build.Phase, final.Build.Phase)
	}
	want := notification{Name: "j", URL: "job/f/job/j/"}
	want.Build.FullURL = s.URL() + "/job/f/job/j/1/"
	want.Build.Number, want.Build.QueueID = 1, 1
	want.Build.Phase, want.Build.Status = jenkinssim.PhaseCompleted, "UNSTABLE"
	want.Build.URL = "job/f/job/j/1/"
	want.Build.Duration = time.Minute.Milliseconds()
	want.Build.Parameters = map[string]string{"GERRITFLOW_BUILD_ID": "1-1-abc.unit", "X": ""}
	if diff := cmp.Diff(want, done, cmp.AllowUnexported(notification{}), cmp.FilterPath(func(p cmp.Path) bool {
		return p.Last().String() == ".at"
	}, cmp.Ignore())); diff != "" {
		t.Errorf("COMPLETED notification (-want +got):\n%s", diff)
	}
	if b := s.Builds("f/j"); len(b) != 1 || b[0].Building || !b[0].End.Equal(b[0].Start.Add(time.Minute)) {
		t.Errorf("Builds = %+v; want one finished build ending a minute after its start", b)
	}
	waitNotified(t, s, 3, 0)
}

// waitNotified waits until s counts delivered and failed notifications (the
// receiver hands a notification over before its answer reaches s).
func waitNotified(t *testing.T, s *jenkinssim.Server, delivered, failed int64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		d, f := s.Notified()
		if d == delivered && f == failed {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("Notified = %d delivered, %d failed after 10s; want %d, %d", d, f, delivered, failed)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestNotifyAtTheBuildsEnd uses the wall clock: the notification goroutine
// sleeps on its timer heap until the scripted end.
func TestNotifyAtTheBuildsEnd(t *testing.T) {
	rc := newReceiver(t)
	s := jenkinssim.Start(t, jenkinssim.Options{NotifyURL: rc.url(), NotifyPhases: []string{"completed"}})
	s.AddJob("j", "ID")
	s.Script("j", func(map[string]string) jenkinssim.Outcome {
		return jenkinssim.Outcome{QueueDelay: 20 * time.Millisecond, Duration: 50 * time.Millisecond}
	})
	call(t, s, "POST", "/job/j/buildWithParameters", url.Values{"ID": {"1"}}, true)
	n := rc.next()
	b := s.Builds("j")
	if n.Build.Phase != jenkinssim.PhaseCompleted || n.Build.Status != "SUCCESS" || len(b) != 1 {
		t.Fatalf("notification %s %s, builds %+v; want COMPLETED SUCCESS of the one build", n.Build.Phase, n.Build.Status, b)
	}
	// Causality, not speed: it cannot be told before it ended.
	if n.at.Before(b[0].End) {
		t.Errorf("COMPLETED received at %v, before the build's end %v", n.at, b[0].End)
	}
}

func TestNotifyStoppedBuildOnce(t *testing.T) {
	clk := newClock()
	rc := newReceiver(t)
	s := jenkinssim.Start(t, jenkinssim.Options{Now: clk.Now, NotifyURL: rc.url(), NotifyPhases: []string{"COMPLETED"}, NotifyConcurrency: 1})
	s.AddJob("j", "ID")
	s.Script("j", func(p map[string]string) jenkinssim.Outcome {
		if p["ID"] == "long" {
			return jenkinssim.Outcome{Duration: time.Hour}
		}
		return jenkinssim.Outcome{}
	})
	call(t, s, "POST", "/job/j/buildWithParameters", url.Values{"ID": {"long"}}, true)
	clk.Add(time.Minute)
	call(t, s, "POST", "/job/j/1/stop", nil, true)
	n := rc.next()
	if n.Build.Number != 1 || n.Build.Phase != jenkinssim.PhaseCompleted || n.Build.Status != "ABORTED" ||
		n.Build.Duration != (time.Minute-100*time.Millisecond).Milliseconds() {
		t.Errorf("after stop: #%d %s %s duration %dms; want #1 COMPLETED ABORTED after 59900ms", n.Build.Number, n.Build.Phase, n.Build.Status, n.Build.Duration)
	}
	// Past the scripted end, then a second build: one sender posts in
	// phase-change order, so a second notice of #1 would come first.
	clk.Add(2 * time.Hour)
	call(t, s, "POST", "/job/j/buildWithParameters", url.Values{"ID": {"short"}}, true)
	clk.Add(time.Second)
	if n := rc.next(); n.Build.Number != 2 {
		t.Errorf("next notification is of #%d %s; want #2 (the stopped #1 is told once)", n.Build.Number, n.Build.Status)
	}
}

func TestNotifyCancelledItemIsSilent(t *testing.T) {
	clk := newClock()
	rc := newReceiver(t)
	s := jenkinssim.Start(t, jenkinssim.Options{Now: clk.Now, NotifyURL: rc.url(), NotifyConcurrency: 1})
	s.AddJob("j", "ID")
	call(t, s, "POST", "/job/j/buildWithParameters", url.Values{"ID": {"cancelled"}}, true)
	call(t, s, "POST", "/queue/cancelItem?id=1", nil, true)
	call(t, s, "POST", "/job/j/buildWithParameters", url.Values{"ID": {"built"}}, true)
	clk.Add(time.Minute)
	got := rc.phases(3)
	if diff := cmp.Diff([]string{"STARTED ", "COMPLETED SUCCESS", "FINALIZED SUCCESS"}, got); diff != "" {
		t.Errorf("notifications (-want +got):\n%s", diff)
	}
	waitNotified(t, s, 3, 0) // nothing for the cancelled item
}

func TestNotifyConcurrencyIsBounded(t *testing.T) {
	clk := newClock()
	rc := newReceiver(t)
	rc.hold = make(chan struct{})
	s := jenkinssim.Start(t, jenkinssim.Options{Now: clk.Now, NotifyURL: rc.url(), NotifyPhases: []string{"COMPLETED"}, NotifyConcurrency: 2})
	s.AddJob("j", "ID")
	const builds = 6
	for i := range builds {
		call(t, s, "POST", "/job/j/buildWithParameters", url.Values{"ID": {string(rune('a' + i))}}, true)
	}
	clk.Add(time.Minute) // every build ends at once
	deadline := time.Now().Add(10 * time.Second)
	for {
		rc.mu.Lock()
		fly := rc.inFlight
		rc.mu.Unlock()
		if fly >= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d notifications in flight after 10s; want 2", fly)
		}
		time.Sleep(5 * time.Millisecond)
	}
	close(rc.hold)
	seen := map[int]bool{}
	for range builds {
		seen[rc.next().Build.Number] = true
	}
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if rc.maxFly != 2 || len(seen) != builds {
		t.Errorf("at most %d in flight, %d builds told; want 2 and %d", rc.maxFly, len(seen), builds)
	}
}

func TestNotifyFailuresAreCountedAndCloseStops(t *testing.T) {
	clk := newClock()
	rc := newReceiver(t)
	rc.status = http.StatusInternalServerError
	s := jenkinssim.Start(t, jenkinssim.Options{Now: clk.Now, NotifyURL: rc.url(), NotifyPhases: []string{"COMPLETED"}, NotifyConcurrency: 1})
	s.AddJob("j", "ID")
	call(t, s, "POST", "/job/j/buildWithParameters", url.Values{"ID": {"1"}}, true)
	clk.Add(time.Minute)
	rc.next()
	waitNotified(t, s, 0, 1) // the receiver answered 500

	// A receiver that never answers: Close cancels the POST in flight.
	rc.mu.Lock()
	rc.hold = make(chan struct{}) // never closed
	rc.mu.Unlock()
	call(t, s, "POST", "/job/j/buildWithParameters", url.Values{"ID": {"2"}}, true)
	clk.Add(time.Minute)
	deadline := time.Now().Add(10 * time.Second)
	for {
		rc.mu.Lock()
		fly := rc.inFlight
		rc.mu.Unlock()
		if fly == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("second notification not in flight after 10s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Errorf("Close = %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return with a notification in flight")
	}
	if d, f := s.Notified(); d != 0 || f != 2 {
		t.Errorf("Notified = %d, %d; want 0 delivered, 2 failed", d, f)
	}
}

func TestNoNotifyURLNoNotifications(t *testing.T) {
	s := jenkinssim.Start(t)
	if d, f := s.Notified(); d != 0 || f != 0 {
		t.Errorf("Notified without NotifyURL = %d, %d", d, f)
	}
}
