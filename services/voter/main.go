// Command voter posts one vote per build set on the exact patch set that was
// built, once every job of the set has completed.
package main

import (
	"context"

	"github.com/gerritflow/gerritflow/pkg/gerrit"
	"github.com/gerritflow/gerritflow/pkg/service"
	"github.com/gerritflow/gerritflow/pkg/stage"
	"github.com/gerritflow/gerritflow/services/voter/internal/voter"
	"github.com/gerritflow/gerritflow/streams"
)

func main() { service.Main("voter", run) }

func run(ctx context.Context, args []string, getenv func(string) string) error {
	s, err := service.Start(ctx, "voter", voter.Needs, args, getenv)
	if err != nil {
		return err
	}
	defer s.Close(ctx)
	cfg := s.Config
	password, err := cfg.GerritPassword(getenv)
	if err != nil {
		return err
	}
	gc, err := gerrit.New(ctx, cfg.Gerrit.URL, cfg.Gerrit.User, password, s.Tel.HTTPClient("gerrit", cfg.Gerrit.Timeout.D()))
	if err != nil {
		return err
	}
	kv, err := s.KeyValue(ctx, streams.BucketBuildSets, streams.BucketBuilds, streams.BucketVotes)
	if err != nil {
		return err
	}
	h := voter.New(cfg.Vote, gc, kv[0], kv[1], kv[2], s.Tel)
	s.Ready()
	return stage.RunAll(ctx, s.JS, s.Tel, // ci.builds.completed, and votes replayed on ci.votes.replay
		stage.Loop{Spec: voter.Spec.Tuned(cfg.Stages), Handler: h},
		stage.Loop{Spec: voter.ReplaySpec.Tuned(cfg.Stages), Handler: h.Replays()})
}
