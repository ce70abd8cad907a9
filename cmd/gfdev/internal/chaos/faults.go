package chaos

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gerritflow/gerritflow/cmd/gfdev/internal/stack"
)

// Fault kinds.
const (
	FaultKill        = "kill -9 + restart"
	FaultKillTrigger = "kill -9 triggers mid-request"
	FaultMonitorsOut = "every monitor down"
	FaultNATS        = "nats-server restart"
	FaultJenkins503  = "jenkins 503"
	FaultJenkinsHang = "jenkins hangs"
	FaultGerrit500   = "gerrit 500"
)

// FaultOrder is how the report lists the kinds.
var FaultOrder = []string{FaultKill, FaultKillTrigger, FaultMonitorsOut, FaultNATS, FaultJenkins503, FaultJenkinsHang, FaultGerrit500}

// Faults says how often each kind of fault strikes: each interval is drawn
// uniformly from half to one and a half times the value; 0 disables the kind.
type Faults struct {
	Kill time.Duration // kill -9 one random service process, restart it
	// KillMidBuild kills every trigger replica inside a buildWithParameters
	// call: Jenkins queues the build, the trigger never learns its queue item
	// (the crash GERRITFLOW_BUILD_ID exists for).
	KillMidBuild time.Duration
	// MonitorsDown kills every monitor replica and keeps them down for 20 to
	// 40 seconds: builds start, run and leave Jenkins' queue unwatched.
	MonitorsDown time.Duration
	NATS         time.Duration // restart the nats-server on its store
	Jenkins      time.Duration // Jenkins answers 503, or hangs, for a while
	Gerrit       time.Duration // Gerrit answers 500 for a while
}

// DefaultFaults strike every few seconds (kills) to every minute or so.
var DefaultFaults = Faults{Kill: 4 * time.Second, KillMidBuild: 40 * time.Second, MonitorsDown: 100 * time.Second, NATS: 50 * time.Second, Jenkins: 25 * time.Second, Gerrit: 30 * time.Second}

// Fault is one fault injected.
type Fault struct {
	At     time.Duration // since the injector started
	Kind   string
	Target string        // the process killed
	For    time.Duration // how long the failure lasted (the process was down)
	Note   string
}

// injector injects faults into a running stack until its context ends.
type injector struct {
	s     *stack.Stack
	cfg   Faults
	log   io.Writer
	start time.Time

	rmu sync.Mutex
	rnd *rand.Rand

	armed atomic.Bool // the next buildWithParameters kills the triggers

	pmu   sync.Mutex
	locks map[*stack.Proc]*sync.Mutex // one restart of a process at a time

	mu        sync.Mutex
	faults    []Fault
	midBuilds sync.WaitGroup // restarts after mid-request kills
}

func newInjector(s *stack.Stack, cfg Faults, seed int64, log io.Writer) *injector {
	return &injector{s: s, cfg: cfg, log: log, rnd: rand.New(rand.NewPCG(uint64(seed)+1, 0x5eed))}
}

// between draws a duration uniformly in [lo, hi].
func (in *injector) between(lo, hi time.Duration) time.Duration {
	in.rmu.Lock()
	defer in.rmu.Unlock()
	return lo + time.Duration(in.rnd.Int64N(int64(hi-lo)+1))
}

func (in *injector) intn(n int) int {
	in.rmu.Lock()
	defer in.rmu.Unlock()
	return in.rnd.IntN(n)
}

func (in *injector) record(f Fault) {
	in.mu.Lock()
	in.faults = append(in.faults, f)
	in.mu.Unlock()
	what := f.Kind
	if f.Target != "" {
		what += " " + f.Target
	}
	if f.For > 0 {
		what += fmt.Sprintf(" for %v", f.For.Round(10*time.Millisecond))
	}
	if f.Note != "" {
		what += " (" + f.Note + ")"
	}
	fmt.Fprintf(in.log, "chaos: [%6.1fs] %s\n", f.At.Seconds(), what)
}

// Faults returns the faults injected so far, in order.
func (in *injector) Faults() []Fault {
	in.mu.Lock()
	defer in.mu.Unlock()
	out := append([]Fault(nil), in.faults...)
	sort.SliceStable(out, func(a, b int) bool { return out[a].At < out[b].At })
	return out
}

// run injects faults until ctx ends, then ends every failure it started and
// brings every service process back up (ready) before it returns.
func (in *injector) run(ctx context.Context) {
	in.start = time.Now()
	var wg sync.WaitGroup
	loop := func(every time.Duration, inject func()) {
		if every <= 0 {
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-ctx.Done():
					return
				case <-time.After(in.between(every/2, every*3/2)):
				}
				inject()
			}
		}()
	}
	loop(in.cfg.Kill, func() { in.kill(ctx) })
	loop(in.cfg.NATS, in.restartNATS)
	loop(in.cfg.KillMidBuild, func() { in.armed.Store(true) })
	loop(in.cfg.MonitorsDown, func() { in.outage(ctx, "monitor", 20*time.Second, 40*time.Second) })
	jenkinsTurn := 0
	loop(in.cfg.Jenkins, func() {
		jenkinsTurn++
		if jenkinsTurn%2 == 1 {
			in.fail(ctx, FaultJenkins503, func(d time.Duration) { in.s.Jenkins.FailWith(http.StatusServiceUnavailable, d) }, 4*time.Second, 12*time.Second)
		} else {
			in.fail(ctx, FaultJenkinsHang, func(d time.Duration) { in.s.Jenkins.FailWith(0, d) }, 3*time.Second, 8*time.Second)
		}
	})
	loop(in.cfg.Gerrit, func() {
		in.fail(ctx, FaultGerrit500, func(d time.Duration) { in.s.Gerrit.FailWith(http.StatusInternalServerError, d) }, 4*time.Second, 12*time.Second)
	})
	wg.Wait()
	in.armed.Store(false)
	in.midBuilds.Wait()
	in.s.Jenkins.FailWith(0, 0)
	in.s.Gerrit.FailWith(0, 0)
	in.ensureUp(context.Background())
}

// kill sends SIGKILL to one random service process (by its PID) and starts it again.
func (in *injector) kill(ctx context.Context) {
	var procs []*stack.Proc
	for _, name := range stack.Services {
		procs = append(procs, in.s.Procs(name)...)
	}
	if len(procs) == 0 {
		return
	}
	p := procs[in.intn(len(procs))]
	unlock := in.lock(p)
	defer unlock()
	at := time.Since(in.start)
	pid := p.PID()
	_ = p.Kill()
	down := in.between(200*time.Millisecond, 2*time.Second)
	select {
	case <-ctx.Done():
	case <-time.After(down):
	}
	attempts, err := in.restart(p)
	f := Fault{At: at, Kind: FaultKill, Target: fmt.Sprintf("%s-%d", p.Name, p.Index), For: time.Since(in.start) - at, Note: fmt.Sprintf("pid %d", pid)}
	if attempts > 1 {
		f.Note += fmt.Sprintf(", ready after %d starts", attempts)
	}
	if err != nil {
		f.Note += ", NOT RESTARTED: " + err.Error()
	}
	in.record(f)
}

// outage kills every replica of service, keeps them down for a while in
// [lo, hi] (less if ctx ends) and starts them again.
func (in *injector) outage(ctx context.Context, service string, lo, hi time.Duration) {
	procs := in.s.Procs(service)
	var unlocks []func()
	for _, p := range procs {
		unlocks = append(unlocks, in.lock(p))
	}
	defer func() {
		for _, u := range unlocks {
			u()
		}
	}()
	at := time.Since(in.start)
	for _, p := range procs {
		_ = p.Kill()
	}
	select {
	case <-ctx.Done():
	case <-time.After(in.between(lo, hi)):
	}
	note := ""
	for _, p := range procs {
		if _, err := in.restart(p); err != nil {
			note += fmt.Sprintf("%s-%d NOT RESTARTED: %v ", p.Name, p.Index, err)
		}
	}
	in.record(Fault{At: at, Kind: FaultMonitorsOut, For: time.Since(in.start) - at, Note: strings.TrimSpace(fmt.Sprintf("%d replicas %s", len(procs), note))})
}

// midBuild runs inside Jenkins' buildWithParameters: when armed, it kills
// every trigger replica (one of them is waiting for this very answer) before
// Jenkins queues the build and answers, and starts them again afterwards.
func (in *injector) midBuild(jenkinsJob, buildID string) {
	if !in.armed.CompareAndSwap(true, false) {
		return
	}
	at := time.Since(in.start)
	procs := in.s.Procs("trigger")
	for _, p := range procs {
		_ = p.Kill()
	}
	in.midBuilds.Add(1)
	go func() {
		defer in.midBuilds.Done()
		time.Sleep(in.between(200*time.Millisecond, time.Second))
		note := "during " + jenkinsJob + " " + buildID
		for _, p := range procs {
			unlock := in.lock(p)
			if p.WaitReady(context.Background(), time.Second) != nil { // not restarted by the kill loop meanwhile
				_ = p.Kill()
				if _, err := in.restart(p); err != nil {
					note += fmt.Sprintf(", %s-%d NOT RESTARTED: %v", p.Name, p.Index, err)
				}
			}
			unlock()
		}
		in.record(Fault{At: at, Kind: FaultKillTrigger, For: time.Since(in.start) - at, Note: note})
	}()
}

// lock serializes the restarts of p (the kill loop, the mid-request kills
// and the final check could otherwise start it twice).
func (in *injector) lock(p *stack.Proc) (unlock func()) {
	in.pmu.Lock()
	if in.locks == nil {
		in.locks = map[*stack.Proc]*sync.Mutex{}
	}
	l := in.locks[p]
	if l == nil {
		l = &sync.Mutex{}
		in.locks[p] = l
	}
	in.pmu.Unlock()
	l.Lock()
	return l.Unlock
}

// restart starts p until it is ready (a service whose dependencies are down
// at that moment, NATS or Jenkins, exits; an orchestrator would start it again).
func (in *injector) restart(p *stack.Proc) (attempts int, err error) {
	deadline := time.Now().Add(3 * time.Minute)
	for attempts = 1; ; attempts++ {
		if err = p.Start(); err == nil {
			if err = p.WaitReady(context.Background(), 30*time.Second); err == nil {
				return attempts, nil
			}
			_ = p.Kill() // not ready: start afresh
		}
		if time.Now().After(deadline) {
			return attempts, err
		}
		time.Sleep(time.Second)
	}
}

func (in *injector) restartNATS() {
	at := time.Since(in.start)
	down := in.between(500*time.Millisecond, 3*time.Second)
	err := in.s.RestartNATS(down)
	f := Fault{At: at, Kind: FaultNATS, For: time.Since(in.start) - at, Note: "same port, same store"}
	if err != nil {
		f.Note = "FAILED: " + err.Error()
	}
	in.record(f)
}

// fail makes a simulator fail for a random while in [lo, hi], and waits it out.
func (in *injector) fail(ctx context.Context, kind string, set func(time.Duration), lo, hi time.Duration) {
	d := in.between(lo, hi)
	at := time.Since(in.start)
	set(d)
	in.record(Fault{At: at, Kind: kind, For: d})
	select {
	case <-ctx.Done():
		set(0)
	case <-time.After(d):
	}
}

// ensureUp makes sure every service process runs and is ready: one that
// exited (or never became ready) is started again.
func (in *injector) ensureUp(ctx context.Context) {
	for _, name := range stack.Services {
		for _, p := range in.s.Procs(name) {
			unlock := in.lock(p)
			if p.WaitReady(ctx, 2*time.Second) != nil {
				_ = p.Kill()
				if _, err := in.restart(p); err != nil {
					fmt.Fprintf(in.log, "chaos: %s-%d does not come back: %v\n", p.Name, p.Index, err)
				}
			}
			unlock()
		}
	}
}

// summarize groups faults by kind: count, total time, and the processes killed.
func summarize(faults []Fault) []faultRow {
	rows := map[string]*faultRow{}
	for _, f := range faults {
		r := rows[f.Kind]
		if r == nil {
			r = &faultRow{Kind: f.Kind, targets: map[string]int{}}
			rows[f.Kind] = r
		}
		r.Count++
		r.Total += f.For
		if f.Target != "" {
			r.targets[f.Target]++
		}
		if strings.Contains(f.Note, "FAILED") || strings.Contains(f.Note, "NOT RESTARTED") {
			r.Failed++
		}
	}
	var out []faultRow
	for _, k := range FaultOrder {
		if r := rows[k]; r != nil {
			out = append(out, *r)
		} else {
			out = append(out, faultRow{Kind: k})
		}
	}
	return out
}

type faultRow struct {
	Kind    string
	Count   int
	Total   time.Duration
	Failed  int
	targets map[string]int
}

func (r faultRow) Targets() string {
	var names []string
	for n := range r.targets {
		names = append(names, n)
	}
	sort.Strings(names)
	var parts []string
	for _, n := range names {
		parts = append(parts, fmt.Sprintf("%s×%d", n, r.targets[n]))
	}
	return strings.Join(parts, " ")
}
