// Command status serves gerritflow's live status page: every build set in
// flight and recently finished, its builds and its vote, from NATS KV
// watches only. It serves the page, a JSON API and server-sent events on
// listen.status, beside /metrics, /healthz and /readyz.
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
	"github.com/gerritflow/gerritflow/services/status/internal/status"
	"github.com/gerritflow/gerritflow/streams"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv); err != nil {
		fmt.Fprintln(os.Stderr, "status:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, getenv func(string) string) error {
	cfg, err := config.Load(args, getenv)
	if err != nil {
		return err
	}
	tel, err := telemetry.Start(ctx, "status", cfg.Otel, cfg.Listen.Status)
	if err != nil {
		return err
	}
	defer tel.Shutdown(context.WithoutCancel(ctx))
	js, err := bus.Connect(ctx, cfg.NATS, "status")
	if err != nil {
		return err
	}
	defer js.Conn().Close()
	if err := streams.Check(ctx, js, status.Needs); err != nil {
		return err
	}
	buckets, err := status.OpenBuckets(ctx, js)
	if err != nil {
		return err
	}
	gerritWeb := cfg.Status.GerritWebURL
	if gerritWeb == "" {
		gerritWeb = cfg.Gerrit.URL
	}
	srv, err := status.New(status.Settings{
		Links:  status.Links{GerritWeb: gerritWeb, Jaeger: cfg.Status.JaegerURL},
		Recent: cfg.Status.Recent.D(), MaxBuildSets: cfg.Status.MaxBuildSets,
	}, tel)
	if err != nil {
		return err
	}
	tel.Handle("/", srv.Handler()) // /metrics /healthz /readyz keep their own routes
	tel.AddReadyCheck(bus.Healthy(js))
	return srv.Run(ctx, buckets, tel.Ready) // ready once the watches delivered what KV holds
}
