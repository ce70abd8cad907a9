// Command voter posts one vote per build set on the exact patch set that was
// built, once every job of the set has completed.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/gerritflow/gerritflow/pkg/bus"
	"github.com/gerritflow/gerritflow/pkg/config"
	"github.com/gerritflow/gerritflow/pkg/gerrit"
	"github.com/gerritflow/gerritflow/pkg/stage"
	"github.com/gerritflow/gerritflow/pkg/telemetry"
	"github.com/gerritflow/gerritflow/services/voter/internal/voter"
	"github.com/gerritflow/gerritflow/streams"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv); err != nil {
		fmt.Fprintln(os.Stderr, "voter:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, getenv func(string) string) error {
	cfg, err := config.Load(args, getenv)
	if err != nil {
		return err
	}
	password, err := cfg.GerritPassword(getenv) // before any connection: a missing secret fails fast
	if err != nil {
		return err
	}
	tel, err := telemetry.Start(ctx, "voter", cfg.Otel, cfg.Listen.Voter)
	if err != nil {
		return err
	}
	defer tel.Shutdown(context.WithoutCancel(ctx))
	js, err := bus.Connect(ctx, cfg.NATS, "voter")
	if err != nil {
		return err
	}
	defer js.Conn().Close()
	if err := streams.Check(ctx, js, voter.Needs); err != nil {
		return err
	}
	gc, err := gerrit.New(ctx, cfg.Gerrit.URL, cfg.Gerrit.User, password, tel.HTTPClient("gerrit", cfg.Gerrit.Timeout.D()))
	if err != nil {
		return err
	}
	kv := map[string]jetstream.KeyValue{}
	for _, b := range voter.Needs.Buckets {
		if kv[b], err = js.KeyValue(ctx, b); err != nil {
			return fmt.Errorf("open kv %s: %w", b, err)
		}
	}
	h := voter.New(cfg.Vote, gc, kv[streams.BucketBuildSets], kv[streams.BucketBuilds], kv[streams.BucketVotes], tel)
	tel.AddReadyCheck(bus.Ready(js, voter.Needs)) // NATS connected, streams and consumers present
	tel.Ready()
	// Two loops, ci.builds.completed and ci.votes.replay: both drain on
	// SIGTERM, and either failing stops the other.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make(chan error, 2)
	for _, loop := range []func() error{
		func() error { return stage.Run(ctx, js, voter.Spec.Tuned(cfg.Stages), h, tel) },
		func() error {
			return stage.Run(ctx, js, voter.ReplaySpec.Tuned(cfg.Stages), h.Replays(), tel)
		},
	} {
		go func() { err := loop(); cancel(); errs <- err }()
	}
	return errors.Join(<-errs, <-errs)
}
