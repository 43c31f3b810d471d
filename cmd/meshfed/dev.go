package main

import (
	"crypto/tls"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/meshfed/meshfed/api/validate"
	"github.com/meshfed/meshfed/harness/devup"
)

func init() { register(newDevCmd) }

func newDevCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Local development federation (what `make run` runs)",
		Args:  cobra.NoArgs,
	}
	var o devup.Options
	var exit bool
	var etcd string
	up := &cobra.Command{
		Use:   "up",
		Short: "Run a local federation of three clusters with a failover drill, told step by step",
		Long: `Starts a whole federation on this machine, with no Kubernetes and nothing to install:

  - an embedded etcd (127.0.0.1:2379, or a free port when that one is taken);
  - three simulated clusters, east and west (region-1) and north (region-2), each on its
    own loopback address with a federation service (xDS), an east-west gateway fed by it,
    and a development CA for its own SPIFFE trust domain;
  - a demo gRPC service exported by west and north, serving mTLS with SVIDs;
  - a proxyless grpc-go client in east, a separate process configured only by its xDS
    bootstrap file, calling the service ten times a second.

It then shows where the calls go (west: same region), runs a failover drill of west and a
gateway outage, and prints in plain words what happens at each step. The federation then
keeps running (try 'meshfed status' against it) until Ctrl-C, which stops everything
cleanly. Component logs go to meshfed.log in the state directory.

Examples:
  meshfed dev up
  meshfed dev up --dir ./dev-state --drill-for 15s
  meshfed dev up --exit-after-demo      # for scripts: stop after the story`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var errs validate.Errors
			if etcd != "" {
				errs.AddErr("--etcd-listen", validate.ListenAddr(etcd))
			}
			if o.DrillFor < time.Second {
				errs.Add("--drill-for", "%v: at least 1s", o.DrillFor)
			}
			if err := errs.Err(); err != nil {
				return err
			}
			o.EtcdAddr, o.Stay, o.Out = etcd, !exit, cmd.OutOrStdout()
			return devup.Run(cmd.Context(), o)
		},
	}
	up.Flags().StringVar(&o.Dir, "dir", "", "state directory (default: a temporary one, removed at the end)")
	up.Flags().StringVar(&etcd, "etcd-listen", "", "embedded etcd client address (default 127.0.0.1:2379, or a free port)")
	up.Flags().DurationVar(&o.DrillFor, "drill-for", 8*time.Second, "how long the drill cordons west")
	up.Flags().DurationVar(&o.MinReassign, "min-reassign", 3*time.Second, "planner damping for the demo (production default 10s)")
	up.Flags().BoolVar(&exit, "exit-after-demo", false, "stop after the story instead of running until Ctrl-C")
	up.Flags().StringVar(&o.DevCADir, "dev-ca-dir", devup.DefaultDevCADir, "development CAs of the three clusters (one directory per trust domain; kept across runs), where 'meshfed drill' finds them")

	var target string
	var interval time.Duration
	call := &cobra.Command{
		Use:    "call",
		Short:  "The demo's proxyless gRPC client: calls a target through xDS, one JSON line per call",
		Hidden: true,
		Long: `Calls the gRPC health service of --target every --interval through grpc-go's xDS
resolver, configured by GRPC_XDS_BOOTSTRAP (grpc-go v1.85 also needs
GRPC_EXPERIMENTAL_XDS_SNI=true and GRPC_EXPERIMENTAL_XDS_MTLS_SPIFFE=true), and prints
one JSON line per call: when, the server's SPIFFE ID, the peer address, or the error.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return devup.RunClient(cmd.Context(), target, interval, cmd.OutOrStdout())
		},
	}
	call.Flags().StringVar(&target, "target", "", "xds:///<service>.<namespace>.svc.clusterset.local:<port>")
	call.Flags().DurationVar(&interval, "interval", 100*time.Millisecond, "time between calls")
	var wl struct{ listen, cert, key, bundleDir string }
	workload := &cobra.Command{
		Use:    "workload",
		Short:  "The demo's workload: the gRPC health service over mTLS, as a process",
		Hidden: true,
		Long: `Serves the standard gRPC health service on --listen with mTLS: its certificate is
--cert/--key (an SVID of its cluster's trust domain), and clients must present a
certificate chaining to a root that its federation service wrote into --bundle-dir
(<td>.pem files), i.e. a cluster it federates with. The testbed (docs/testbed.md) runs one
per simulated cluster. Runs until interrupted.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var errs validate.Errors
			errs.AddErr("--listen", validate.ListenAddr(wl.listen))
			if wl.cert == "" || wl.key == "" {
				errs.Add("--cert/--key", "give the workload's certificate and key (PEM), e.g. from 'meshfed trust dev-ca issue'")
			}
			if wl.bundleDir == "" {
				errs.Add("--bundle-dir", "required: the directory its federation service writes the federated bundles to (--bundle-dir of meshfed federation)")
			}
			if err := errs.Err(); err != nil {
				return err
			}
			cert, err := tls.LoadX509KeyPair(wl.cert, wl.key)
			if err != nil {
				return fmt.Errorf("--cert/--key: %w", err)
			}
			w, err := devup.StartWorkload(wl.listen, &cert, wl.bundleDir)
			if err != nil {
				return err
			}
			defer w.Stop()
			fmt.Fprintf(cmd.OutOrStdout(), "workload serving at %s\n", w.Addr())
			<-cmd.Context().Done()
			return nil
		},
	}
	workload.Flags().StringVar(&wl.listen, "listen", "127.0.0.1:0", "HOST:PORT to serve on")
	workload.Flags().StringVar(&wl.cert, "cert", "", "certificate chain (PEM), the workload's SVID")
	workload.Flags().StringVar(&wl.key, "key", "", "private key (PEM) of --cert")
	workload.Flags().StringVar(&wl.bundleDir, "bundle-dir", "", "federated bundle directory (<td>.pem) that client certificates must chain to")
	cmd.AddCommand(up, call, workload)
	return cmd
}
