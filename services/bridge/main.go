// Command bridge republishes Gerrit's stream events from the shards of a
// Kinesis stream onto gerrit.raw, one message per record, checkpointing in
// NATS KV what was PubAcked and sharing the shards among replicas by leases.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/gerritflow/gerritflow/pkg/bus"
	"github.com/gerritflow/gerritflow/pkg/config"
	"github.com/gerritflow/gerritflow/pkg/telemetry"
	"github.com/gerritflow/gerritflow/services/bridge/internal/bridge"
	"github.com/gerritflow/gerritflow/streams"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv); err != nil {
		fmt.Fprintln(os.Stderr, "bridge:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, getenv func(string) string) error {
	cfg, err := config.Load(args, getenv)
	if err != nil {
		return err
	}
	tel, err := telemetry.Start(ctx, "bridge", cfg.Otel, cfg.Listen.Bridge)
	if err != nil {
		return err
	}
	defer tel.Shutdown(context.WithoutCancel(ctx))
	js, err := bus.Connect(ctx, cfg.NATS, "bridge")
	if err != nil {
		return err
	}
	defer js.Conn().Close()
	if err := streams.Check(ctx, js, bridge.Needs); err != nil {
		return err
	}
	kc, err := bridge.NewKinesisClient(ctx, cfg.Kinesis, getenv)
	if err != nil {
		return err
	}
	b, err := bridge.New(ctx, js, kc, bridge.OptionsFrom(cfg.Kinesis), tel)
	if err != nil {
		return err
	}
	tel.AddReadyCheck(bus.Ready(js, bridge.Needs)) // NATS connected, streams and consumers present
	tel.Ready()
	return b.Run(ctx) // on cancel: stop reading, last PubAcks, last checkpoints, release
}
