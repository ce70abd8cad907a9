// Command bridge republishes Gerrit's stream events from the shards of a
// Kinesis stream onto gerrit.raw, one message per record, checkpointing in
// NATS KV what was PubAcked and sharing the shards among replicas by leases.
package main

import (
	"context"

	"github.com/gerritflow/gerritflow/pkg/kinesislocal"
	"github.com/gerritflow/gerritflow/pkg/service"
	"github.com/gerritflow/gerritflow/services/bridge/internal/bridge"
)

func main() { service.Main("bridge", run) }

func run(ctx context.Context, args []string, getenv func(string) string) error {
	s, err := service.Start(ctx, "bridge", bridge.Needs, args, getenv)
	if err != nil {
		return err
	}
	defer s.Close(ctx)
	kc, err := kinesislocal.ClientFor(ctx, s.Config.Kinesis, getenv)
	if err != nil {
		return err
	}
	b, err := bridge.New(ctx, s.JS, kc, bridge.OptionsFrom(s.Config.Kinesis), s.Tel)
	if err != nil {
		return err
	}
	s.Ready()
	return b.Run(ctx) // on cancel: stop reading, last PubAcks, last checkpoints, release
}
