// Command monitor follows the Jenkins builds the trigger started, from queue
// item to result, and publishes one ci.builds.completed per build.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/gerritflow/gerritflow/pkg/bus"
	"github.com/gerritflow/gerritflow/pkg/config"
	"github.com/gerritflow/gerritflow/pkg/jenkins"
	"github.com/gerritflow/gerritflow/pkg/stage"
	"github.com/gerritflow/gerritflow/pkg/telemetry"
	"github.com/gerritflow/gerritflow/services/monitor/internal/monitor"
	"github.com/gerritflow/gerritflow/streams"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv); err != nil {
		fmt.Fprintln(os.Stderr, "monitor:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, getenv func(string) string) error {
	cfg, err := config.Load(args, getenv)
	if err != nil {
		return err
	}
	if _, err := monitor.SettingsFrom(cfg); err != nil { // before connecting to anything
		return err
	}
	token, err := cfg.JenkinsToken(getenv)
	if err != nil {
		return err
	}
	tel, err := telemetry.Start(ctx, "monitor", cfg.Otel, cfg.Listen.Monitor)
	if err != nil {
		return err
	}
	defer tel.Shutdown(context.WithoutCancel(ctx))
	js, err := bus.Connect(ctx, cfg.NATS, "monitor")
	if err != nil {
		return err
	}
	defer js.Conn().Close()
	if err := streams.Check(ctx, js, monitor.Needs); err != nil {
		return err
	}
	jk, err := jenkins.New(ctx, cfg.Jenkins.URL, cfg.Jenkins.User, token.Reveal(), tel.HTTPClient("jenkins", cfg.Jenkins.Timeout.D()))
	if err != nil {
		return err
	}
	builds, err := js.KeyValue(ctx, streams.BucketBuilds)
	if err != nil {
		return fmt.Errorf("open kv %s: %w", streams.BucketBuilds, err)
	}
	m, err := monitor.New(cfg, jk, builds, tel)
	if err != nil {
		return err
	}
	tel.AddReadyCheck(bus.Ready(js, monitor.Needs)) // NATS connected, streams and consumers present
	tel.Ready()
	return stage.RunAsync(ctx, js, monitor.Spec.Tuned(cfg.Stages), m, tel)
}
