package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"

	"github.com/spf13/cobra"

	"github.com/meshfed/meshfed/internal/actor"
	"github.com/meshfed/meshfed/keyspace/store"
	"github.com/meshfed/meshfed/operator"
)

func init() { register(newPolicyCmd) }

func newPolicyCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "policy",
		Short: "Set, show and delete per-service failover policies (cluster order overrides)",
		Long: `A failover policy changes the order in which clusters serve one service
(policy/<namespace>/<service> in etcd). Without a policy the order is: the client's own
cluster, then clusters in the same region, then the rest, ties by name. A policy's --order
comes first (after the local cluster, unless --no-local-first); clusters it does not list
follow in the default order. Unhealthy, cordoned and empty clusters are still left out.

Policies are written with operator credentials (etcd root, or an operator user made by
'meshfed join --admin-user'); every write compares the revision it read, and records who
made it (updatedBy).

` + etcdFlagsHelp + `

Examples:
  meshfed policy set demo/echo --order west,north
  meshfed policy set demo/echo --order north --no-local-first   # even local clients go to north
  meshfed policy get demo/echo -o json
  meshfed policy list
  meshfed policy delete demo/echo                               # back to the default order

See docs/operations.md ("Failover policy").`,
	}
	cmd.AddCommand(newPolicySetCmd(), newPolicyGetCmd(), newPolicyListCmd(), newPolicyDeleteCmd())
	return cmd
}

type policyFlags struct {
	etcd   etcdFlags
	output string
}

func (f *policyFlags) run(ctx context.Context, fn func(st *store.Store) error) error {
	if err := checkOutput(f.output); err != nil {
		return err
	}
	st, cli, err := f.etcd.open(ctx, slog.Default())
	if err != nil {
		return err
	}
	defer cli.Close()
	return fn(st)
}

func newPolicySetCmd() *cobra.Command {
	var f policyFlags
	var req operator.PolicyRequest
	cmd := &cobra.Command{
		Use:   "set NAMESPACE/NAME --order CLUSTER,CLUSTER...",
		Short: "Set the failover order of one service",
		Long: `Set writes the service's policy. Every cluster in --order must be a member (a
clusters/ record), each listed once; every problem is reported at once.

Examples:
  meshfed policy set demo/echo --order west,north
  meshfed policy set demo/echo --order north --no-local-first`,
		Args: exactlyOneService,
		RunE: func(cmd *cobra.Command, args []string) error {
			ns, name, err := operator.ParseServiceRef("NAMESPACE/NAME", args[0])
			if err != nil {
				return err
			}
			req.Namespace, req.Name, req.Actor = ns, name, actor.Of(f.etcd.user)
			return f.run(cmd.Context(), func(st *store.Store) error {
				res, err := operator.SetPolicy(cmd.Context(), st, req)
				if err != nil {
					return flagErr(err, policyFlagOf)
				}
				return writeOutput(cmd.OutOrStdout(), f.output, res)
			})
		},
	}
	fl := cmd.Flags()
	addEtcdFlags(fl, &f.etcd)
	fl.StringSliceVar(&req.Order, "order", nil, "clusters in preference order, comma-separated (e.g. west,north)")
	fl.BoolVar(&req.NoLocalFirst, "no-local-first", false, "let --order outrank the client's own cluster (default: local first)")
	addOutputFlag(fl, &f.output)
	return cmd
}

func newPolicyGetCmd() *cobra.Command {
	var f policyFlags
	cmd := &cobra.Command{
		Use:   "get NAMESPACE/NAME",
		Short: "Show the failover policy of one service",
		Args:  exactlyOneService,
		RunE: func(cmd *cobra.Command, args []string) error {
			ns, name, err := operator.ParseServiceRef("NAMESPACE/NAME", args[0])
			if err != nil {
				return err
			}
			return f.run(cmd.Context(), func(st *store.Store) error {
				p, err := operator.GetPolicy(cmd.Context(), st, ns, name)
				if err != nil {
					return err
				}
				return writeOutput(cmd.OutOrStdout(), f.output, p)
			})
		},
	}
	addEtcdFlags(cmd.Flags(), &f.etcd)
	addOutputFlag(cmd.Flags(), &f.output)
	return cmd
}

func newPolicyListCmd() *cobra.Command {
	var f policyFlags
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List every failover policy",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return f.run(cmd.Context(), func(st *store.Store) error {
				l, err := operator.ListPolicies(cmd.Context(), st)
				if err != nil {
					return err
				}
				return writeOutput(cmd.OutOrStdout(), f.output, l)
			})
		},
	}
	addEtcdFlags(cmd.Flags(), &f.etcd)
	addOutputFlag(cmd.Flags(), &f.output)
	return cmd
}

func newPolicyDeleteCmd() *cobra.Command {
	var f policyFlags
	cmd := &cobra.Command{
		Use:   "delete NAMESPACE/NAME",
		Short: "Delete the failover policy of one service (back to the default order)",
		Args:  exactlyOneService,
		RunE: func(cmd *cobra.Command, args []string) error {
			ns, name, err := operator.ParseServiceRef("NAMESPACE/NAME", args[0])
			if err != nil {
				return err
			}
			return f.run(cmd.Context(), func(st *store.Store) error {
				if err := operator.DeletePolicy(cmd.Context(), st, ns, name); err != nil {
					return err
				}
				return printf(cmd.OutOrStdout(), "policy %s/%s deleted: the service follows the default order\n", ns, name)
			})
		},
	}
	addEtcdFlags(cmd.Flags(), &f.etcd)
	f.output = outputTable
	return cmd
}

// policyFlagOf names the flag of each operator.PolicyRequest field that policy set's
// errors name.
var policyFlagOf = map[string]string{
	"Order":        "--order",
	"NoLocalFirst": "--no-local-first",
}

func exactlyOneService(_ *cobra.Command, args []string) error {
	if len(args) != 1 {
		return fmt.Errorf("want one argument NAMESPACE/NAME (e.g. demo/echo), got %d", len(args))
	}
	return nil
}

func printf(w io.Writer, format string, args ...any) error {
	_, err := fmt.Fprintf(w, format, args...)
	return err
}
