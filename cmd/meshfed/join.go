package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/meshfed/meshfed/internal/actor"
	"github.com/meshfed/meshfed/operator"
)

func init() { register(newJoinCmd) }

type joinFlags struct {
	etcd   etcdFlags
	req    operator.JoinRequest
	output string
}

func newJoinCmd() *cobra.Command {
	var f joinFlags
	cmd := &cobra.Command{
		Use:   "join",
		Short: "Make a cluster a member of the clusterset (cluster record, etcd user and role, audit)",
		Long: `Join writes the cluster record clusters/<name> (network, region, zone, trust domain,
east-west gateways) that other clusters need to route to this one, and records who did it
in audit/.

Before changing anything it checks everything and reports every problem at once: a name
taken by a different cluster, a trust domain that another cluster owns, a gateway address
that is another cluster's, malformed flags. A gateway that does not answer its health check
yet is a warning, not an error (start it after joining if you like). So is an
--hbone-gateway address that is not yet an HBONE listener of this cluster: join checks that
it answers TLS 1.3 with ALPN h2, presents an SVID of --trust-domain and demands a client
certificate (it cannot present one, so the SVID's chain is not verified).

Joining again with the same settings changes nothing (idempotent). Different settings
under an existing name are refused unless --force, which overwrites and keeps the previous
record in the audit log.

Shared trust domain (--share-trust-domain-with OWNER): by default every cluster owns its
own trust domain, and a trust domain another member has is refused. Clusters that are one
mesh with one root (Istio's multi-cluster model: several networks, one trust domain, one
CA root; required for Istio ambient across clusters, docs/istio.md) join the first of them
normally (it owns the trust domain) and every other one with --trust-domain TD
--share-trust-domain-with OWNER. The owner alone publishes and rotates bundles/<TD>; the
others read it like any federated bundle, their etcd role gets no write on it, and their
federation service never writes it. Security: the clusters of one trust domain trust each
other's workloads fully (any SVID of TD is accepted as a local one in every one of them), and
a compromise of any of them is a compromise of all: use it only for clusters that are one
trust boundary already. The owner cannot leave while others share its trust domain
(they leave first).

etcd auth: when etcd auth is on (join detects it), join creates the cluster's etcd user
and role meshfed-cluster-<name>: read on the whole keyspace, write only on the cluster's
own keys (clusters/<c>, alive/<c>, exports/<c>/, acks/<c>/, bundles/<its trust domain>
unless it shares another member's).
A compromised cluster cannot rewrite another cluster's exports or bundles: etcd refuses.
The new password is written only to --credentials-out (JSON {"user","password"}, mode
0600); hand it to that cluster's federation service. Creating users needs etcd's root role.
--admin-user also creates an operator user (role meshfed-operator: readwrite on the whole
keyspace) for drill, policy, rotate and leave.

` + etcdFlagsHelp + `

Examples:
  # Look first: what would be written, which role and permissions
  meshfed join --cluster east --region eu-west-1 --zone eu-west-1a --network net-east \
    --trust-domain east.example.org --gateway 203.0.113.10:15443 --dry-run

  # Join with etcd auth on, as etcd root, keeping east's credentials
  meshfed join --cluster east --region eu-west-1 --zone eu-west-1a --network net-east \
    --trust-domain east.example.org --gateway 203.0.113.10:15443 --gateway 203.0.113.11:15443 \
    --etcd-user root --credentials-out east-etcd.json

  # An Istio ambient cluster: also the gateway's HBONE listener (docs/istio.md, "Ambient")
  meshfed join ... --gateway 203.0.113.10:15443 --hbone-gateway 203.0.113.10:15008

  # Two clusters of one Istio mesh (one trust domain, one root): the owner first, then
  meshfed join --cluster west --region us-east-1 --zone us-east-1a --network net-west \
    --trust-domain mesh.example.org --share-trust-domain-with east --gateway 198.51.100.10:15443

  # Also create an operator user for drills and policies
  meshfed join ... --etcd-user root --credentials-out east-etcd.json \
    --admin-user meshfed-admin --admin-credentials-out admin-etcd.json

  # Write the Kubernetes manifests of this cluster from deploy/kustomize
  meshfed join ... --emit-manifests ./east-manifests && kubectl apply -k ./east-manifests

See docs/operations.md ("Join a cluster").`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runJoin(cmd.Context(), cmd.OutOrStdout(), &f)
		},
	}
	fl := cmd.Flags()
	addEtcdFlags(fl, &f.etcd)
	r := &f.req
	fl.StringVar(&r.Cluster, "cluster", "", "cluster name, a DNS label (e.g. east)")
	fl.StringVar(&r.Region, "region", "", "the cluster's region (a DNS label, e.g. eu-west-1): clusters in the same region fail over to each other first")
	fl.StringVar(&r.Zone, "zone", "", "the cluster's zone (a DNS label, e.g. eu-west-1a)")
	fl.StringVar(&r.Network, "network", "", "the cluster's network name (a DNS label)")
	fl.StringVar(&r.TrustDomain, "trust-domain", "", "the cluster's SPIFFE trust domain, without spiffe:// (e.g. east.example.org); one per cluster unless --share-trust-domain-with")
	fl.StringVar(&r.ShareTrustDomainWith, "share-trust-domain-with", "", "OWNER: share the trust domain (and root) of member OWNER instead of owning one (one Istio mesh on several networks); OWNER alone publishes and rotates its bundle; the clusters then trust each other's workloads fully")
	fl.StringSliceVar(&r.Gateways, "gateway", nil, "east-west gateway address HOST:PORT that other clusters dial (repeat, or comma-separate, for several)")
	fl.StringSliceVar(&r.HBONEGateways, "hbone-gateway", nil, "HOST:PORT of the gateway's HBONE listener (Istio ambient, usually :15008) that other networks' ztunnels dial (repeat for several; one port for all; optional)")
	fl.BoolVar(&r.DryRun, "dry-run", false, "print the plan (keys, etcd role and permissions) and change nothing")
	fl.BoolVar(&r.Force, "force", false, "overwrite a different record of the same name (audited)")
	fl.StringVar(&r.CredentialsOut, "credentials-out", "", "write the new cluster etcd user's credentials to this file (JSON, mode 0600); required when join creates the user")
	fl.BoolVar(&r.RotatePassword, "rotate-password", false, "give the existing cluster etcd user a new password (written to --credentials-out)")
	fl.BoolVar(&r.CertAuth, "cert-auth", false, "create the cluster etcd user without a password: it authenticates with a client certificate whose CN is the user name (etcd --client-cert-auth)")
	fl.StringVar(&r.Users, "etcd-users", operator.UsersAuto, "manage the cluster's etcd user and role: auto (when etcd auth is on), always (also while it is off, to prepare), never")
	fl.StringVar(&r.AdminUser, "admin-user", "", "also create this operator etcd user (role meshfed-operator: readwrite on the whole keyspace)")
	fl.StringVar(&r.AdminCredentialsOut, "admin-credentials-out", "", "write the new operator user's credentials to this file (JSON, mode 0600)")
	fl.StringVar(&r.EmitManifests, "emit-manifests", "", "render the Kubernetes manifests under --deploy-dir/kustomize for this cluster into this directory")
	fl.StringVar(&r.DeployDir, "deploy-dir", "deploy", "meshfed's deploy/ directory (for --emit-manifests)")
	fl.DurationVar(&r.ProbeTimeout, "probe-timeout", 2*time.Second, "how long to wait for each gateway's health check")
	addOutputFlag(fl, &f.output)
	return cmd
}

// joinFlagOf names the flag of each operator.JoinRequest field that join's errors
// (operator.InvalidError, validate.FieldError) name.
var joinFlagOf = map[string]string{
	"Cluster":              "--cluster",
	"Region":               "--region",
	"Zone":                 "--zone",
	"Network":              "--network",
	"TrustDomain":          "--trust-domain",
	"ShareTrustDomainWith": "--share-trust-domain-with",
	"Gateways":             "--gateway",
	"HBONEGateways":        "--hbone-gateway",
	"Force":                "--force",
	"Users":                "--etcd-users",
	"CredentialsOut":       "--credentials-out",
	"RotatePassword":       "--rotate-password",
	"CertAuth":             "--cert-auth",
	"AdminUser":            "--admin-user",
	"AdminCredentialsOut":  "--admin-credentials-out",
	"EmitManifests":        "--emit-manifests",
	"DeployDir":            "--deploy-dir",
}

func runJoin(ctx context.Context, out io.Writer, f *joinFlags) error {
	if err := checkOutput(f.output); err != nil {
		return err
	}
	st, cli, err := f.etcd.open(ctx, slog.Default())
	if err != nil {
		return err
	}
	defer cli.Close()
	f.req.Actor = actor.Of(f.etcd.user)
	f.req.ManifestExtra = operator.ManifestValues{"MESHFED_VERSION": Version}
	f.req.EtcdEndpoints = strings.Join(f.etcd.config().Endpoints, ",")
	plan, err := operator.Join(ctx, st, f.req)
	err = flagErr(err, joinFlagOf)
	if plan != nil {
		plan.Warnings = append(plan.Warnings, hboneGatewayWarnings(f.req.Cluster, plan.HBONEGateways)...)
	}
	if plan != nil && (err == nil || len(plan.Done) > 0 || f.req.DryRun) {
		if werr := writeOutput(out, f.output, plan); werr != nil {
			return errors.Join(err, werr)
		}
	}
	return err
}

// hboneGatewayWarnings names --hbone-gateway for each HBONE address that join's probe did
// not pass (operator.Join probes it; the flag is this command's).
func hboneGatewayWarnings(cluster string, checks []operator.GatewayCheck) []string {
	var out []string
	for _, g := range checks {
		if g.OK {
			continue
		}
		out = append(out, fmt.Sprintf("--hbone-gateway %s: not an HBONE listener of this cluster yet (%s: %s); join goes on and records it, but other networks' ztunnels cannot reach %s there until `meshfed gateway --hbone-listen` answers on it with an SVID of the cluster's trust domain",
			g.Address, g.Result, g.Detail, cluster))
	}
	return out
}
