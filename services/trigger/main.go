// Command trigger decides which Jenkins jobs each Gerrit event asks for and
// starts each build exactly once.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"slices"
	"syscall"

	"github.com/gerritflow/gerritflow/pkg/bus"
	"github.com/gerritflow/gerritflow/pkg/config"
	"github.com/gerritflow/gerritflow/pkg/gerrit"
	"github.com/gerritflow/gerritflow/pkg/jenkins"
	"github.com/gerritflow/gerritflow/pkg/stage"
	"github.com/gerritflow/gerritflow/pkg/telemetry"
	"github.com/gerritflow/gerritflow/services/trigger/internal/trigger"
	"github.com/gerritflow/gerritflow/streams"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv); err != nil {
		fmt.Fprintln(os.Stderr, "trigger:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, getenv func(string) string) error {
	cfg, err := config.Load(args, getenv)
	if err != nil {
		return err
	}
	token, err := cfg.JenkinsToken(getenv)
	if err != nil {
		return err
	}
	tel, err := telemetry.Start(ctx, "trigger", cfg.Otel, cfg.Listen.Trigger)
	if err != nil {
		return err
	}
	defer tel.Shutdown(context.WithoutCancel(ctx))
	js, err := bus.Connect(ctx, cfg.NATS, "trigger")
	if err != nil {
		return err
	}
	defer js.Conn().Close()
	if err := streams.Check(ctx, js, trigger.Needs); err != nil {
		return err
	}
	jk, err := jenkins.New(ctx, cfg.Jenkins.URL, cfg.Jenkins.User, token.Reveal(), tel.HTTPClient("jenkins", cfg.Jenkins.Timeout.D()))
	if err != nil {
		return err
	}
	if cfg.Trigger.CheckJobs == nil || *cfg.Trigger.CheckJobs {
		if err := trigger.CheckJobs(ctx, jk, cfg.Jobs); err != nil {
			return err
		}
	}
	files, err := gerritFiles(ctx, cfg, getenv, tel)
	if err != nil {
		return err
	}
	b, err := trigger.OpenBuckets(ctx, js)
	if err != nil {
		return err
	}
	h, err := trigger.New(cfg, jk, files, b, tel)
	if err != nil {
		return err
	}
	tel.AddReadyCheck(bus.Ready(js, trigger.Needs)) // NATS connected, streams and consumers present
	tel.Ready()
	return stage.Run(ctx, js, trigger.Spec.Tuned(cfg.Stages), h, tel)
}

// gerritFiles is the Gerrit client for jobs with file patterns (nil when no
// job has any: then the trigger needs no Gerrit credentials).
func gerritFiles(ctx context.Context, cfg *config.Config, getenv func(string) string, tel *telemetry.Telemetry) (trigger.Files, error) {
	if !slices.ContainsFunc(cfg.Jobs, func(j config.Job) bool { return len(j.Files) > 0 }) {
		return nil, nil
	}
	password, err := cfg.GerritPassword(getenv)
	if err != nil {
		return nil, err
	}
	return gerrit.New(ctx, cfg.Gerrit.URL, cfg.Gerrit.User, password, tel.HTTPClient("gerrit", cfg.Gerrit.Timeout.D()))
}
