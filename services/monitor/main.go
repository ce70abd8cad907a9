// Command monitor follows the Jenkins builds the trigger started, from queue
// item to result, and publishes one ci.builds.completed per build.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/gerritflow/gerritflow/pkg/jenkins"
	"github.com/gerritflow/gerritflow/pkg/service"
	"github.com/gerritflow/gerritflow/pkg/stage"
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
	s, err := service.Start(ctx, "monitor", monitor.Needs, args, getenv)
	if err != nil {
		return err
	}
	defer s.Close(ctx)
	cfg := s.Config
	token, err := cfg.JenkinsToken(getenv)
	if err != nil {
		return err
	}
	jk, err := jenkins.New(ctx, cfg.Jenkins.URL, cfg.Jenkins.User, token.Reveal(), s.Tel.HTTPClient("jenkins", cfg.Jenkins.Timeout.D()))
	if err != nil {
		return err
	}
	kv, err := s.KeyValue(ctx, streams.BucketBuilds)
	if err != nil {
		return err
	}
	m, err := monitor.New(cfg, jk, kv[0], s.Tel) // validates the monitor settings, naming the key
	if err != nil {
		return err
	}
	s.Ready()
	return stage.RunAsync(ctx, s.JS, monitor.Spec.Tuned(cfg.Stages), m, s.Tel)
}
