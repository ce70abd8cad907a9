package monitor

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// fakeClock is a manual clock: time moves only by Advance. It remembers the
// deadlines it was asked to wait for, so a test can wait until the scheduler
// sleeps towards an exact instant instead of sleeping itself.
type fakeClock struct {
	mu      sync.Mutex
	now     time.Time
	waiters []fakeWaiter
	asked   map[time.Time]bool
	changed chan struct{} // closed and replaced on every After
}

type fakeWaiter struct {
	at time.Time
	ch chan time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC), asked: map[time.Time]bool{}, changed: make(chan struct{})}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := make(chan time.Time, 1)
	at := c.now.Add(d)
	if d <= 0 {
		ch <- c.now
	} else {
		c.waiters = append(c.waiters, fakeWaiter{at: at, ch: ch})
	}
	c.asked[at] = true
	close(c.changed)
	c.changed = make(chan struct{})
	return ch
}

// Advance moves time by d and fires the waiters due.
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	kept := c.waiters[:0]
	for _, w := range c.waiters {
		if w.at.After(c.now) {
			kept = append(kept, w)
			continue
		}
		w.ch <- c.now
	}
	c.waiters = kept
}

// WaitForSleep blocks until someone waits for the instant at.
func (c *fakeClock) WaitForSleep(t *testing.T, at time.Time) {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		c.mu.Lock()
		ok, ch := c.asked[at], c.changed
		c.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("nobody waits for %s (now %s)", at.Format(time.TimeOnly), c.Now().Format(time.TimeOnly))
		}
	}
}

func startScheduler(t *testing.T, clk Clock, workers int) *Scheduler {
	t.Helper()
	s := NewScheduler(clk, workers)
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() { s.Run(ctx); close(stopped) }()
	t.Cleanup(func() { cancel(); <-stopped })
	return s
}

func recv[T any](t *testing.T, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(5 * time.Second):
		t.Fatal("timed out waiting for a task to run")
	}
	var zero T
	return zero
}

func TestSchedulerRunsInDeadlineOrder(t *testing.T) {
	clk := newFakeClock()
	s := startScheduler(t, clk, 1)
	ran := make(chan string, 10)
	once := func(name string) Task {
		return func() (time.Duration, bool) { ran <- name; return 0, true }
	}
	t0 := clk.Now()
	s.Add(3*time.Second, once("c"))
	s.Add(1*time.Second, once("a"))
	s.Add(2*time.Second, once("b"))
	s.Add(2*time.Second, once("b2")) // same deadline: first added runs first
	clk.WaitForSleep(t, t0.Add(time.Second))
	clk.Advance(10 * time.Second)
	var got []string
	for range 4 {
		got = append(got, recv(t, ran))
	}
	if want := []string{"a", "b", "b2", "c"}; !slices.Equal(got, want) {
		t.Errorf("ran %v; want %v", got, want)
	}
	if n := s.Len(); n != 0 {
		t.Errorf("Len after every task stopped = %d; want 0", n)
	}
}

func TestSchedulerReschedulesAtTheIntervalATaskAsks(t *testing.T) {
	clk := newFakeClock()
	s := startScheduler(t, clk, 2)
	t0 := clk.Now()
	intervals := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second}
	ran := make(chan time.Time, 10)
	i := 0
	s.Add(0, func() (time.Duration, bool) {
		ran <- clk.Now()
		if i == len(intervals) {
			return 0, true
		}
		i++
		return intervals[i-1], false
	})
	want := []time.Time{t0, t0.Add(time.Second), t0.Add(3 * time.Second), t0.Add(7 * time.Second)}
	if got := recv(t, ran); !got.Equal(want[0]) {
		t.Fatalf("first run at %v; want %v", got, want[0])
	}
	for k := 1; k < len(want); k++ {
		clk.WaitForSleep(t, want[k]) // the loop sleeps exactly until the next poll
		clk.Advance(want[k].Sub(clk.Now()))
		if got := recv(t, ran); !got.Equal(want[k]) {
			t.Fatalf("run %d at +%v; want +%v", k, got.Sub(t0), want[k].Sub(t0))
		}
	}
}

func TestSchedulerPokeRunsAWaitingTaskNow(t *testing.T) {
	clk := newFakeClock()
	s := startScheduler(t, clk, 1)
	ran := make(chan time.Time, 1)
	e := s.Add(time.Hour, func() (time.Duration, bool) { ran <- clk.Now(); return time.Hour, false })
	clk.WaitForSleep(t, clk.Now().Add(time.Hour))
	s.Poke(e)
	if got := recv(t, ran); !got.Equal(clk.Now()) {
		t.Errorf("poked task ran at %v; want now %v", got, clk.Now())
	}
	if n := s.Len(); n != 1 {
		t.Errorf("Len = %d; want 1 (the task asked to run again)", n)
	}
}

func TestSchedulerPokeWhileRunningRunsAgainAtOnce(t *testing.T) {
	clk := newFakeClock()
	s := startScheduler(t, clk, 1)
	entered := make(chan struct{})
	proceed := make(chan struct{})
	var runs atomic.Int32
	second := make(chan struct{})
	e := s.Add(0, func() (time.Duration, bool) {
		switch runs.Add(1) {
		case 1:
			close(entered)
			<-proceed
			return time.Hour, false // would sleep an hour, but it was poked meanwhile
		default:
			close(second)
			return 0, true
		}
	})
	<-entered
	s.Poke(e)
	close(proceed)
	recv(t, second)
}

// TestSchedulerPokeGoesBeforeOverdueTasks: when the workers lag behind the
// deadlines (a saturated Jenkins budget), a poked task runs before the tasks
// that are merely overdue, and stays first while it asks to run again at once.
func TestSchedulerPokeGoesBeforeOverdueTasks(t *testing.T) {
	clk := newFakeClock()
	s := startScheduler(t, clk, 1)
	t0 := clk.Now()
	ran := make(chan string, 10)
	release := make(chan struct{})
	s.Add(0, func() (time.Duration, bool) { <-release; return 0, true }) // the one worker is busy
	for i, name := range []string{"a", "b", "c"} {
		s.Add(time.Duration(i+1)*time.Second, func() (time.Duration, bool) { ran <- name; return 0, true })
	}
	runs := 0
	p := s.Add(time.Hour, func() (time.Duration, bool) {
		runs++
		ran <- fmt.Sprintf("p%d", runs)
		if runs == 1 {
			return 0, false // continue at once (e.g. the queue item became a build)
		}
		return time.Hour, false
	})
	clk.WaitForSleep(t, t0.Add(time.Second))
	clk.Advance(10 * time.Second) // a, b and c are overdue
	s.Poke(p)
	close(release)
	var got []string
	for range 5 {
		got = append(got, recv(t, ran))
	}
	// The dispatcher holds one due task for the busy worker ("a" may be it,
	// before or after p1); every other overdue task runs after p's two runs.
	pos := map[string]int{}
	for i, name := range got {
		pos[name] = i
	}
	if !(pos["p1"] < pos["p2"] && pos["p2"] < pos["b"] && pos["b"] < pos["c"]) {
		t.Errorf("ran %v; want p1, p2 before the overdue b and c (a may come anywhere before b)", got)
	}
}

func TestSchedulerRemovedTaskNeverRuns(t *testing.T) {
	clk := newFakeClock()
	s := startScheduler(t, clk, 1)
	ran := make(chan string, 2)
	e := s.Add(time.Second, func() (time.Duration, bool) { ran <- "removed"; return 0, true })
	s.Add(2*time.Second, func() (time.Duration, bool) { ran <- "sentinel"; return 0, true })
	s.Remove(e)
	s.Poke(e) // no effect on a removed entry
	clk.WaitForSleep(t, clk.Now().Add(2*time.Second))
	clk.Advance(3 * time.Second)
	// One worker and deadline order: had it not been removed, it would come first.
	if got := recv(t, ran); got != "sentinel" {
		t.Errorf("first run = %q; want sentinel", got)
	}
}

func TestSchedulerHoldsThousandsOfTasksWithoutGoroutines(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		s := NewScheduler(Real, 4)
		stopped := make(chan struct{})
		go func() { s.Run(ctx); close(stopped) }()
		synctest.Wait()
		before := runtime.NumGoroutine()
		var runs atomic.Int64
		for i := range 10000 {
			s.Add(time.Duration(i%100)*time.Second, func() (time.Duration, bool) {
				runs.Add(1)
				return 30 * time.Second, false
			})
		}
		synctest.Wait()
		if after := runtime.NumGoroutine(); after > before+1 {
			t.Errorf("goroutines grew from %d to %d for 10000 tasks; want none per task", before, after)
		}
		time.Sleep(100 * time.Second) // fake time: every task ran at least once
		synctest.Wait()
		if n := runs.Load(); n < 10000 {
			t.Errorf("%d runs after 100s; want every one of 10000 tasks at least once", n)
		}
		if n := s.Len(); n != 10000 {
			t.Errorf("Len = %d; want 10000", n)
		}
		cancel()
		<-stopped
		if n := s.Len(); n != 0 {
			t.Errorf("Len after stop = %d; want 0", n)
		}
	})
}

// TestBudget runs 60 calls through a budget of 3 concurrent calls and 10 per
// second on the fake time of a synctest bubble.
func TestBudget(t *testing.T) {
	for _, tc := range []struct {
		name    string
		rps     float64
		max     int
		callFor time.Duration
	}{
		{"rate bound", 10, 50, 10 * time.Millisecond},
		{"concurrency bound", 1000, 3, 500 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				b := newBudget(Real, tc.rps, tc.max)
				var cur, peak atomic.Int32
				var mu sync.Mutex
				var starts []time.Time
				var wg sync.WaitGroup
				t0 := time.Now()
				for range 60 {
					wg.Go(func() {
						release, err := b.acquire(t.Context())
						if err != nil {
							t.Error(err)
							return
						}
						n := cur.Add(1)
						for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
						}
						mu.Lock()
						starts = append(starts, time.Now())
						mu.Unlock()
						time.Sleep(tc.callFor)
						cur.Add(-1)
						release()
					})
				}
				wg.Wait()
				if p := int(peak.Load()); p > tc.max {
					t.Errorf("peak concurrency %d; want at most %d", p, tc.max)
				}
				slices.SortFunc(starts, time.Time.Compare)
				// Burst 1: any k+1 consecutive starts span at least k/rps.
				gap := time.Duration(float64(time.Second) / tc.rps)
				for i := 1; i < len(starts); i++ {
					if d := starts[i].Sub(starts[i-1]); d < gap-time.Microsecond {
						t.Fatalf("starts %d and %d are %v apart; want at least %v (rate %v/s)", i-1, i, d, gap, tc.rps)
					}
				}
				minTotal := time.Duration(len(starts)-1) * gap
				if tc.max < 60 {
					minTotal = max(minTotal, time.Duration(60/tc.max-1)*tc.callFor)
				}
				if el := time.Since(t0); el < minTotal {
					t.Errorf("60 calls took %v; want at least %v", el, minTotal)
				}
			})
		})
	}
}

func TestBudgetWaitEndsWithContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBudget(Real, 1, 1)
		release, err := b.acquire(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
		defer cancel()
		if _, err := b.acquire(ctx); err == nil {
			t.Error("acquire with every slot taken returned no error after its context ended")
		}
		release()
		// The next call waits for the limiter: one second after the first.
		ctx2, cancel2 := context.WithTimeout(t.Context(), 1100*time.Millisecond)
		defer cancel2()
		r2, err := b.acquire(ctx2)
		if err != nil {
			t.Fatalf("acquire after release = %v", err)
		}
		r2()
	})
}
