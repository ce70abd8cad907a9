// Package chaos proves gerritflow's promises on the whole pipeline: it plays
// Gerrit events through the Gerrit simulator into Kinesis while a fault
// injector kills service processes (SIGKILL), restarts the nats-server on its
// store and makes Jenkins and Gerrit fail; then, once everything settled, it
// checks from the simulators' own records, the streams and the KV buckets
// that no event was lost, no build started twice and no vote posted twice
// (Run, `gfdev chaos`). Soak runs a steady load and samples every service
// process's memory and goroutines (`gfdev soak`).
//
// What is checked, exactly, is written in docs/reliability.md; the oracle
// (oracle.go) derives what the pipeline owes from the config's jobs and the
// events Gerrit emitted, not from gerritflow's own code.
package chaos

import (
	"context"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gerritflow/gerritflow/cmd/gfdev/internal/stack"
	"github.com/gerritflow/gerritflow/pkg/config"
	"github.com/gerritflow/gerritflow/pkg/jenkinssim"
)

// Options configure a chaos run.
type Options struct {
	Events int           // workload steps, each one Kinesis record (default 2000)
	Seed   int64         // of the workload and the fault injector
	Play   time.Duration // events are spread over it, and faults strike during it (default Events/8 per second)
	Faults Faults        // zero value: DefaultFaults; NoFaults disables them
	// NoFaults plays the workload without faults (a baseline).
	NoFaults bool
	Replicas map[string]int // per service (default 2 each)
	Settle   time.Duration  // the most to wait for the pipeline to settle (default 6m)
	Dir      string         // state folder, wiped at start (default .dev/chaos)
	// JenkinsForget is how long the Jenkins simulator remembers a queue item
	// that left the queue (Jenkins: 5 minutes; default here 15s, so that a
	// monitor outage of tens of seconds does what a 5-minute one does).
	JenkinsForget time.Duration
	Root          string    // workspace root ("" finds it)
	Log           io.Writer // progress: the stack's lines and every fault (nil: discarded)
}

// DefaultReplicas runs two of every service.
var DefaultReplicas = map[string]int{"bridge": 2, "parser": 2, "trigger": 2, "monitor": 2, "voter": 2}

// Result is a finished run.
type Result struct {
	Opts        Options
	Events      int
	Actions     map[string]int
	Faults      []Fault
	Verdict     Verdict
	Settled     bool
	SettleState string
	BuildSets   int
	Builds      int
	Reviews     int
	Records     int
	Recoveries  []PathCount // how often each recovery path ran (from the services' logs)
	Started     time.Time
	PlayTime    time.Duration // workload and faults
	SettleTime  time.Duration
	Total       time.Duration
}

// Line is the last line of the report.
func (r *Result) Line() string {
	return fmt.Sprintf("events=%d lost=%d dup_builds=%d dup_votes=%d dlq=%d",
		r.Events, r.Verdict.Lost, r.Verdict.DupBuilds, r.Verdict.DupVotes, r.Verdict.DLQ)
}

// Breaches counts every broken invariant, a pipeline that never settled included.
func (r *Result) Breaches() int {
	n := r.Verdict.Breaches
	if !r.Settled {
		n++
	}
	return n
}

func (o *Options) defaults() {
	if o.Events <= 0 {
		o.Events = 2000
	}
	if o.Play <= 0 {
		o.Play = time.Duration(o.Events) * time.Second / 8
	}
	if o.Faults == (Faults{}) {
		o.Faults = DefaultFaults
	}
	if o.NoFaults {
		o.Faults = Faults{}
	}
	if o.Replicas == nil {
		o.Replicas = DefaultReplicas
	}
	if o.Settle <= 0 {
		o.Settle = 6 * time.Minute
	}
	if o.Dir == "" {
		o.Dir = ".dev/chaos"
	}
	if o.JenkinsForget <= 0 {
		o.JenkinsForget = 15 * time.Second
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
}

// recorder keeps every event the Gerrit simulator emits, in order.
type recorder struct {
	mu  sync.Mutex
	evs []Emitted
}

func (r *recorder) add(typ string, data []byte) {
	r.mu.Lock()
	r.evs = append(r.evs, Emitted{typ, append([]byte(nil), data...)})
	r.mu.Unlock()
}

func (r *recorder) all() []Emitted {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Emitted(nil), r.evs...)
}

func (r *recorder) len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.evs)
}

// Run starts the pipeline, plays the workload under faults, waits for the
// pipeline to settle and checks every invariant. The error is for a run that
// could not be carried out; breaches are in the Result.
func Run(ctx context.Context, opts Options) (res *Result, err error) {
	opts.defaults()
	res = &Result{Opts: opts, Started: time.Now()}
	s, err := stack.Start(ctx, stack.Options{Root: opts.Root, Dir: opts.Dir, Replicas: opts.Replicas, Log: opts.Log,
		JenkinsOptions: func(o *jenkinssim.Options) { o.ForgetAfter = opts.JenkinsForget }})
	if err != nil {
		return nil, err
	}
	defer func() {
		if serr := s.Stop(); serr != nil {
			fmt.Fprintf(opts.Log, "chaos: stack stop: %v\n", serr)
		}
	}()
	run, err := newPipelineRun(s, opts.Seed, 0)
	if err != nil {
		return nil, err
	}

	playStart := time.Now()
	faultCtx, stopFaults := context.WithCancel(ctx)
	in := newInjector(s, opts.Faults, opts.Seed, opts.Log)
	hook := in.midBuild
	run.onBuild.Store(&hook)
	injected := make(chan struct{})
	go func() { in.run(faultCtx); close(injected) }()
	played, perr := run.wl.Play(ctx, opts.Events, opts.Play)
	stopFaults()
	<-injected
	res.PlayTime = time.Since(playStart)
	res.Events, res.Faults = played, in.Faults()
	if perr != nil {
		return res, perr
	}
	fmt.Fprintf(opts.Log, "chaos: %d events played, %d faults injected in %v; waiting for the pipeline to settle\n",
		played, len(res.Faults), res.PlayTime.Round(time.Second))

	settleStart := time.Now()
	res.Settled, res.SettleState = settle(ctx, s, run.cfg.Jobs, run.records, opts.Settle, opts.Log)
	res.SettleTime = time.Since(settleStart)
	if err := run.verdict(ctx, res); err != nil {
		return res, err
	}
	res.Total = time.Since(res.Started)
	return res, nil
}

// pipelineRun is a workload playing into a started stack, with what it needs
// to judge the outcome.
type pipelineRun struct {
	s   *stack.Stack
	cfg *config.Config
	rec *recorder
	wl  *Workload
	// onBuild runs inside Jenkins' buildWithParameters, before the build is
	// queued and the answer sent (the injector's mid-request kill).
	onBuild atomic.Pointer[func(jenkinsJob, buildID string)]
}

func newPipelineRun(s *stack.Stack, seed int64, dupHorizon int) (*pipelineRun, error) {
	cfg, err := config.LoadFile(s.Config)
	if err != nil {
		return nil, err
	}
	if _, err := NewOracle(cfg.Jobs, cfg.Gerrit.User); err != nil {
		return nil, err
	}
	r := &pipelineRun{s: s, cfg: cfg, rec: &recorder{}}
	Script(s.Jenkins, cfg.Jobs, func(jenkinsJob, buildID string) {
		if h := r.onBuild.Load(); h != nil {
			(*h)(jenkinsJob, buildID)
		}
	})
	s.Gerrit.OnEvent(r.rec.add)
	r.wl = NewWorkload(s.Gerrit, s.Kinesis.Client(), stack.KinesisStream, seed)
	r.wl.dupHorizon = dupHorizon
	return r, nil
}

// records is the number of Kinesis records written so far.
func (r *pipelineRun) records() int {
	_, _, dups, garbage := r.wl.Played()
	return r.rec.len() + dups + len(garbage)
}

// verdict observes the stack and evaluates every invariant into res.
func (r *pipelineRun) verdict(ctx context.Context, res *Result) error {
	steps, counts, dups, garbage := r.wl.Played()
	res.Events, res.Actions = steps, counts
	oracle, err := NewOracle(r.cfg.Jobs, r.cfg.Gerrit.User)
	if err != nil {
		return err
	}
	x, err := oracle.Expect(r.rec.all(), dups, garbage)
	if err != nil {
		return err
	}
	obs, err := Observe(ctx, r.s, r.cfg.Jobs)
	if err != nil {
		return fmt.Errorf("observe: %w", err)
	}
	res.Verdict = Evaluate(x, obs, r.cfg.Jobs, r.cfg.Vote)
	res.BuildSets, res.Builds, res.Reviews, res.Records = len(obs.Sets), len(obs.Jenkins), len(obs.Reviews), x.Records
	res.Recoveries = recoveries(r.s)
	return nil
}
