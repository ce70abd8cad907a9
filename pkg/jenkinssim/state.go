package jenkinssim

import (
	"container/heap"
	"time"
)

type folder struct {
	path, name string
	children   map[string]any // *folder or *job
}

type job struct {
	path, name string
	params     []string
	script     func(map[string]string) Outcome
	builds     []*build // index = number-1
	nextNumber int
	requests   int
	waiting    map[int64]*item
}

type param struct{ name, value string }

type itemState int

const (
	stateWaiting itemState = iota
	stateStarted
	stateCancelled
)

type item struct {
	id       int64
	job      *job
	params   []param // declared parameters, in declaration order
	queuedAt time.Time
	startAt  time.Time
	out      Outcome
	state    itemState
	leftAt   time.Time
	build    *build
}

type build struct {
	job       *job
	number    int
	item      *item
	start     time.Time
	end       time.Time // start + Duration
	abortedAt time.Time // zero unless stopped while building

	toldStart, toldEnd bool // notifications rendered (see notifier)
}

// endAt is when b ends or ended: when it was stopped, else its scripted end.
func (b *build) endAt() time.Time {
	if !b.abortedAt.IsZero() {
		return b.abortedAt
	}
	return b.end
}

func (b *build) buildingAt(now time.Time) bool {
	return b.abortedAt.IsZero() && now.Before(b.end)
}

func (b *build) resultAt(now time.Time) string {
	switch {
	case !b.abortedAt.IsZero():
		return "ABORTED"
	case now.Before(b.end):
		return ""
	}
	return b.item.out.Result
}

// durationAt is what Jenkins reports: 0 while building, then the run time.
func (b *build) durationAt(now time.Time) time.Duration {
	switch {
	case !b.abortedAt.IsZero():
		return b.abortedAt.Sub(b.start)
	case now.Before(b.end):
		return 0
	}
	return b.end.Sub(b.start)
}

func withDefaults(o Outcome) Outcome {
	if o.Result == "" {
		o.Result = "SUCCESS"
	}
	switch {
	case o.Duration == 0:
		o.Duration = 200 * time.Millisecond
	case o.Duration < 0:
		o.Duration = 0
	}
	switch {
	case o.QueueDelay == 0:
		o.QueueDelay = 100 * time.Millisecond
	case o.QueueDelay < 0:
		o.QueueDelay = 0
	}
	return o
}

// advance starts every waiting item whose time has come (in start order, so
// build numbers follow start times) and forgets left items older than
// ForgetAfter. Callers hold s.mu.
func (s *Server) advance(now time.Time) {
	for s.waiting.Len() > 0 && !s.waiting[0].startAt.After(now) {
		it := heap.Pop(&s.waiting).(*item)
		if it.state != stateWaiting {
			continue
		}
		j := it.job
		b := &build{job: j, number: j.nextNumber, item: it, start: it.startAt, end: it.startAt.Add(it.out.Duration)}
		j.nextNumber++
		j.builds = append(j.builds, b)
		it.build = b
		it.state = stateStarted
		it.leftAt = it.startAt
		delete(j.waiting, it.id)
		s.left = append(s.left, it)
	}
	n := 0
	for n < len(s.left) && !s.left[n].leftAt.Add(s.opts.ForgetAfter).After(now) {
		delete(s.items, s.left[n].id)
		s.left[n] = nil
		n++
	}
	s.left = s.left[n:]
}

// cancel removes a waiting item from the queue. Callers hold s.mu and have
// called advance.
func (s *Server) cancel(it *item, now time.Time) {
	it.state = stateCancelled
	it.leftAt = now
	delete(it.job.waiting, it.id)
	s.left = append(s.left, it)
}

// estimate is Jenkins' estimatedDuration: the scripted value, else the mean of
// the last (up to 3) successful builds, else -1.
func (j *job) estimate(now time.Time, scripted time.Duration) time.Duration {
	if scripted != 0 {
		return scripted
	}
	var sum time.Duration
	n := 0
	for i := len(j.builds) - 1; i >= 0 && n < 3; i-- {
		b := j.builds[i]
		if b.resultAt(now) == "SUCCESS" {
			sum += b.durationAt(now)
			n++
		}
	}
	if n == 0 {
		return -time.Millisecond
	}
	return sum / time.Duration(n)
}

type itemHeap []*item

func (h itemHeap) Len() int { return len(h) }
func (h itemHeap) Less(a, b int) bool {
	if !h[a].startAt.Equal(h[b].startAt) {
		return h[a].startAt.Before(h[b].startAt)
	}
	return h[a].id < h[b].id
}
func (h itemHeap) Swap(a, b int) { h[a], h[b] = h[b], h[a] }
func (h *itemHeap) Push(x any)   { *h = append(*h, x.(*item)) }
func (h *itemHeap) Pop() any {
	old := *h
	it := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return it
}
