// Command parser turns raw Kinesis records of Gerrit's stream events into
// normalized events, one subject per event type.
package main

import (
	"context"

	"github.com/gerritflow/gerritflow/pkg/service"
	"github.com/gerritflow/gerritflow/pkg/stage"
	"github.com/gerritflow/gerritflow/services/parser/internal/parser"
)

func main() { service.Main("parser", run) }

func run(ctx context.Context, args []string, getenv func(string) string) error {
	s, err := service.Start(ctx, "parser", parser.Needs, args, getenv)
	if err != nil {
		return err
	}
	defer s.Close(ctx)
	s.Ready()
	return stage.Run(ctx, s.JS, parser.Spec.Tuned(s.Config.Stages), parser.New(s.Config.Parser.MaxEventBytes, s.Tel), s.Tel)
}
