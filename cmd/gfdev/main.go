// Command gfdev runs the whole gerritflow pipeline on this machine (`make dev`):
// an embedded nats-server, the Kinesis emulator, the Jenkins and Gerrit
// simulators and the five services as separate processes. It plays a short
// scenario and prints each change's way through the stages and the votes
// Gerrit received, then keeps the pipeline running until Ctrl-C.
//
// `gfdev chaos` plays many events while it kills services, restarts NATS
// and makes Jenkins and Gerrit fail, then checks that nothing was lost or
// done twice (`make chaos`); `gfdev soak` runs a steady load and prints every
// service process's memory and goroutines (`make soak`). See
// docs/reliability.md.
//
// `gfdev sim --config FILE` runs only the Jenkins and Gerrit simulators, set
// up from a gerritflow config, with Gerrit's events written into Kinesis:
// the `sims` profile of docker-compose.yml (docs/deploy.md).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/gerritflow/gerritflow/cmd/gfdev/internal/chaos"
	"github.com/gerritflow/gerritflow/cmd/gfdev/internal/sim"
	"github.com/gerritflow/gerritflow/cmd/gfdev/internal/stack"
	"github.com/gerritflow/gerritflow/pkg/config"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		if !errors.Is(err, errBreaches) { // the report already said so, last
			fmt.Fprintln(os.Stderr, "gfdev:", err)
		}
		os.Exit(1)
	}
}

// errBreaches ends a chaos or soak run that broke an invariant: its report,
// printed already, ends with the summary line.
var errBreaches = errors.New("invariants broken")

func run(ctx context.Context, args []string, out io.Writer) (err error) {
	if len(args) > 0 {
		switch args[0] {
		case "chaos":
			return runChaos(ctx, args[1:], out)
		case "soak":
			return runSoak(ctx, args[1:], out)
		case "sim":
			return runSim(ctx, args[1:], out, os.Getenv)
		}
	}
	fs := flag.NewFlagSet("gfdev", flag.ContinueOnError)
	dir := fs.String("dir", ".dev", "state folder (NATS store, config, logs); wiped at start")
	natsPort := fs.Int("nats-port", 4222, "NATS client port (0: any free port)")
	once := fs.Bool("once", false, "stop after the scenario instead of waiting for Ctrl-C")
	scenario := fs.Bool("scenario", true, "play the demo scenario")
	if err := fs.Parse(args); err != nil {
		return err
	}
	s, err := stack.Start(ctx, stack.Options{Dir: *dir, NATSPort: *natsPort, Log: out})
	if err != nil {
		return err
	}
	defer func() {
		fmt.Fprintln(out, "gfdev: stopping (SIGTERM to every service, then the simulators, the emulator and NATS)")
		if serr := s.Stop(); serr != nil && err == nil {
			err = serr
		}
	}()
	fmt.Fprintf(out, "gfdev: pipeline up\n  NATS     %s\n  Kinesis  %s (stream %s)\n  Jenkins  %s\n  Gerrit   %s\n  config   %s\n  logs     %s/logs\n",
		s.NATS.ClientURL(), s.Kinesis.Endpoint(), stack.KinesisStream, s.Jenkins.URL(), s.Gerrit.URL(), s.Config, *dir)
	for _, name := range stack.Services {
		fmt.Fprintf(out, "  %-8s http://%s/metrics  (pid %d)\n", name, s.Listen[name][0], s.Procs(name)[0].PID())
	}
	if url := s.StatusURL(); url != "" {
		fmt.Fprintf(out, "  status   %s  (the live status page)\n", url)
	}
	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	go s.Watch(watchCtx, out)
	if *scenario {
		fmt.Fprintln(out, "\ngfdev: playing the scenario: one change passes, one fails, one fails and passes on recheck")
		if err := s.Demo(ctx, out); err != nil {
			return err
		}
	}
	if *once {
		return nil
	}
	fmt.Fprintln(out, "\ngfdev: the pipeline keeps running; press Ctrl-C to stop")
	<-ctx.Done()
	return nil
}

// runChaos is `gfdev chaos`: the workload under faults, then the invariants.
func runChaos(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("gfdev chaos", flag.ContinueOnError)
	events := fs.Int("events", 2000, "workload steps (each one Kinesis record)")
	seed := fs.Int64("seed", time.Now().UnixNano()%1_000_000, "seed of the workload and the faults (printed: run it again with it)")
	duration := fs.Duration("duration", 0, "how long to play the events and inject faults (default: 8 events a second)")
	settle := fs.Duration("settle", 6*time.Minute, "the most to wait for the pipeline to settle once the faults stop")
	replicas := fs.String("replicas", "2", "replicas per service: N for all, or bridge=2,parser=2,...")
	dir := fs.String("dir", ".dev/chaos", "state folder (NATS store, config, logs); wiped at start")
	noFaults := fs.Bool("no-faults", false, "play the workload without faults (a baseline)")
	kill := fs.Duration("kill-every", chaos.DefaultFaults.Kill, "mean interval between kill -9 of a random service process (0: none)")
	killMid := fs.Duration("kill-trigger-every", chaos.DefaultFaults.KillMidBuild, "mean interval between kills of every trigger replica inside a Jenkins buildWithParameters call (0: none)")
	monitorsDown := fs.Duration("monitors-down-every", chaos.DefaultFaults.MonitorsDown, "mean interval between outages of every monitor replica, 20-40s each (0: none)")
	natsEvery := fs.Duration("nats-every", chaos.DefaultFaults.NATS, "mean interval between nats-server restarts (0: none)")
	jenkinsEvery := fs.Duration("jenkins-every", chaos.DefaultFaults.Jenkins, "mean interval between Jenkins failures, 503 or hanging (0: none)")
	gerritEvery := fs.Duration("gerrit-every", chaos.DefaultFaults.Gerrit, "mean interval between Gerrit 500 spells (0: none)")
	quiet := fs.Bool("quiet", false, "print the report only, not every fault as it happens")
	if err := fs.Parse(args); err != nil {
		return err
	}
	reps, err := parseReplicas(*replicas)
	if err != nil {
		return err
	}
	opts := chaos.Options{
		Events: *events, Seed: *seed, Play: *duration, Settle: *settle, Replicas: reps, Dir: *dir, NoFaults: *noFaults,
		Faults: chaos.Faults{Kill: *kill, KillMidBuild: *killMid, MonitorsDown: *monitorsDown, NATS: *natsEvery, Jenkins: *jenkinsEvery, Gerrit: *gerritEvery},
		Log:    out,
	}
	if opts.Faults == (chaos.Faults{}) {
		opts.NoFaults = true
	}
	if *quiet {
		opts.Log = io.Discard
	}
	fmt.Fprintf(out, "gfdev chaos: seed %d, %d events (state and service logs in %s/logs)\n", *seed, *events, *dir)
	res, err := chaos.Run(ctx, opts)
	if err != nil {
		return err
	}
	chaos.Report(out, res)
	if res.Breaches() > 0 {
		return errBreaches
	}
	return nil
}

// runSoak is `gfdev soak`: steady load, memory and goroutines of every process.
func runSoak(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("gfdev soak", flag.ContinueOnError)
	duration := fs.Duration("duration", 10*time.Minute, "how long to keep the load on")
	rate := fs.Float64("rate", 5, "workload steps per second")
	every := fs.Duration("every", 30*time.Second, "sampling interval of /metrics")
	seed := fs.Int64("seed", time.Now().UnixNano()%1_000_000, "seed of the workload")
	replicas := fs.String("replicas", "1", "replicas per service: N for all, or bridge=1,parser=2,...")
	dir := fs.String("dir", ".dev/soak", "state folder; wiped at start")
	verbose := fs.Bool("v", false, "print the stack's own messages too")
	if err := fs.Parse(args); err != nil {
		return err
	}
	reps, err := parseReplicas(*replicas)
	if err != nil {
		return err
	}
	opts := chaos.SoakOptions{Duration: *duration, Rate: *rate, Every: *every, Seed: *seed, Replicas: reps, Dir: *dir, Out: out}
	if *verbose {
		opts.Log = os.Stderr
	}
	res, err := chaos.Soak(ctx, opts)
	if err != nil {
		return err
	}
	if res.Breaches() > 0 {
		return errBreaches
	}
	return nil
}

// runSim is `gfdev sim`: the simulators as a program of their own.
func runSim(ctx context.Context, args []string, out io.Writer, getenv func(string) string) error {
	fs := flag.NewFlagSet("gfdev sim", flag.ContinueOnError)
	path := fs.String("config", getenv("GERRITFLOW_CONFIG"), "the gerritflow config (jenkins, gerrit, kinesis and jobs sections)")
	jenkinsListen := fs.String("jenkins-listen", "", "Jenkins address (default: host and port of jenkins.url)")
	gerritListen := fs.String("gerrit-listen", "", "Gerrit address (default: host and port of gerrit.url)")
	notify := fs.String("notify", "", "URL for the Jenkins Notification plugin's pushes (the monitor's /jenkins/notify); empty: none")
	duration := fs.Duration("build-duration", 5*time.Second, "how long each build runs")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("gfdev sim: unexpected argument %q", fs.Arg(0))
	}
	if *path == "" {
		return errors.New("gfdev sim: pass --config PATH or set GERRITFLOW_CONFIG")
	}
	cfg, err := config.LoadFile(*path)
	if err != nil {
		return err
	}
	sims, err := sim.Start(ctx, sim.Options{Config: cfg, Getenv: getenv, JenkinsListen: *jenkinsListen, GerritListen: *gerritListen,
		NotifyURL: *notify, BuildDuration: *duration, Log: out})
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "gfdev sim: Jenkins %s, Gerrit %s; Gerrit's events go to Kinesis stream %s\n", sims.JenkinsURL(), sims.GerritURL(), cfg.Kinesis.Stream)
	fmt.Fprintf(out, "gfdev sim: create a change with\n  curl -X POST %s/sim/changes -d '{\"project\": \"platform/core\", \"subject\": \"[fail] Try me\"}'\n", sims.GerritURL())
	<-ctx.Done()
	fmt.Fprintf(out, "gfdev sim: stopping (%d events written to Kinesis, %d given up)\n", sims.Sink.Puts(), sims.Sink.Failures())
	return sims.Close()
}

// parseReplicas reads "2" (every service) or "bridge=2,parser=3".
func parseReplicas(s string) (map[string]int, error) {
	if n, err := strconv.Atoi(s); err == nil {
		if n < 1 {
			return nil, fmt.Errorf("--replicas %d: want at least 1", n)
		}
		return map[string]int{"bridge": n, "parser": n, "trigger": n, "monitor": n, "voter": n}, nil
	}
	out := map[string]int{}
	for _, kv := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(kv, "=")
		n, err := strconv.Atoi(v)
		if !ok || err != nil || n < 1 {
			return nil, fmt.Errorf("--replicas %q: want N or service=N,...", s)
		}
		out[strings.TrimSpace(k)] = n
	}
	return out, nil
}
