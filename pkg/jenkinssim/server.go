// Package jenkinssim is a Jenkins REST simulator that speaks the wire that
// gojenkins v1.2.0 and a real Jenkins (2.4xx) speak: basic auth with an API
// token, CSRF crumbs bound to a session cookie, folders, parameterized jobs,
// a queue whose items turn into builds, merging of identical queued requests
// (303), forgetful left items, cancel and stop, and ?tree= filtering.
//
// It is the project's test double for Jenkins (httptest, via Start) and the
// Jenkins of the local demo (Listen). Time is lazy: a build's state is computed
// from timestamps when asked (queued at t0, starts at t0+QueueDelay, ends
// Duration later), so ten thousand builds cost no goroutines. With
// Options.NotifyURL it also pushes the Notification plugin's JSON when builds
// start and end, from one goroutine with a timer heap of the phase changes.
//
// Where the simulator follows Jenkins rather than intuition:
//   - no credentials answer 403 (anonymous lacks Overall/Read), wrong
//     credentials 401, as Jenkins does;
//   - buildWithParameters answers 201 with Location .../queue/item/N/ for a new
//     item and 303 to the existing item when an item with the same parameters
//     is still waiting; declared parameters that are not sent take their
//     default (""), undeclared ones are dropped; a job without parameters
//     answers 500 ("This build is not parameterized!");
//   - a queue item stays readable for ForgetAfter (Jenkins: 5 minutes) after it
//     LEFT the queue (its build started, or it was cancelled), then 404;
//   - POST /queue/cancelItem answers 204 for a waiting item, 500 ("Could not
//     cancel") for an item that already left but is still remembered, and 404
//     for an unknown or forgotten one (Jenkins answers 422 only when the user
//     lacks the Cancel permission, which the simulator never models);
//   - POST .../N/stop answers 302 to the build page, whose HTML is what makes
//     gojenkins' Build.Stop report a JSON error.
package jenkinssim

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Options configure a Server.
type Options struct {
	// User and Token are the only accepted basic-auth credentials
	// (defaults "ci" and "secret-token").
	User, Token string
	// RequireCrumb makes every POST without a valid CSRF crumb (header or form
	// field Jenkins-Crumb, bound to the session cookie the crumb issuer set)
	// answer 403, as Jenkins does for requests not authenticated by API token.
	RequireCrumb bool
	// ForgetAfter is how long a queue item stays readable after it left the
	// queue (default 5 minutes, as Jenkins' leftItems cache).
	ForgetAfter time.Duration
	// Now is the simulator's clock (default time.Now). Build and queue state is
	// computed from it on every request. FailWith windows use the wall clock.
	Now func() time.Time
	// Latency is added to every API answer, as a busy Jenkins takes its time
	// (benchmarks: "Jenkins answering in 50 ms").
	Latency time.Duration

	// NotifyURL, when set, makes the simulator push what the Jenkins
	// Notification plugin pushes: for each build, a POST of the plugin's JSON
	// ({"name","url","build":{"full_url","number","queue_id","phase","status",
	// "url","parameters",...}}) to this URL when it starts (STARTED) and when
	// it ends or is stopped (COMPLETED, then FINALIZED). One goroutine with a
	// timer heap of the upcoming phase changes sends them; Close stops it.
	// Delivery is best effort (no retries), as with the plugin's default.
	NotifyURL string
	// NotifyPhases limits the phases posted (default all three).
	NotifyPhases []string
	// NotifyConcurrency bounds the POSTs in flight (default 4); the builds
	// beyond wait their turn, in phase-change order.
	NotifyConcurrency int
	// NotifyTimeout bounds one POST (default 10s).
	NotifyTimeout time.Duration
}

// Outcome is what a scripted build does.
type Outcome struct {
	Result            string        // SUCCESS FAILURE UNSTABLE ABORTED NOT_BUILT (default SUCCESS)
	Duration          time.Duration // run time (default 200ms; negative means 0)
	QueueDelay        time.Duration // time in the queue (default 100ms; negative means 0)
	EstimatedDuration time.Duration // reported estimate (default: mean of earlier successful builds, or -1 like Jenkins)
}

// BuildRecord is a build (or, from Queued, a waiting queue item) as the
// simulator knows it, for assertions.
type BuildRecord struct {
	Job      string
	Number   int // 0 for a queued item
	QueueID  int64
	Params   map[string]string
	Result   string // "" while queued or building
	Building bool
	URL      string // "" for a queued item
	// Start is when the build started; End when it ends or ended: its start
	// plus the scripted Duration, or the moment it was stopped (zero for a
	// queued item).
	Start, End time.Time
}

// Server is a simulated Jenkins controller. It is safe for concurrent use.
type Server struct {
	opts    Options
	secret  []byte // crumb HMAC key
	session string // X-Jenkins-Session

	requests atomic.Int64
	notify   *notifier // nil unless Options.NotifyURL

	closing   chan struct{}
	closeOnce sync.Once

	mu        sync.Mutex
	url       string // base URL once listening
	hs        *http.Server
	ts        *httptest.Server
	root      *folder
	jobs      map[string]*job // by full path "a/b"
	items     map[int64]*item // waiting items and remembered left items
	waiting   itemHeap        // by start time; cancelled entries skipped lazily
	left      []*item         // left items in the order they left (for forgetting)
	nextQueue int64
	failCode  int
	failUntil time.Time // wall clock
}

// New returns a Server that is not listening; serve s.Handler() yourself or use
// Start or Listen. Empty User/Token take the defaults "ci"/"secret-token".
// With Options.NotifyURL it starts the notification goroutine: Close it.
func New(opts Options) *Server {
	fakeClock := opts.Now != nil
	if opts.User == "" {
		opts.User = "ci"
	}
	if opts.Token == "" {
		opts.Token = "secret-token"
	}
	if opts.ForgetAfter <= 0 {
		opts.ForgetAfter = 5 * time.Minute
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	secret := make([]byte, 32)
	_, _ = rand.Read(secret)
	sess := make([]byte, 4)
	_, _ = rand.Read(sess)
	s := &Server{
		opts:      opts,
		secret:    secret,
		session:   hex.EncodeToString(sess),
		closing:   make(chan struct{}),
		root:      &folder{children: map[string]any{}},
		jobs:      map[string]*job{},
		items:     map[int64]*item{},
		nextQueue: 1,
	}
	if opts.NotifyURL != "" {
		s.notify = newNotifier(s, opts, fakeClock)
	}
	return s
}

// Start runs a Server on an httptest listener on 127.0.0.1 and closes it at
// t.Cleanup. Without opts it uses User "ci" and Token "secret-token".
func Start(t testing.TB, opts ...Options) *Server {
	t.Helper()
	var o Options
	if len(opts) > 0 {
		o = opts[0]
	}
	s := New(o)
	ts := httptest.NewUnstartedServer(s.Handler())
	ts.Start()
	s.mu.Lock()
	s.ts = ts
	s.url = ts.URL
	s.mu.Unlock()
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// Listen serves a new Server on addr (for the local demo, e.g.
// "127.0.0.1:8080"; port 0 picks one). Close stops it.
func Listen(addr string, opts Options) (*Server, error) {
	s := New(opts)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	hs := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 10 * time.Second}
	s.mu.Lock()
	s.hs = hs
	s.url = "http://" + ln.Addr().String()
	s.mu.Unlock()
	go func() { _ = hs.Serve(ln) }()
	return s, nil
}

// Close stops a server started by Start or Listen, releases requests held
// by FailWith, and stops the notifications (those in flight are cancelled).
// It is safe to call more than once.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		close(s.closing)
		if s.notify != nil {
			s.notify.close()
		}
	})
	s.mu.Lock()
	ts, hs := s.ts, s.hs
	s.ts, s.hs = nil, nil
	s.mu.Unlock()
	if ts != nil {
		ts.Close()
	}
	if hs != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := hs.Shutdown(ctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
			return err
		}
		return hs.Close()
	}
	return nil
}

// URL is the base URL (no trailing slash) once the server listens (Start,
// Listen); "" for a Server only used through Handler.
func (s *Server) URL() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.url
}

// User and Token return the accepted credentials.
func (s *Server) User() string  { return s.opts.User }
func (s *Server) Token() string { return s.opts.Token }

// AddJob creates (or redefines the parameters of) the job at path; "a/b" is the
// job b in folder a, served at /job/a/job/b/. params are the names of its
// declared string parameters (default value "").
func (s *Server) AddJob(path string, params ...string) {
	names := splitPath(path)
	if len(names) == 0 {
		panic("jenkinssim: empty job path")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	f := s.root
	for i, n := range names[:len(names)-1] {
		switch c := f.children[n].(type) {
		case *folder:
			f = c
		case nil:
			nf := &folder{path: strings.Join(names[:i+1], "/"), name: n, children: map[string]any{}}
			f.children[n] = nf
			f = nf
		default:
			panic("jenkinssim: " + strings.Join(names[:i+1], "/") + " is a job, not a folder")
		}
	}
	full := strings.Join(names, "/")
	last := names[len(names)-1]
	if j, ok := s.jobs[full]; ok {
		j.params = append([]string(nil), params...)
		return
	}
	if _, ok := f.children[last]; ok {
		panic("jenkinssim: " + full + " is a folder, not a job")
	}
	j := &job{path: full, name: last, params: append([]string(nil), params...), waiting: map[int64]*item{}, nextNumber: 1}
	f.children[last] = j
	s.jobs[full] = j
}

// Script sets how builds of job behave; fn gets the build's parameters (as
// queued: declared names only) and is called once per buildWithParameters
// request, before merging, outside the simulator's lock. Zero fields of the
// returned Outcome take the defaults. The default script is SUCCESS after
// 100ms in the queue and 200ms of building.
func (s *Server) Script(jobPath string, fn func(params map[string]string) Outcome) {
	s.mu.Lock()
	defer s.mu.Unlock()
	j := s.mustJob(jobPath)
	j.script = fn
}

// BuildRequests is the number of buildWithParameters (or build) calls for job
// that queued a new item (merged requests and errors are not counted).
func (s *Server) BuildRequests(jobPath string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mustJob(jobPath).requests
}

// Builds returns the started and finished builds of job, oldest first.
func (s *Server) Builds(jobPath string) []BuildRecord {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.opts.Now()
	s.advance(now)
	j := s.mustJob(jobPath)
	base := s.url
	out := make([]BuildRecord, 0, len(j.builds))
	for _, b := range j.builds {
		out = append(out, BuildRecord{
			Job: j.path, Number: b.number, QueueID: b.item.id, Params: paramMap(b.item.params),
			Result: b.resultAt(now), Building: b.buildingAt(now), URL: buildURL(base, j, b.number),
			Start: b.start, End: b.endAt(),
		})
	}
	return out
}

// Queued returns the items of job still waiting in the queue, oldest first.
func (s *Server) Queued(jobPath string) []BuildRecord {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.advance(s.opts.Now())
	j := s.mustJob(jobPath)
	out := make([]BuildRecord, 0, len(j.waiting))
	for _, it := range j.waitingSorted() {
		out = append(out, BuildRecord{Job: j.path, QueueID: it.id, Params: paramMap(it.params)})
	}
	return out
}

// FailWith makes every request answer status for d (wall clock), e.g. 503
// while "Jenkins is restarting". Status 0 holds each request until d has
// passed (or the client gives up), then serves it. d <= 0 ends a failure.
func (s *Server) FailWith(status int, d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if d <= 0 {
		s.failCode, s.failUntil = 0, time.Time{}
		return
	}
	s.failCode, s.failUntil = status, time.Now().Add(d)
}

// Requests is the number of HTTP requests the server received, including
// failed and unauthorized ones (for request-budget measurements).
func (s *Server) Requests() int64 { return s.requests.Load() }

func (s *Server) mustJob(path string) *job {
	j, ok := s.jobs[strings.Join(splitPath(path), "/")]
	if !ok {
		panic("jenkinssim: unknown job " + path + " (AddJob first)")
	}
	return j
}

func splitPath(p string) []string {
	var out []string
	for _, n := range strings.Split(p, "/") {
		if n != "" {
			out = append(out, n)
		}
	}
	return out
}

func paramMap(ps []param) map[string]string {
	m := make(map[string]string, len(ps))
	for _, p := range ps {
		m[p.name] = p.value
	}
	return m
}

func (j *job) waitingSorted() []*item {
	out := make([]*item, 0, len(j.waiting))
	for _, it := range j.waiting {
		out = append(out, it)
	}
	sort.Slice(out, func(a, b int) bool { return out[a].id < out[b].id })
	return out
}
