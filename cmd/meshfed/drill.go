package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"

	"github.com/spf13/cobra"

	"github.com/meshfed/meshfed/api/fault"
	"github.com/meshfed/meshfed/internal/actor"
	"github.com/meshfed/meshfed/operator"
	"github.com/meshfed/meshfed/operator/drill"
)

func init() { register(newDrillCmd) }

type drillFlags struct {
	etcd    etcdFlags
	req     drill.Request
	service string
	report  string
	output  string
}

func newDrillCmd() *cobra.Command {
	var f drillFlags
	cmd := &cobra.Command{
		Use:   "drill --fail CLUSTER [--fault KIND]",
		Short: "Failover drill: fail a cluster for a while (cordon or a real gateway fault), optionally drive traffic and measure the switch",
		Long: `A drill fails one cluster (for one service with --service, or for all) for
--duration. --fault says how:

  cordon          (default) every federation service treats it as down and moves traffic
                  to the next cluster in order: proves the planners obey;
  blackhole       its gateways accept connections and then say nothing, the health name
                  included: the other clusters must detect it by their health checks;
  reset           its gateways reset new connections and health probes;
  delay=DURATION  its gateways hold each new connection's hello that long (health answers too);
  error=FRACTION  its gateways reset that fraction of new connections.

A fault other than cordon writes no cordon: it is carried out by the cluster's own
gateways (its federation service hands it to them over xDS), and it ends by itself at
the drill's start plus --duration, by the gateways' own clocks, whatever happens to this
process, the federation services or etcd. The cordon is the key drills/<id>, attached to its own etcd lease
(--lease-ttl, default 10s) that this process keeps alive: if the drill process dies
(kill -9, a lost laptop), the cordon ends by itself within the lease TTL. At the end of
--duration, or on Ctrl-C, the drill revokes the lease and the cordon ends at once.

--dry-run shows which services and which clients (the other clusters) the drill would
affect and where their traffic would go, and changes nothing.

With --from CLUSTER --target T the drill also drives traffic itself, as CLUSTER's clients
would, during the whole drill (--warmup before the cordon, then until traffic is back after
it), and measures: how long after the cordon no request reached the failed cluster, errors
during the switch, and how long after the lift traffic came back. --target is

  NAMESPACE/NAME:PORT, NAME.NAMESPACE.svc.clusterset.local:PORT or
  outbound|PORT||NAME.NAMESPACE.svc.clusterset.local
      a service: each request follows CLUSTER's failover order over TLS with the
      service's SNI to the chosen gateway. With --xds ADDR (the xDS address of CLUSTER's
      federation service) the order is the EDS that server sends its clients: the real
      path, etcd → federation → xDS push. Without it the drill computes the order itself
      from etcd with the same planner (and gateway health checks from this machine);
  HOST:PORT
      a fixed address (a local Envoy listener, a load balancer) that does the failover
      itself.

Each request is one TLS connection. Its client identity: --tls-cert/--tls-key, or the
SPIFFE Workload API (--spiffe-socket), or else an SVID of the --from cluster minted from
its development CA in --dev-ca-dir when that CA is there (what 'meshfed dev up' uses).
The serving cluster is the one whose trust domain the workload's SPIFFE ID names (its
certificate checked against that trust domain's bundle from etcd, or --tls-ca); a gRPC
port (appProtocol grpc) gets a gRPC health check that must answer SERVING. A workload
without a SPIFFE ID must answer a line naming its cluster ("<cluster> <workload>: ..."). Progress is printed every second; the end is a summary in plain words, which says for
each federation service when its health checks marked the failed cluster down and up
(from the health view every federation replica publishes in acks/<cluster>/health/,
with or without traffic). --report
FILE writes the measurements as JSON and a timeline of requests per cluster over time as
a self-contained HTML page beside it (FILE with .html).

Drills are written with operator credentials (etcd root or 'meshfed join --admin-user').

` + etcdFlagsHelp + `

Examples:
  meshfed drill --fail west --dry-run
  meshfed drill --fail west --service demo/echo --duration 2m
  meshfed drill --fail west --duration 30s --from east --target demo/echo:8443 \
    --rate 20 --report west-drill.json        # then open west-drill.html
  meshfed drill --fail west --from east --target demo/echo:8443 --xds 127.0.0.1:15010
  meshfed drill --fail west --fault blackhole --duration 20s --from east \
    --target demo/echo:8443 --xds 127.0.0.1:15010

See docs/operations.md ("Failover drills").`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runDrill(cmd.Context(), cmd.OutOrStdout(), cmd.ErrOrStderr(), &f)
		},
	}
	fl := cmd.Flags()
	addEtcdFlags(fl, &f.etcd)
	r := &f.req
	fl.StringVar(&r.Fail, "fail", "", "the cluster to fail")
	fl.StringVar(&r.Fault, "fault", "cordon", "what the drill does to it: "+fault.Usage)
	fl.StringVar(&f.service, "service", "", "cordon only this service, NAMESPACE/NAME (default: every service)")
	fl.DurationVar(&r.Duration, "duration", drill.DefaultDuration, "how long the cordon holds")
	fl.DurationVar(&r.LeaseTTL, "lease-ttl", drill.DefaultLeaseTTL, "TTL of the cordon's own lease: how long it outlives a killed drill (2s-60s)")
	fl.StringVar(&r.ID, "id", "", "drill id, the key drills/<id> (default <cluster>-<time>)")
	fl.StringVar(&r.From, "from", "", "drive traffic as this cluster's clients (with --target)")
	fl.StringVar(&r.Target, "target", "", "what the traffic calls: NAMESPACE/NAME:PORT, an xDS name, or HOST:PORT (see above)")
	fl.StringVar(&r.TargetSNI, "target-sni", "", "TLS server name for a HOST:PORT target")
	fl.StringVar(&r.XDS, "xds", "", "route a service --target by the EDS of this xDS server (the --from cluster's federation service, e.g. 127.0.0.1:15010) instead of a plan computed from etcd")
	fl.IntVar(&r.Rate, "rate", drill.DefaultRate, "requests per second (1-1000), one TLS connection each")
	fl.DurationVar(&r.RequestTimeout, "request-timeout", drill.DefaultRequestTimeout, "timeout of one request")
	fl.DurationVar(&r.Warmup, "warmup", drill.DefaultWarmup, "traffic before the cordon (the baseline)")
	fl.DurationVar(&r.RecoveryTimeout, "recovery-timeout", drill.DefaultRecoveryTimeout, "how long to wait for traffic to come back after the lift")
	fl.DurationVar(&r.MinReassign, "min-reassign", 0, "damping of the traffic's failover plan; match the federation services' (default 10s)")
	fl.StringVar(&r.CAFile, "tls-ca", "", "PEM CA the workload's certificate must chain to (default: a SPIFFE workload is checked against its trust domain's bundle from etcd; others are not verified)")
	fl.StringVar(&r.CertFile, "tls-cert", "", "PEM client certificate for mTLS targets (with --tls-key)")
	fl.StringVar(&r.KeyFile, "tls-key", "", "PEM key of --tls-cert")
	fl.StringVar(&r.SPIFFESocket, "spiffe-socket", "", "SPIFFE Workload API address (unix:///path) giving the traffic's client identity")
	fl.StringVar(&r.DevCADir, "dev-ca-dir", defaultDevCADir, "without --tls-cert or --spiffe-socket: mint the traffic's client SVID from the --from cluster's development CA here, if it is there")
	fl.StringVar(&f.report, "report", "", "write the report as JSON to FILE and its HTML timeline beside it")
	fl.BoolVar(&r.DryRun, "dry-run", false, "show which services and clients the drill would affect; change nothing")
	addOutputFlag(fl, &f.output)
	return cmd
}

func runDrill(ctx context.Context, out, errOut io.Writer, f *drillFlags) error {
	if err := checkOutput(f.output); err != nil {
		return err
	}
	if f.service != "" {
		ns, name, err := operator.ParseServiceRef("--service", f.service)
		if err != nil {
			return err
		}
		f.req.Namespace, f.req.Service = ns, name
	}
	// What needs no etcd is checked first: a typo is reported without a connection.
	if err := f.req.Validate(); err != nil {
		return flagErr(err, drillFlagOf)
	}
	st, cli, err := f.etcd.open(ctx, slog.Default())
	if err != nil {
		return err
	}
	defer cli.Close()
	f.req.Actor = actor.Of(f.etcd.user)
	f.req.Progress = out
	if machineOutput(f.output) {
		f.req.Progress = errOut
	}
	rep, err := drill.Run(ctx, st, f.req)
	err = flagErr(err, drillFlagOf)
	if rep == nil {
		return err
	}
	if werr := writeOutput(out, f.output, rep); werr != nil && err == nil {
		err = werr
	}
	if f.report != "" && !f.req.DryRun {
		jp, hp, rerr := rep.WriteReport(f.report)
		if rerr != nil && err == nil {
			err = rerr
		} else if rerr == nil {
			fmt.Fprintf(f.req.Progress, "report: %s, timeline: %s\n", jp, hp)
		}
	}
	if err == nil && rep.Interrupted {
		return exitError{code: 130}
	}
	return err
}

// drillFlagOf names the flag of each drill.Request field that the drill's validation
// errors (drill.InvalidError) name.
var drillFlagOf = map[string]string{
	"Fail":         "--fail",
	"Fault":        "--fault",
	"Service":      "--service",
	"ID":           "--id",
	"Duration":     "--duration",
	"LeaseTTL":     "--lease-ttl",
	"From":         "--from",
	"Target":       "--target",
	"XDS":          "--xds",
	"Rate":         "--rate",
	"CertFile":     "--tls-cert",
	"KeyFile":      "--tls-key",
	"SPIFFESocket": "--spiffe-socket",
}
