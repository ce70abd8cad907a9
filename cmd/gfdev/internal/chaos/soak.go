package chaos

import (
	"context"
	"fmt"
	"io"
	"math"
	"time"

	"github.com/gerritflow/gerritflow/cmd/gfdev/internal/stack"
)

// SoakOptions configure a soak run.
type SoakOptions struct {
	Duration time.Duration  // of the load (default 10m)
	Rate     float64        // workload steps per second (default 5)
	Every    time.Duration  // sampling interval (default 30s)
	Seed     int64          //
	Replicas map[string]int // default 1 each
	Settle   time.Duration  // the most to wait for the pipeline to settle at the end (default 5m)
	Dir      string         // default .dev/soak
	Root     string
	Out      io.Writer // samples, summary and invariants
	Log      io.Writer // the stack's own lines (nil: discarded)
}

// SoakResult is a finished soak: the samples (round 0 before the load, then
// one per interval, the last after the pipeline settled) and the invariants.
type SoakResult struct {
	*Result
	Rounds []SoakRound
}

// SoakRound is one sampling of every service process.
type SoakRound struct {
	At      time.Duration // since the load started
	Label   string        // "idle", "load", "settled"
	Samples []stack.Sample
}

// Soak keeps a steady load on the pipeline for Duration and prints, every
// Every, each service process's resident memory and goroutines from its own
// /metrics; then it lets the pipeline settle, samples once more, prints the
// growth per process and checks the same invariants as a chaos run.
func Soak(ctx context.Context, o SoakOptions) (*SoakResult, error) {
	if o.Duration <= 0 {
		o.Duration = 10 * time.Minute
	}
	if o.Rate <= 0 {
		o.Rate = 5
	}
	if o.Every <= 0 {
		o.Every = 30 * time.Second
	}
	if o.Settle <= 0 {
		o.Settle = 5 * time.Minute
	}
	if o.Dir == "" {
		o.Dir = ".dev/soak"
	}
	if o.Replicas == nil {
		o.Replicas = map[string]int{}
	}
	if o.Out == nil {
		o.Out = io.Discard
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
	events := int(o.Rate * o.Duration.Seconds())
	res := &SoakResult{Result: &Result{Opts: Options{Seed: o.Seed, Replicas: o.Replicas, Settle: o.Settle, Dir: o.Dir}, Started: time.Now()}}
	fmt.Fprintf(o.Out, "gfdev soak: %d events over %v (%.1f/s), seed %d, sampling every %v (state and logs in %s)\n",
		events, o.Duration, o.Rate, o.Seed, o.Every, o.Dir)
	s, err := stack.Start(ctx, stack.Options{Root: o.Root, Dir: o.Dir, Replicas: o.Replicas, Log: o.Log})
	if err != nil {
		return nil, err
	}
	defer func() {
		if serr := s.Stop(); serr != nil {
			fmt.Fprintf(o.Out, "soak: stack stop: %v\n", serr)
		}
	}()
	// Duplicates of the last 300 events only: a soak outlasts the streams'
	// 10-minute duplicate window, which a chaos run stays within.
	run, err := newPipelineRun(s, o.Seed, 300)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	sample := func(label string) {
		smp, errs := s.Samples(ctx)
		r := SoakRound{At: time.Since(start), Label: label, Samples: smp}
		res.Rounds = append(res.Rounds, r)
		printRound(o.Out, r, errs)
	}
	sample("idle")

	playCtx, stopPlay := context.WithCancel(ctx)
	defer stopPlay()
	played := make(chan error, 1)
	go func() {
		_, err := run.wl.Play(playCtx, events, o.Duration)
		played <- err
	}()
	tick := time.NewTicker(o.Every)
	defer tick.Stop()
	var perr error
loop:
	for {
		select {
		case <-ctx.Done():
			stopPlay()
			perr = <-played
			break loop
		case perr = <-played:
			break loop
		case <-tick.C:
			sample("load")
		}
	}
	res.PlayTime = time.Since(start)
	if perr != nil {
		return res, perr
	}
	if ctx.Err() != nil {
		return res, ctx.Err()
	}
	sample("load")
	settleStart := time.Now()
	res.Settled, res.SettleState = settle(ctx, s, run.cfg.Jobs, run.records, o.Settle, o.Out)
	res.SettleTime = time.Since(settleStart)
	sample("settled")
	if err := run.verdict(ctx, res.Result); err != nil {
		return res, err
	}
	res.Total = time.Since(res.Started)
	printGrowth(o.Out, res.Rounds, o.Duration)
	fmt.Fprintln(o.Out)
	printInvariants(o.Out, res.Result)
	fmt.Fprintf(o.Out, "\nTime: %v under load, %v to settle, %v in all\n",
		res.PlayTime.Round(time.Second), res.SettleTime.Round(time.Second), res.Total.Round(time.Second))
	fmt.Fprintf(o.Out, "breaches=%d\n", res.Breaches())
	fmt.Fprintln(o.Out, res.Line())
	return res, nil
}

func printRound(w io.Writer, r SoakRound, errs []error) {
	fmt.Fprintf(w, "\n[%7s] %-7s %-10s %7s %10s %11s %10s\n", r.At.Round(time.Second), r.Label, "process", "pid", "rss MB", "heap MB", "goroutines")
	for _, s := range r.Samples {
		fmt.Fprintf(w, "%18s %-10s %7d %10.1f %11.1f %10.0f\n", "", s.Name(), s.PID, s.RSS/(1<<20), s.Heap/(1<<20), s.Goroutines)
	}
	for _, err := range errs {
		fmt.Fprintf(w, "%18s %v\n", "", err)
	}
}

// Growth is one process's change over a soak.
type Growth struct {
	Name                           string
	RSSFirst, RSSLast, RSSSettled  float64 // bytes; first and last under load, after settling
	GoIdle, GoFirst, GoLast, GoEnd float64 // goroutines: before the load, first and last under load, after settling
	RSSSlope, GoSlope              float64 // least-squares trend under load, per 10 minutes
	Restarted                      bool
}

// Growths computes each process's growth from the rounds of a soak.
func Growths(rounds []SoakRound) []Growth {
	type series struct {
		g        Growth
		t, rss   []float64
		gor      []float64
		pid      int
		seenLoad bool
	}
	byName := map[string]*series{}
	var order []string
	for _, r := range rounds {
		for _, s := range r.Samples {
			sr := byName[s.Name()]
			if sr == nil {
				sr = &series{g: Growth{Name: s.Name()}, pid: s.PID}
				byName[s.Name()] = sr
				order = append(order, s.Name())
			}
			if s.PID != sr.pid {
				sr.g.Restarted = true
			}
			switch r.Label {
			case "idle":
				sr.g.GoIdle = s.Goroutines
			case "load":
				if !sr.seenLoad {
					sr.g.RSSFirst, sr.g.GoFirst, sr.seenLoad = s.RSS, s.Goroutines, true
				}
				sr.g.RSSLast, sr.g.GoLast = s.RSS, s.Goroutines
				sr.t = append(sr.t, r.At.Minutes())
				sr.rss = append(sr.rss, s.RSS)
				sr.gor = append(sr.gor, s.Goroutines)
			case "settled":
				sr.g.RSSSettled, sr.g.GoEnd = s.RSS, s.Goroutines
			}
		}
	}
	out := make([]Growth, 0, len(order))
	for _, n := range order {
		sr := byName[n]
		sr.g.RSSSlope = 10 * slope(sr.t, sr.rss)
		sr.g.GoSlope = 10 * slope(sr.t, sr.gor)
		out = append(out, sr.g)
	}
	return out
}

// slope is the least-squares slope of y over x (0 for fewer than 3 points).
func slope(x, y []float64) float64 {
	n := float64(len(x))
	if len(x) < 3 {
		return 0
	}
	var sx, sy, sxx, sxy float64
	for i := range x {
		sx += x[i]
		sy += y[i]
		sxx += x[i] * x[i]
		sxy += x[i] * y[i]
	}
	d := n*sxx - sx*sx
	if d == 0 {
		return 0
	}
	return (n*sxy - sx*sy) / d
}

func printGrowth(w io.Writer, rounds []SoakRound, d time.Duration) {
	fmt.Fprintf(w, "\nGrowth per process over %v (first and last sample under load, then after settling; trend = least-squares slope under load per 10 minutes)\n", d)
	fmt.Fprintf(w, "  %-10s %9s %9s %9s %11s   %8s %8s %8s %8s %12s\n",
		"process", "rss MB", "→ MB", "settled", "trend MB", "gor idle", "first", "last", "settled", "trend gor")
	for _, g := range Growths(rounds) {
		note := ""
		if g.Restarted {
			note = "  (restarted: pid changed)"
		}
		if g.GoEnd > g.GoIdle*1.5+20 {
			note += "  GOROUTINES NOT BACK TO IDLE"
		}
		fmt.Fprintf(w, "  %-10s %9.1f %9.1f %9.1f %+11.1f   %8.0f %8.0f %8.0f %8.0f %+12.1f%s\n",
			g.Name, g.RSSFirst/(1<<20), g.RSSLast/(1<<20), g.RSSSettled/(1<<20), g.RSSSlope/(1<<20),
			g.GoIdle, g.GoFirst, g.GoLast, g.GoEnd, roundTo(g.GoSlope, 1), note)
	}
}

func roundTo(v float64, digits int) float64 {
	p := math.Pow(10, float64(digits))
	return math.Round(v*p) / p
}
