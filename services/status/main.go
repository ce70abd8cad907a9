// Command status serves gerritflow's live status page: every build set in
// flight and recently finished, its builds and its vote, from NATS KV
// watches only. It serves the page, a JSON API and server-sent events on
// listen.status, beside /metrics, /healthz and /readyz.
package main

import (
	"context"

	"github.com/gerritflow/gerritflow/pkg/bus"
	"github.com/gerritflow/gerritflow/pkg/service"
	"github.com/gerritflow/gerritflow/services/status/internal/status"
)

func main() { service.Main("status", run) }

func run(ctx context.Context, args []string, getenv func(string) string) error {
	s, err := service.Start(ctx, "status", status.Needs, args, getenv)
	if err != nil {
		return err
	}
	defer s.Close(ctx)
	cfg := s.Config
	buckets, err := status.OpenBuckets(ctx, s.JS)
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
	}, s.Tel)
	if err != nil {
		return err
	}
	s.Tel.Handle("/", srv.Handler()) // /metrics /healthz /readyz keep their own routes
	s.Tel.AddReadyCheck(bus.Ready(s.JS, status.Needs))
	return srv.Run(ctx, buckets, s.Tel.Ready) // ready once the watches delivered what KV holds
}
