// Command trigger decides which Jenkins jobs each Gerrit event asks for and
// starts each build exactly once.
package main

import (
	"context"
	"slices"

	"github.com/gerritflow/gerritflow/pkg/config"
	"github.com/gerritflow/gerritflow/pkg/gerrit"
	"github.com/gerritflow/gerritflow/pkg/jenkins"
	"github.com/gerritflow/gerritflow/pkg/service"
	"github.com/gerritflow/gerritflow/pkg/stage"
	"github.com/gerritflow/gerritflow/services/trigger/internal/trigger"
	"github.com/gerritflow/gerritflow/streams"
)

func main() { service.Main("trigger", run) }

func run(ctx context.Context, args []string, getenv func(string) string) error {
	s, err := service.Start(ctx, "trigger", trigger.Needs, args, getenv)
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
	if cfg.Trigger.CheckJobs == nil || *cfg.Trigger.CheckJobs {
		if err := trigger.CheckJobs(ctx, jk, cfg.Jobs); err != nil {
			return err
		}
	}
	files, err := gerritFiles(ctx, s, getenv)
	if err != nil {
		return err
	}
	kv, err := s.KeyValue(ctx, streams.BucketChanges, streams.BucketBuildSets, streams.BucketBuilds)
	if err != nil {
		return err
	}
	h, err := trigger.New(cfg, jk, files, trigger.Buckets{Changes: kv[0], BuildSets: kv[1], Builds: kv[2]}, s.Tel)
	if err != nil {
		return err
	}
	s.Ready()
	return stage.Run(ctx, s.JS, trigger.Spec.Tuned(cfg.Stages), h, s.Tel)
}

// gerritFiles is the Gerrit client for jobs with file patterns (nil when no
// job has any: then the trigger needs no Gerrit credentials).
func gerritFiles(ctx context.Context, s *service.Service, getenv func(string) string) (trigger.Files, error) {
	cfg := s.Config
	if !slices.ContainsFunc(cfg.Jobs, func(j config.Job) bool { return len(j.Files) > 0 }) {
		return nil, nil
	}
	password, err := cfg.GerritPassword(getenv)
	if err != nil {
		return nil, err
	}
	return gerrit.New(ctx, cfg.Gerrit.URL, cfg.Gerrit.User, password, s.Tel.HTTPClient("gerrit", cfg.Gerrit.Timeout.D()))
}
