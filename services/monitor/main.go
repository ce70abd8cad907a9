// Command monitor follows the Jenkins builds the trigger started, from queue
// item to result, and publishes one ci.builds.completed per build.
package main

import (
	"context"

	"github.com/gerritflow/gerritflow/pkg/jenkins"
	"github.com/gerritflow/gerritflow/pkg/service"
	"github.com/gerritflow/gerritflow/pkg/stage"
	"github.com/gerritflow/gerritflow/services/monitor/internal/monitor"
	"github.com/gerritflow/gerritflow/streams"
)

func main() { service.Main("monitor", run) }

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
	if err := m.SharePokes(s.JS.Conn()); err != nil {
		return err
	}
	s.Ready()
	return stage.RunAsync(ctx, s.JS, monitor.Spec.Tuned(cfg.Stages), m, s.Tel)
}
