package monitor

import (
	"container/heap"
	"context"
	"sync"
	"time"
)

// Clock is the scheduler's time source. Tests inject a fake one; Real is the
// wall clock.
type Clock interface {
	Now() time.Time
	After(d time.Duration) <-chan time.Time
}

// Real is the wall clock.
var Real Clock = realClock{}

type realClock struct{}

func (realClock) Now() time.Time                         { return time.Now() }
func (realClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// A Task is one step of a followed build (one poll round). It runs on a
// worker of the pool, never concurrently with itself, and returns when it
// wants to run again, or stop to be forgotten.
type Task func() (again time.Duration, stop bool)

// Entry is a task's place in the scheduler, for Poke and Remove.
type Entry struct {
	at    time.Time
	seq   uint64 // FIFO among equal deadlines
	index int    // in the heap; -1 when not waiting
	task  Task

	running bool // on a worker now
	poked   bool // poked while running: run again at once
	urgent  bool // poked: runs before every entry that is merely due
	removed bool
}

// Scheduler runs many tasks, each at its own time, from ONE timer loop (a
// min-heap of deadlines) and a fixed pool of workers: ten thousand followed
// builds cost ten thousand heap entries, not ten thousand sleeping goroutines.
// It is safe for concurrent use.
type Scheduler struct {
	clock   Clock
	workers int

	mu     sync.Mutex
	heap   timerHeap
	seq    uint64
	live   int // entries waiting or running
	closed bool
	wake   chan struct{} // cap 1: "the heap's top may have changed"
}

// NewScheduler returns a scheduler with workers workers (at least 1). Call
// Run to start it.
func NewScheduler(clock Clock, workers int) *Scheduler {
	if workers < 1 {
		workers = 1
	}
	return &Scheduler{clock: clock, workers: workers, wake: make(chan struct{}, 1)}
}

// Add schedules t to run after d (d <= 0: as soon as a worker is free).
func (s *Scheduler) Add(d time.Duration, t Task) *Entry {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := &Entry{task: t, index: -1}
	if s.closed {
		e.removed = true
		return e
	}
	s.live++
	s.push(e, s.clock.Now().Add(max(d, 0)))
	return e
}

// Poke makes e run now: at once if it is waiting, or again right after its
// current run if it is running. A poked entry goes before every entry that
// is merely due, so that when the workers lag behind the deadlines (the
// Jenkins budget is saturated) a push is not queued behind the backlog. It
// stays first while its task asks to run again at once (again <= 0).
func (s *Scheduler) Poke(e *Entry) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case e.removed:
	case e.running:
		e.poked = true
	case e.index >= 0:
		e.at, e.urgent = s.clock.Now(), true
		heap.Fix(&s.heap, e.index)
		s.signal()
	}
}

// Remove forgets e; a run in progress finishes, but e does not run again.
func (s *Scheduler) Remove(e *Entry) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e.removed {
		return
	}
	e.removed = true
	if e.index >= 0 {
		if e.index == 0 {
			s.signal() // the loop may sleep towards e's deadline
		}
		heap.Remove(&s.heap, e.index)
		s.live--
	}
	// A running entry is counted out when its run returns.
}

// Len is the number of tasks waiting or running.
func (s *Scheduler) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.live
}

// Run dispatches due tasks to the workers until ctx ends, then waits for the
// runs in progress and forgets every task.
func (s *Scheduler) Run(ctx context.Context) {
	jobs := make(chan *Entry)
	var wg sync.WaitGroup
	for range s.workers {
		wg.Go(func() {
			for e := range jobs {
				s.run(e)
			}
		})
	}
	defer func() {
		close(jobs)
		wg.Wait()
		s.mu.Lock()
		s.closed = true
		for _, e := range s.heap {
			e.removed, e.index = true, -1
		}
		s.heap, s.live = nil, 0
		s.mu.Unlock()
	}()
	for {
		due, wait := s.next()
		if due != nil {
			select {
			case jobs <- due: // blocks while every worker is busy: the pool is the bound
				continue
			case <-ctx.Done():
				return
			}
		}
		var timer <-chan time.Time
		if wait >= 0 {
			timer = s.clock.After(wait)
		}
		select {
		case <-s.wake:
		case <-timer:
		case <-ctx.Done():
			return
		}
	}
}

// next pops the first due task, or says how long until one is due (-1: none).
func (s *Scheduler) next() (*Entry, time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	// A wake signalled before this look at the heap is answered by it (push
	// signals under s.mu); left buffered it would make the loop look again
	// and arm a second timer for a deadline it already waits for.
	select {
	case <-s.wake:
	default:
	}
	if len(s.heap) == 0 {
		return nil, -1
	}
	now := s.clock.Now()
	if top := s.heap[0]; top.at.After(now) {
		return nil, top.at.Sub(now)
	}
	e := heap.Pop(&s.heap).(*Entry)
	e.running = true
	return e, 0
}

func (s *Scheduler) run(e *Entry) {
	again, stop := e.task()
	s.mu.Lock()
	defer s.mu.Unlock()
	e.running = false
	if e.removed || stop || s.closed {
		e.removed = true
		s.live--
		return
	}
	switch {
	case e.poked:
		e.poked, e.urgent, again = false, true, 0
	case again > 0:
		e.urgent = false
	}
	s.push(e, s.clock.Now().Add(max(again, 0)))
}

// push adds e to the heap at at. Callers hold s.mu.
func (s *Scheduler) push(e *Entry, at time.Time) {
	s.seq++
	e.at, e.seq = at, s.seq
	heap.Push(&s.heap, e)
	if e.index == 0 {
		s.signal()
	}
}

func (s *Scheduler) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// timerHeap orders poked entries first (they are always due), then entries
// by deadline, then by insertion.
type timerHeap []*Entry

func (h timerHeap) Len() int { return len(h) }
func (h timerHeap) Less(a, b int) bool {
	if h[a].urgent != h[b].urgent {
		return h[a].urgent
	}
	if !h[a].at.Equal(h[b].at) {
		return h[a].at.Before(h[b].at)
	}
	return h[a].seq < h[b].seq
}
func (h timerHeap) Swap(a, b int) {
	h[a], h[b] = h[b], h[a]
	h[a].index, h[b].index = a, b
}
func (h *timerHeap) Push(x any) {
	e := x.(*Entry)
	e.index = len(*h)
	*h = append(*h, e)
}
func (h *timerHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	old[len(old)-1] = nil
	e.index = -1
	*h = old[:len(old)-1]
	return e
}
