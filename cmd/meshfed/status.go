package main

import (
	"context"
	"io"
	"log/slog"
	"time"

	"github.com/spf13/cobra"

	"github.com/meshfed/meshfed/operator"
)

func init() { register(newStatusCmd) }

type statusFlags struct {
	etcd   etcdFlags
	opts   operator.StatusOptions
	output string
}

func newStatusCmd() *cobra.Command {
	var f statusFlags
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the clusterset: clusters, gateways, exports, bundles, failover order, drills, rotations",
		Long: `Status reads the whole keyspace at one etcd revision and shows:

  clusters   heartbeat (alive, or STALE with the last time the cluster wrote anything:
             etcd keeps no time for a deleted heartbeat), each gateway probed live from
             this machine (TLS to health.meshfed.internal, one status line), exports count,
             the bundle sequence of its trust domain, and which bundles it has not acked;
  services   which clusters export each one with their ready endpoint counts and, with
             --from CLUSTER, the failover order from that cluster's point of view, computed
             by the same planner the federation services run (fed with the probes made
             here, which may differ from what that cluster sees);
  drills     live cordons with their lease TTL;
  rotations  root rotation jobs and what they wait for;
  istiod     per cluster whose federation serves istiod (--istio-mcp-listen): each istiod
             fed, its ACK/NACK state, last push and ACK, and the roots it gives its
             proxies over PCDS (count and short fingerprints, as trust status names roots;
             the error of a failing probe under the table);
  warnings   trust roots that expire within --expiry-warning, records that do not decode,
             clusters that publish without having joined.

-o json gives the same as a stable document for scripts (see docs/reference.md).

` + etcdFlagsHelp + `

Examples:
  meshfed status
  meshfed status --from east
  meshfed status --from east -o json | jq '.services[] | {service, order}'
  meshfed status --no-probe        # from a machine that cannot reach the gateways

See docs/operations.md ("Status").`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runStatus(cmd.Context(), cmd.OutOrStdout(), &f)
		},
	}
	fl := cmd.Flags()
	addEtcdFlags(fl, &f.etcd)
	fl.StringVar(&f.opts.From, "from", "", "show the failover order of every service as this cluster's clients see it")
	fl.DurationVar(&f.opts.ProbeTimeout, "probe-timeout", time.Second, "how long each gateway probe may take")
	fl.BoolVar(&f.opts.NoProbe, "no-probe", false, "do not probe gateways (their health shows as not probed)")
	fl.DurationVar(&f.opts.ExpiryWarning, "expiry-warning", operator.DefaultExpiryWarning, "warn about trust roots that expire sooner than this")
	addOutputFlag(fl, &f.output)
	return cmd
}

func runStatus(ctx context.Context, out io.Writer, f *statusFlags) error {
	if err := checkOutput(f.output); err != nil {
		return err
	}
	st, cli, err := f.etcd.open(ctx, slog.Default())
	if err != nil {
		return err
	}
	defer cli.Close()
	s, err := operator.GetStatus(ctx, st, f.opts)
	if err != nil {
		return flagErr(err, map[string]string{"From": "--from"})
	}
	return writeOutput(out, f.output, s)
}
