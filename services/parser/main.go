// Command parser turns raw Kinesis records of Gerrit's stream events into
// normalized events, one subject per event type.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/gerritflow/gerritflow/pkg/bus"
	"github.com/gerritflow/gerritflow/pkg/config"
	"github.com/gerritflow/gerritflow/pkg/stage"
	"github.com/gerritflow/gerritflow/pkg/telemetry"
	"github.com/gerritflow/gerritflow/services/parser/internal/parser"
	"github.com/gerritflow/gerritflow/streams"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv); err != nil {
		fmt.Fprintln(os.Stderr, "parser:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, getenv func(string) string) error {
	cfg, err := config.Load(args, getenv)
	if err != nil {
		return err
	}
	tel, err := telemetry.Start(ctx, "parser", cfg.Otel, cfg.Listen.Parser)
	if err != nil {
		return err
	}
	defer tel.Shutdown(context.WithoutCancel(ctx))
	js, err := bus.Connect(ctx, cfg.NATS, "parser")
	if err != nil {
		return err
	}
	defer js.Conn().Close()
	if err := streams.Check(ctx, js, parser.Needs); err != nil {
		return err
	}
	tel.AddReadyCheck(bus.Ready(js, parser.Needs)) // NATS connected, streams and consumers present
	tel.Ready()
	return stage.Run(ctx, js, parser.Spec.Tuned(cfg.Stages), parser.New(cfg.Parser.MaxEventBytes, tel), tel)
}
