// Command gfctl is the operator's CLI. It talks to NATS only: provision the
// streams, consumers and buckets, check a config file, and (with later
// commands) inspect changes, replay subjects and drain the DLQ.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/gerritflow/gerritflow/pkg/bus"
	"github.com/gerritflow/gerritflow/pkg/config"
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

func newRoot(getenv func(string) string, out io.Writer) *cobra.Command {
	var cfgPath, natsURL string
	root := &cobra.Command{
		Use:           "gfctl",
		Short:         "Operate gerritflow: provision, check config, inspect, replay",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(out)
	root.PersistentFlags().StringVar(&cfgPath, "config", getenv("GERRITFLOW_CONFIG"), "gerritflow config (for nats.url and credentials)")
	root.PersistentFlags().StringVar(&natsURL, "nats", "", "NATS URL (overrides the config's nats.url)")
	connect := func(ctx context.Context) (natsCfg config.NATS, err error) {
		natsCfg = config.NATS{URL: "nats://127.0.0.1:4222"}
		if cfgPath != "" {
			c, err := config.LoadFile(cfgPath)
			if err != nil {
				return natsCfg, err
			}
			natsCfg = c.NATS
		}
		if natsURL != "" {
			natsCfg.URL = natsURL
		}
		return natsCfg, nil
	}

	provision := &cobra.Command{
		Use:   "provision",
		Short: "Create or update every stream, durable consumer and KV bucket (idempotent; needs admin rights)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), time.Minute)
			defer cancel()
			nc, err := connect(ctx)
			if err != nil {
				return err
			}
			js, err := bus.Connect(ctx, nc, "gfctl")
			if err != nil {
				return err
			}
			defer js.Conn().Close()
			if err := streams.Provision(ctx, js); err != nil {
				return err
			}
			set, err := streams.Load()
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "provisioned %d streams, %d consumers, %d KV buckets\n", len(set.Streams), len(set.Consumers), len(set.Buckets))
			return nil
		},
	}
	check := &cobra.Command{
		Use:   "check FILE...",
		Short: "Validate config files as the services do at start (unknown keys, bad values)",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			failed := 0
			for _, f := range args {
				if _, err := config.LoadFile(f); err != nil {
					fmt.Fprintln(cmd.OutOrStdout(), err)
					failed++
					continue
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s: ok\n", f)
			}
			if failed > 0 {
				return fmt.Errorf("%d of %d config files are invalid", failed, len(args))
			}
			return nil
		},
	}
	cfgCmd := &cobra.Command{Use: "config", Short: "Config file tools"}
	cfgCmd.AddCommand(check)
	root.AddCommand(provision, cfgCmd)
	return root
}
