// Command gfctl is the operator's CLI. It talks to NATS only: provision the
// streams, consumers and buckets, check a config file, show what gerritflow
// knows of a change and which builds are running, list and redrive the DLQ,
// replay a subject so that a stage redoes its work, and start a build set by
// hand. Every command takes --json for scripts; its human output is aligned
// tables.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/gerritflow/gerritflow/pkg/bus"
	"github.com/gerritflow/gerritflow/pkg/config"
	"github.com/gerritflow/gerritflow/pkg/telemetry"
	"github.com/gerritflow/gerritflow/streams"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := newRoot(os.Getenv, os.Stdout).ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "gfctl:", err)
		os.Exit(1)
	}
}

// app holds what every command shares: the global flags and the outside world.
type app struct {
	getenv   func(string) string
	now      func() time.Time
	exporter sdktrace.SpanExporter // tests: receives the spans gfctl makes

	cfgPath, natsURL, otelEndpoint string
	json                           bool
}

func newRoot(getenv func(string) string, out io.Writer) *cobra.Command {
	return (&app{getenv: getenv, now: time.Now}).root(out)
}

func (a *app) root(out io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:           "gfctl",
		Short:         "Operate gerritflow: provision, inspect changes and builds, drain the DLQ, replay",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(out)
	pf := root.PersistentFlags()
	pf.StringVar(&a.cfgPath, "config", a.getenv("GERRITFLOW_CONFIG"), "gerritflow config (for nats and otel)")
	pf.StringVar(&a.natsURL, "nats", "", "NATS URL (overrides the config's nats.url)")
	pf.StringVar(&a.otelEndpoint, "otel-endpoint", "", "export gfctl's own spans (replay, redrive) by OTLP to this endpoint (overrides otel.endpoint)")
	pf.BoolVar(&a.json, "json", false, "print JSON instead of tables")

	cfgCmd := &cobra.Command{Use: "config", Short: "Config file tools"}
	cfgCmd.AddCommand(a.checkCmd())
	dlq := &cobra.Command{Use: "dlq", Short: "Dead-letter queue: list, show, redrive"}
	dlq.AddCommand(a.dlqListCmd(), a.dlqShowCmd(), a.dlqRedriveCmd())
	root.AddCommand(a.provisionCmd(), cfgCmd, a.statusCmd(), a.buildsCmd(), dlq, a.replayCmd(), a.triggerCmd())
	return root
}

// config returns the NATS and OTel settings: the config file's, then the flags'.
func (a *app) config() (config.NATS, config.Otel, error) {
	natsCfg, otel := config.NATS{URL: "nats://127.0.0.1:4222"}, config.Otel{}
	if a.cfgPath != "" {
		c, err := config.LoadFile(a.cfgPath)
		if err != nil {
			return natsCfg, otel, err
		}
		natsCfg, otel = c.NATS, c.Otel
	}
	if a.natsURL != "" {
		natsCfg.URL = a.natsURL
	}
	if a.otelEndpoint != "" {
		otel.Endpoint = a.otelEndpoint
	}
	return natsCfg, otel, nil
}

// session is one connection to NATS and gfctl's own tracer.
type session struct {
	js  jetstream.JetStream
	tel *telemetry.Telemetry
}

func (a *app) connect(ctx context.Context) (*session, error) {
	natsCfg, otel, err := a.config()
	if err != nil {
		return nil, err
	}
	opts := []telemetry.Option{telemetry.WithLogOutput(io.Discard)}
	if a.exporter != nil {
		opts = append(opts, telemetry.WithSpanExporter(a.exporter))
	}
	tel, err := telemetry.Start(ctx, "gfctl", otel, "", opts...) // spans only leave with an endpoint
	if err != nil {
		return nil, err
	}
	cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	js, err := bus.Connect(cctx, natsCfg, "gfctl")
	if err != nil {
		_ = tel.Shutdown(context.WithoutCancel(ctx))
		return nil, err
	}
	return &session{js: js, tel: tel}, nil
}

// Close flushes the spans, then closes the connection.
func (s *session) Close() {
	_ = s.tel.Shutdown(context.Background())
	s.js.Conn().Close()
}

// kv opens a bucket, naming it on error.
func (s *session) kv(ctx context.Context, bucket string) (jetstream.KeyValue, error) {
	kv, err := s.js.KeyValue(ctx, bucket)
	if err != nil {
		return nil, fmt.Errorf("open kv %s (run gfctl provision?): %w", bucket, err)
	}
	return kv, nil
}

func (a *app) provisionCmd() *cobra.Command {
	var replicas int
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "provision",
		Short: "Create or update every stream, durable consumer and KV bucket (idempotent; needs admin rights)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			s, err := a.connect(ctx)
			if err != nil {
				return err
			}
			defer s.Close()
			if err := streams.ProvisionReplicas(ctx, s.js, replicas); err != nil {
				return err
			}
			set, err := streams.Load()
			if err != nil {
				return err
			}
			res := struct {
				Streams   int `json:"streams"`
				Consumers int `json:"consumers"`
				Buckets   int `json:"buckets"`
			}{len(set.Streams), len(set.Consumers), len(set.Buckets)}
			if a.json {
				return writeJSON(cmd.OutOrStdout(), res)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "provisioned %d streams, %d consumers, %d KV buckets\n", res.Streams, res.Consumers, res.Buckets)
			return nil
		},
	}
	cmd.Flags().IntVar(&replicas, "replicas", 0, "copies of every stream and bucket (3 in a cluster; 0: as defined in streams/, 1)")
	cmd.Flags().DurationVar(&timeout, "timeout", 3*time.Minute, "give up after this long (each request is retried while the cluster answers \"try later\")")
	return cmd
}

func (a *app) checkCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "check FILE...",
		Short: "Validate config files as the services do at start (unknown keys, bad values)",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			type result struct {
				File  string `json:"file"`
				OK    bool   `json:"ok"`
				Error string `json:"error,omitempty"`
			}
			var results []result
			failed := 0
			for _, f := range args {
				r := result{File: f, OK: true}
				if _, err := config.LoadFile(f); err != nil {
					r.OK, r.Error = false, err.Error()
					failed++
				}
				results = append(results, r)
			}
			if a.json {
				if err := writeJSON(cmd.OutOrStdout(), results); err != nil {
					return err
				}
			} else {
				for _, r := range results {
					if r.OK {
						fmt.Fprintf(cmd.OutOrStdout(), "%s: ok\n", r.File)
					} else {
						fmt.Fprintln(cmd.OutOrStdout(), r.Error)
					}
				}
			}
			if failed > 0 {
				return fmt.Errorf("%d of %d config files are invalid", failed, len(args))
			}
			return nil
		},
	}
}
