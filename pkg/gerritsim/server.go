package gerritsim

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Default credentials of the CI account.
const (
	DefaultUser     = "ci"
	DefaultPassword = "secret-password"
)

// Errors returned by the Go methods of Server (REST answers carry the status
// codes Gerrit uses instead).
var (
	ErrNotFound = errors.New("not found")
	ErrConflict = errors.New("conflict")
	ErrInvalid  = errors.New("invalid")
)

// Options configure a Server.
type Options struct {
	// User and Password of the CI account (basic auth on /a/...). They default
	// to DefaultUser and DefaultPassword.
	User, Password string
	// URL is the canonical web URL used in change.url of events; it defaults
	// to the server's own URL.
	URL string
	// FirstChange is the number of the first change created (default 1).
	// Change numbers are global, as in Gerrit.
	FirstChange int
	// Labels are the labels configured on every project, with their value
	// range. Reviews with other labels or values out of range are rejected
	// with 400, as Gerrit does with strict_labels (its default). nil means
	// Code-Review -2..+2 and Verified -1..+1.
	Labels map[string]LabelRange
}

// LabelRange is the range of values a label accepts.
type LabelRange struct{ Min, Max int }

// Account is a Gerrit account. ID 0 gets an id assigned on first use.
type Account struct {
	Name, Email, Username string
	ID                    int
}

// Server is a Gerrit simulator. All methods are safe for concurrent use.
type Server struct {
	opts     Options
	ci       Account
	requests atomic.Int64

	// emitMu keeps events in order while they are handed to OnEvent
	// functions; it is taken before mu is released.
	emitMu sync.Mutex

	mu         sync.Mutex
	baseURL    string
	nextChange int
	nextID     int
	lastStamp  int64
	changes    map[int]*change
	accounts   map[string]int // username or email -> id
	reviews    []Review
	listeners  []func(eventType string, data []byte)
	failStatus int
	failUntil  time.Time
	closeFn    func() error
	closed     bool
}

// New returns a Server that is not listening; serve Handler() yourself. Most
// callers want Start (tests) or Listen (the dev runner).
func New(opts Options) *Server {
	if opts.User == "" {
		opts.User = DefaultUser
	}
	if opts.Password == "" {
		opts.Password = DefaultPassword
	}
	if opts.FirstChange <= 0 {
		opts.FirstChange = 1
	}
	if opts.Labels == nil {
		opts.Labels = map[string]LabelRange{
			"Code-Review": {Min: -2, Max: 2},
			"Verified":    {Min: -1, Max: 1},
		}
	}
	s := &Server{
		opts:       opts,
		nextChange: opts.FirstChange,
		nextID:     1000001,
		changes:    map[int]*change{},
		accounts:   map[string]int{},
	}
	s.ci = Account{
		Name:     "CI",
		Email:    opts.User + "@example.com",
		Username: opts.User,
		ID:       1000000,
	}
	s.accounts[s.ci.Username] = s.ci.ID
	return s
}

// Start runs a Server on 127.0.0.1 (httptest) and closes it at cleanup. The
// first Options, if given, configure it.
func Start(t testing.TB, opts ...Options) *Server {
	t.Helper()
	var o Options
	if len(opts) > 0 {
		o = opts[0]
	}
	s := New(o)
	ts := httptest.NewServer(s.Handler())
	s.mu.Lock()
	s.baseURL = ts.URL
	s.closeFn = func() error { ts.Close(); return nil }
	s.mu.Unlock()
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// Listen runs a Server on addr (for example "127.0.0.1:8081") until Close.
func Listen(addr string, opts Options) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("gerritsim: listen %s: %w", addr, err)
	}
	s := New(opts)
	srv := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	s.mu.Lock()
	s.baseURL = "http://" + ln.Addr().String()
	s.closeFn = srv.Close
	s.mu.Unlock()
	return s, nil
}

// Close stops the listener started by Start or Listen. It may be called more
// than once.
func (s *Server) Close() error {
	s.mu.Lock()
	fn := s.closeFn
	done := s.closed
	s.closed = true
	s.mu.Unlock()
	if fn == nil || done {
		return nil
	}
	return fn()
}

// URL is the base URL of the server ("" when it was made with New).
func (s *Server) URL() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.baseURL
}

// CI is the account that authenticates with Options.User; reviews posted
// through REST are authored by it.
func (s *Server) CI() Account { return s.ci }

// OnEvent registers fn to receive every emitted event, in order, including
// the ref-updated noise. fn runs synchronously on the goroutine that caused
// the event and must not call the Server's mutating methods.
func (s *Server) OnEvent(fn func(eventType string, data []byte)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.listeners = append(s.listeners, fn)
}

// Reviews returns the reviews accepted through REST, in order.
func (s *Server) Reviews() []Review {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Review, len(s.reviews))
	for i, r := range s.reviews {
		out[i] = r.clone()
	}
	return out
}

// ReviewsFor returns the reviews accepted through REST for change, in order.
func (s *Server) ReviewsFor(change int) []Review {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Review
	for _, r := range s.reviews {
		if r.Change == change {
			out = append(out, r.clone())
		}
	}
	return out
}

// Wipe forgets the reviews accepted through REST, with the votes and
// messages they left on the changes: an outage that lost votes.
func (s *Server) Wipe() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reviews = nil
	for _, c := range s.changes {
		c.forgetAccount(s.ci.ID)
	}
}

// FailWith makes every REST request answer status for d (d <= 0 ends it).
func (s *Server) FailWith(status int, d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if d <= 0 {
		s.failStatus, s.failUntil = 0, time.Time{}
		return
	}
	s.failStatus, s.failUntil = status, time.Now().Add(d)
}

// Requests counts the REST requests received, failed ones included.
func (s *Server) Requests() int64 { return s.requests.Load() }

// canonical is the web URL used in events; callers hold mu.
func (s *Server) canonical() string {
	if s.opts.URL != "" {
		return s.opts.URL
	}
	return s.baseURL
}

// stamp returns the eventCreatedOn of a new event: the current unix second,
// or one more than the last stamp, so that no two events share it. Callers
// hold mu.
func (s *Server) stamp() int64 {
	now := time.Now().Unix()
	if now <= s.lastStamp {
		now = s.lastStamp + 1
	}
	s.lastStamp = now
	return now
}

// account fills in the id of a, assigning one on first use. Callers hold mu.
func (s *Server) account(a Account) Account {
	if a.ID != 0 {
		return a
	}
	key := a.Username
	if key == "" {
		key = a.Email
	}
	if key == "" {
		key = a.Name
	}
	if id, ok := s.accounts[key]; ok {
		a.ID = id
		return a
	}
	a.ID = s.nextID
	s.nextID++
	s.accounts[key] = a.ID
	return a
}

// emitted is one event waiting to be handed to the OnEvent functions.
type emitted struct {
	typ  string
	data []byte
}

// update runs fn under mu and hands the events it returns to the OnEvent
// functions, in order, after releasing mu.
func (s *Server) update(fn func() ([]emitted, error)) error {
	s.mu.Lock()
	evs, err := fn()
	if err != nil {
		s.mu.Unlock()
		return err
	}
	listeners := slices.Clone(s.listeners)
	s.emitMu.Lock()
	s.mu.Unlock()
	defer s.emitMu.Unlock()
	for _, ev := range evs {
		for _, l := range listeners {
			l(ev.typ, ev.data)
		}
	}
	return nil
}

// now is the time of the change about to be made: the stamp the next event
// will get at the earliest, so that createdOn never follows eventCreatedOn.
// Callers hold mu.
func (s *Server) now() time.Time {
	now := time.Now().Unix()
	if now <= s.lastStamp {
		now = s.lastStamp + 1
	}
	return time.Unix(now, 0).UTC()
}
