package main

import (
	"context"
	"errors"
	"io"
	"log/slog"

	"github.com/spf13/cobra"

	"github.com/meshfed/meshfed/internal/actor"
	"github.com/meshfed/meshfed/operator"
)

func init() { register(newLeaveCmd) }

type leaveFlags struct {
	etcd   etcdFlags
	req    operator.LeaveRequest
	output string
}

func newLeaveCmd() *cobra.Command {
	var f leaveFlags
	cmd := &cobra.Command{
		Use:   "leave",
		Short: "Remove a cluster from the clusterset: withdraw its exports, drop its etcd user and role, audit",
		Long: `Leave removes a cluster: first its etcd user and role (so it cannot write again), then
in one transaction its exports (every other cluster stops routing to it), bundle acks,
heartbeat, cluster record and the bundle of its trust domain (other clusters stop trusting
it; --keep-bundle keeps it), with an audit record in audit/ that lists what was removed.
Earlier audit records stay.

Stop the cluster's federation service first: while its heartbeat is alive leave refuses
(the service would publish its exports again), unless --force. A root rotation of its trust
domain in progress also needs --force.

Credentials: an operator user (meshfed join --admin-user) removes the keys; removing the
etcd user and role needs etcd's root role. With operator credentials leave says what is
left; run it again as root (it is idempotent) to finish.

` + etcdFlagsHelp + `

Examples:
  meshfed leave --cluster east --dry-run
  meshfed leave --cluster east --etcd-user root
  meshfed leave --cluster east --etcd-user meshfed-admin --force   # federation still running

See docs/operations.md ("Leave").`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runLeave(cmd.Context(), cmd.OutOrStdout(), &f)
		},
	}
	fl := cmd.Flags()
	addEtcdFlags(fl, &f.etcd)
	fl.StringVar(&f.req.Cluster, "cluster", "", "the cluster that leaves")
	fl.BoolVar(&f.req.Force, "force", false, "leave even while its federation service runs or a rotation of its trust domain is in progress")
	fl.BoolVar(&f.req.KeepBundle, "keep-bundle", false, "keep bundles/<its trust domain>: other clusters go on trusting it")
	fl.BoolVar(&f.req.DryRun, "dry-run", false, "print what would be removed and change nothing")
	addOutputFlag(fl, &f.output)
	return cmd
}

// leaveFlagOf names the flag of each operator.LeaveRequest field that leave's errors name.
var leaveFlagOf = map[string]string{
	"Cluster": "--cluster",
	"Force":   "--force",
}

func runLeave(ctx context.Context, out io.Writer, f *leaveFlags) error {
	if err := checkOutput(f.output); err != nil {
		return err
	}
	st, cli, err := f.etcd.open(ctx, slog.Default())
	if err != nil {
		return err
	}
	defer cli.Close()
	f.req.Actor = actor.Of(f.etcd.user)
	plan, err := operator.Leave(ctx, st, f.req)
	err = flagErr(err, leaveFlagOf)
	if plan != nil && (err == nil || len(plan.Done) > 0) {
		if werr := writeOutput(out, f.output, plan); werr != nil {
			return errors.Join(err, werr)
		}
	}
	return err
}
