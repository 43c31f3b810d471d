package main

import (
	"fmt"
	"io"
	"log/slog"
	"sort"
	"strings"

	"github.com/spf13/cobra"
)

// subcommands are added by each command's file in an init func, so that adding a
// command never means editing a shared list.
var subcommands []func() *cobra.Command

func register(f func() *cobra.Command) { subcommands = append(subcommands, f) }

// Version is set at build time with -ldflags "-X main.Version=...".
var Version = "dev"

type logFlags struct {
	level  string
	format string
}

var globalLog logFlags

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "meshfed",
		Short: "Multi-cluster service-mesh federation: east-west gateway, federation service, operator tools",
		Long: `meshfed lets services in several Kubernetes clusters (or plain hosts) call each other
with mTLS end to end and fail over between clusters when one goes dark.

Parts:
  gateway      east-west gateway: routes TLS by SNI to this cluster's exported services,
               never terminating the workloads' TLS
  federation   federation service: syncs exports and trust bundles through etcd and
               serves failover-aware xDS to Envoy and proxyless gRPC
  etcd         an embedded etcd server for one-machine use

Start with 'meshfed dev up' (what 'make run' runs) to see a local federation.`,
		Version:       Version,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			l, err := newLogger(cmd.ErrOrStderr(), globalLog)
			if err != nil {
				return err
			}
			slog.SetDefault(l)
			return nil
		},
	}
	root.PersistentFlags().StringVar(&globalLog.level, "log-level", "info", "log level: debug, info, warn or error")
	root.PersistentFlags().StringVar(&globalLog.format, "log-format", "text", "log format: text or json")
	cmds := make([]*cobra.Command, 0, len(subcommands))
	for _, f := range subcommands {
		cmds = append(cmds, f())
	}
	sort.Slice(cmds, func(i, j int) bool { return cmds[i].Name() < cmds[j].Name() })
	root.AddCommand(cmds...)
	return root
}

func newLogger(w io.Writer, f logFlags) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(f.level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: use debug, info, warn or error", f.level)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	switch strings.ToLower(f.format) {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	default:
		return nil, fmt.Errorf("--log-format %q: use text or json", f.format)
	}
}
