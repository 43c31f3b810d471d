package main

import (
	"log/slog"

	"github.com/spf13/cobra"

	"github.com/meshfed/meshfed/eastwest/demo"
)

func init() { register(newDemoCmd) }

func newDemoCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Self-contained demonstrations that run on one machine and explain what they do",
	}
	var verbose bool
	gw := &cobra.Command{
		Use:   "gateway",
		Short: "Run a TLS backend, the east-west gateway and a client calling through it by SNI",
		Long: `Starts, on 127.0.0.1 with free ports: a TLS echo workload with its own certificate,
the east-west gateway routing an exports file, and a client that calls through the gateway
by SNI. Then it shows what the gateway refuses, its health name, a live reload of the
exports file and a drain, printing each step in plain words. Exits 0 when every step
behaved as promised.

Examples:
  meshfed demo gateway
  meshfed demo gateway --verbose     # also print the gateway's own log`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var log *slog.Logger
			if verbose {
				log = slog.Default().With("component", "gateway")
			}
			return demo.Run(cmd.Context(), cmd.OutOrStdout(), log)
		},
	}
	gw.Flags().BoolVar(&verbose, "verbose", false, "print the gateway's log too")
	cmd.AddCommand(gw)
	return cmd
}
