// Package service does what every gerritflow service does before its own
// wiring: load the config (--config or GERRITFLOW_CONFIG), start telemetry
// (slog JSON, OTel, /metrics /healthz /readyz on listen.<name>), connect to
// NATS, and check that what the service binds to was provisioned.
package service

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/gerritflow/gerritflow/pkg/bus"
	"github.com/gerritflow/gerritflow/pkg/config"
	"github.com/gerritflow/gerritflow/pkg/telemetry"
	"github.com/gerritflow/gerritflow/streams"
)

// Service is a started service's config, telemetry and NATS connection.
type Service struct {
	Config *config.Config
	Tel    *telemetry.Telemetry
	JS     jetstream.JetStream
	need   streams.Need
}

// Start loads the config and connects. need names the streams, consumers and
// buckets the service binds to; a missing one stops it here, named.
func Start(ctx context.Context, name string, need streams.Need, args []string, getenv func(string) string) (*Service, error) {
	cfg, err := config.Load(args, getenv)
	if err != nil {
		return nil, err
	}
	tel, err := telemetry.Start(ctx, name, cfg.Otel, cfg.Listen.For(name))
	if err != nil {
		return nil, err
	}
	js, err := bus.Connect(ctx, cfg.NATS, name)
	if err != nil {
		tel.Shutdown(context.WithoutCancel(ctx))
		return nil, err
	}
	bus.LogEvents(js.Conn(), tel.Logger)
	if err := streams.Check(ctx, js, need); err != nil {
		js.Conn().Close()
		tel.Shutdown(context.WithoutCancel(ctx))
		return nil, err
	}
	return &Service{Config: cfg, Tel: tel, JS: js, need: need}, nil
}

// KeyValue opens the named buckets, in order.
func (s *Service) KeyValue(ctx context.Context, buckets ...string) ([]jetstream.KeyValue, error) {
	kvs := make([]jetstream.KeyValue, len(buckets))
	for i, b := range buckets {
		kv, err := s.JS.KeyValue(ctx, b)
		if err != nil {
			return nil, errors.Join(errors.New("open kv "+b), err)
		}
		kvs[i] = kv
	}
	return kvs, nil
}

// Ready marks the service ready: /readyz answers 200 while NATS is connected
// and what it binds to exists.
func (s *Service) Ready() {
	s.Tel.AddReadyCheck(bus.Ready(s.JS, s.need))
	s.Tel.Ready()
}

// Close closes the NATS connection and flushes telemetry.
func (s *Service) Close(ctx context.Context) {
	s.JS.Conn().Close()
	s.Tel.Shutdown(context.WithoutCancel(ctx))
}

// Main runs a service's run function with the process's arguments and
// environment until SIGINT or SIGTERM (run then drains), and exits non-zero
// naming the service when run fails. Keeping main to this call keeps run
// testable: tests call it with their own context, args and getenv.
//
// `<service> healthcheck ...` runs Healthcheck instead.
func Main(name string, run func(ctx context.Context, args []string, getenv func(string) string) error) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	var err error
	if len(os.Args) > 1 && os.Args[1] == "healthcheck" {
		err = Healthcheck(ctx, name, os.Args[2:], os.Getenv)
	} else {
		err = run(ctx, os.Args[1:], os.Getenv)
	}
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, name+":", err)
		os.Exit(1)
	}
}
