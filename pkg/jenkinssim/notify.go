package jenkinssim

import (
	"bytes"
	"container/heap"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Phases of the Jenkins Notification plugin that the simulator posts (its
// QUEUED phase is not simulated).
const (
	PhaseStarted   = "STARTED"
	PhaseCompleted = "COMPLETED"
	PhaseFinalized = "FINALIZED"
)

// Defaults of the notification options.
const (
	defaultNotifyConcurrency = 4
	defaultNotifyTimeout     = 10 * time.Second
	// fakeClockTick is how often the notifier looks at a custom Options.Now:
	// such a clock moves without telling anyone.
	fakeClockTick = 20 * time.Millisecond
)

// notifier posts the Notification plugin's JSON for the phase changes of
// builds. Build state stays lazy: one goroutine keeps a timer heap of the
// upcoming phase changes (filled when an item is queued or a build stopped,
// guarded by Server.mu), wakes at the first, reads the build's state at that
// moment and hands the POSTs to at most NotifyConcurrency senders.
type notifier struct {
	s         *Server
	url       string
	phases    map[string]bool
	fakeClock bool
	client    *http.Client
	transport *http.Transport
	timeout   time.Duration
	sem       chan struct{}
	wake      chan struct{} // cap 1
	ctx       context.Context
	cancel    context.CancelFunc
	done      chan struct{} // closed when the loop returned
	sending   sync.WaitGroup

	delivered, failed atomic.Int64

	// Guarded by Server.mu.
	heap noticeHeap
	seq  uint64
}

// notice is one upcoming phase change of one queue item's build.
type notice struct {
	at  time.Time
	seq uint64
	it  *item
	end bool // COMPLETED and FINALIZED; else STARTED
}

func newNotifier(s *Server, opts Options, fakeClock bool) *notifier {
	conc := opts.NotifyConcurrency
	if conc <= 0 {
		conc = defaultNotifyConcurrency
	}
	timeout := opts.NotifyTimeout
	if timeout <= 0 {
		timeout = defaultNotifyTimeout
	}
	phases := map[string]bool{}
	for _, p := range opts.NotifyPhases {
		phases[strings.ToUpper(p)] = true
	}
	if len(phases) == 0 {
		phases = map[string]bool{PhaseStarted: true, PhaseCompleted: true, PhaseFinalized: true}
	}
	tr := &http.Transport{MaxIdleConns: conc, MaxIdleConnsPerHost: conc, IdleConnTimeout: 90 * time.Second}
	n := &notifier{
		s: s, url: opts.NotifyURL, phases: phases, fakeClock: fakeClock,
		client: &http.Client{Transport: tr}, transport: tr, timeout: timeout,
		sem: make(chan struct{}, conc), wake: make(chan struct{}, 1), done: make(chan struct{}),
	}
	n.ctx, n.cancel = context.WithCancel(context.Background())
	go n.loop()
	return n
}

func (n *notifier) wantsStart() bool { return n.phases[PhaseStarted] }
func (n *notifier) wantsEnd() bool   { return n.phases[PhaseCompleted] || n.phases[PhaseFinalized] }

// queued schedules the phase changes of a new item. Callers hold s.mu.
func (n *notifier) queued(it *item) {
	if n.wantsStart() {
		n.push(it.startAt, it, false)
	}
	if n.wantsEnd() {
		n.push(it.startAt.Add(it.out.Duration), it, true)
	}
}

// stopped schedules the end of a build stopped now. Callers hold s.mu.
func (n *notifier) stopped(b *build, now time.Time) {
	if n.wantsEnd() {
		n.push(now, b.item, true)
	}
}

// push adds a notice. Callers hold s.mu.
func (n *notifier) push(at time.Time, it *item, end bool) {
	n.seq++
	heap.Push(&n.heap, &notice{at: at, seq: n.seq, it: it, end: end})
	select {
	case n.wake <- struct{}{}:
	default:
	}
}

// loop is the notifier's one goroutine: it sends what is due, then sleeps
// until the next phase change (or a new notice).
func (n *notifier) loop() {
	defer close(n.done)
	for {
		due, wait := n.due()
		for _, body := range due {
			select {
			case n.sem <- struct{}{}:
			case <-n.ctx.Done():
				return
			}
			n.sending.Add(1)
			go n.send(body)
		}
		if len(due) > 0 {
			continue
		}
		var t *time.Timer
		var timer <-chan time.Time
		if wait >= 0 {
			t = time.NewTimer(wait)
			timer = t.C
		}
		select {
		case <-timer:
		case <-n.wake:
		case <-n.ctx.Done():
		}
		if t != nil {
			t.Stop()
		}
		if n.ctx.Err() != nil {
			return
		}
	}
}

// due pops the notices whose time has come and renders their documents (one
// entry per build: its phases in order). It returns how long until the next
// one (-1: none).
func (n *notifier) due() ([][][]byte, time.Duration) {
	s := n.s
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.opts.Now()
	s.advance(now)
	var out [][][]byte
	for len(n.heap) > 0 && !n.heap[0].at.After(now) && len(out) < cap(n.sem) {
		nt := heap.Pop(&n.heap).(*notice)
		if docs := n.render(nt, now); len(docs) > 0 {
			out = append(out, docs)
		}
	}
	if len(out) > 0 || len(n.heap) == 0 {
		return out, -1
	}
	wait := n.heap[0].at.Sub(now)
	if n.fakeClock && wait > fakeClockTick {
		wait = fakeClockTick
	}
	return nil, wait
}

// render is the documents of a phase change, or nothing if the build never
// reached it (a cancelled item) or it was already told (a stopped build's
// original end). Callers hold s.mu and have called advance.
func (n *notifier) render(nt *notice, now time.Time) [][]byte {
	b := nt.it.build
	if b == nil {
		return nil
	}
	var phases []string
	switch {
	case !nt.end:
		if b.toldStart {
			return nil
		}
		b.toldStart = true
		phases = []string{PhaseStarted}
	default:
		if b.toldEnd || b.buildingAt(now) {
			return nil
		}
		b.toldEnd = true
		for _, p := range []string{PhaseCompleted, PhaseFinalized} {
			if n.phases[p] {
				phases = append(phases, p)
			}
		}
	}
	docs := make([][]byte, 0, len(phases))
	for _, p := range phases {
		body, err := json.Marshal(n.s.notification(b, p, now))
		if err == nil {
			docs = append(docs, body)
		}
	}
	return docs
}

// send posts one build's documents in order, and frees its sender slot.
func (n *notifier) send(docs [][]byte) {
	defer n.sending.Done()
	defer func() { <-n.sem }()
	for _, body := range docs {
		if n.post(body) {
			n.delivered.Add(1)
		} else {
			n.failed.Add(1)
		}
	}
}

func (n *notifier) post(body []byte) bool {
	ctx, cancel := context.WithTimeout(n.ctx, n.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, n.url, bytes.NewReader(body))
	if err != nil {
		return false
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := n.client.Do(req)
	if err != nil {
		return false
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	return resp.StatusCode >= 200 && resp.StatusCode < 300
}

// close stops the loop and the POSTs in flight.
func (n *notifier) close() {
	n.cancel()
	<-n.done
	n.sending.Wait()
	n.transport.CloseIdleConnections()
}

// notifyDoc is the Notification plugin's JSON (format JSON, protocol HTTP).
type notifyDoc struct {
	Name        string      `json:"name"`
	DisplayName string      `json:"display_name"`
	URL         string      `json:"url"`
	Build       notifyBuild `json:"build"`
}

type notifyBuild struct {
	FullURL    string            `json:"full_url"`
	Number     int               `json:"number"`
	QueueID    int64             `json:"queue_id"`
	Timestamp  int64             `json:"timestamp"`
	Duration   int64             `json:"duration"`
	Phase      string            `json:"phase"`
	Status     string            `json:"status,omitempty"` // the result; absent while running
	URL        string            `json:"url"`
	SCM        struct{}          `json:"scm"`
	Parameters map[string]string `json:"parameters"`
	Log        string            `json:"log"`
	Notes      string            `json:"notes"`
	Artifacts  struct{}          `json:"artifacts"`
}

// notification renders b at phase. Callers hold s.mu.
func (s *Server) notification(b *build, phase string, now time.Time) notifyDoc {
	jobURL := strings.TrimPrefix(jobURLPath("", b.job.path), "/")
	buildURL := jobURL + strconv.Itoa(b.number) + "/"
	doc := notifyDoc{
		Name: b.job.name, DisplayName: b.job.name, URL: jobURL,
		Build: notifyBuild{
			FullURL: s.url + "/" + buildURL, Number: b.number, QueueID: b.item.id,
			Timestamp: ms(b.start), Duration: msd(b.durationAt(now)), Phase: phase,
			URL: buildURL, Parameters: paramMap(b.item.params),
		},
	}
	if phase != PhaseStarted {
		doc.Build.Status = b.resultAt(now)
	}
	return doc
}

// Notified is how many notifications were delivered (answered 2xx) and how
// many failed (no answer, or another status), since the start.
func (s *Server) Notified() (delivered, failed int64) {
	if s.notify == nil {
		return 0, 0
	}
	return s.notify.delivered.Load(), s.notify.failed.Load()
}

type noticeHeap []*notice

func (h noticeHeap) Len() int { return len(h) }
func (h noticeHeap) Less(a, b int) bool {
	if !h[a].at.Equal(h[b].at) {
		return h[a].at.Before(h[b].at)
	}
	return h[a].seq < h[b].seq
}
func (h noticeHeap) Swap(a, b int) { h[a], h[b] = h[b], h[a] }
func (h *noticeHeap) Push(x any)   { *h = append(*h, x.(*notice)) }
func (h *noticeHeap) Pop() any {
	old := *h
	nt := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return nt
}
