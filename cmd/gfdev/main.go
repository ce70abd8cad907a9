// Command gfdev runs the whole gerritflow pipeline on this machine (`make dev`):
// an embedded nats-server, the Kinesis emulator, the Jenkins and Gerrit
// simulators and the five services as separate processes. It plays a short
// scenario and prints each change's way through the stages and the votes
// Gerrit received, then keeps the pipeline running until Ctrl-C.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/gerritflow/gerritflow/cmd/gfdev/internal/stack"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "gfdev:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, out io.Writer) (err error) {
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
