package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/meshfed/meshfed/api/validate"
	"github.com/meshfed/meshfed/discovery"
	"github.com/meshfed/meshfed/discovery/file"
	"github.com/meshfed/meshfed/federation/agent"
	"github.com/meshfed/meshfed/federation/istio"
	"github.com/meshfed/meshfed/federation/service"
	"github.com/meshfed/meshfed/federation/xds"
	"github.com/meshfed/meshfed/internal/admin"
	"github.com/meshfed/meshfed/internal/certexpiry"
)

func init() { register(newFederationCmd) }

type federationFlags struct {
	etcd         etcdFlags
	cluster      string
	exports      string
	kubeconfig   string
	admin        string
	staleGrace   time.Duration
	heartbeatTTL time.Duration
	pollInterval time.Duration
	xds          xdsFlags
	istio        istioFlags
	ambient      ambientFlags
	trust        *trustFlags
	leaderElect  bool
	leaderNS     string
	leaderLease  string
}

func newFederationCmd() *cobra.Command {
	var f federationFlags
	cmd := &cobra.Command{
		Use:   "federation",
		Short: "Federation service: publish this cluster's exports, merge everyone's, serve failover-aware xDS",
		Long: `The federation service of one cluster. It

  - publishes this cluster's exported services to etcd (from --exports, or from
    ServiceExports with --kubeconfig), writing only what really changed;
  - keeps this cluster's heartbeat (alive/<cluster>, on its own lease);
  - watches the whole keyspace and merges every cluster's exports into the import view
    (served as JSON at /debug/imports on --admin).

Static stability: if etcd goes away, the last import view stays in use. A cluster whose
heartbeat expires is marked stale; its exports stay for --stale-grace, then leave the view.

` + etcdFlagsHelp + `

xDS (for this cluster's Envoys, proxyless gRPC clients and east-west gateway):
  --xds-listen      ADS listener (default 127.0.0.1:15010); see docs/xds.md for bootstraps
  --xds-tls-cert/--xds-tls-key   serve it over TLS (required in practice beyond loopback)
  --xds-tls-client-ca            and require client certificates from this CA (mTLS)

` + trustFlagsHelp + `

` + istioFlagsHelp + `

` + ambientFlagsHelp + `

Examples:
  # One-machine federation on the embedded etcd ('meshfed etcd' in another terminal)
  meshfed federation --cluster east --exports exports.yaml

  # Against a production etcd with mTLS and the credentials 'meshfed join' wrote
  meshfed federation --cluster east --exports exports.yaml \
    --etcd-endpoints https://etcd-0.example:2379,https://etcd-1.example:2379 \
    --etcd-cacert ca.pem --etcd-cert east.pem --etcd-key east-key.pem \
    --etcd-user meshfed-cluster-east --etcd-password "$(jq -r .password east-creds.json)"

  # xDS for the pods of the cluster, over mTLS
  meshfed federation --cluster east --kubeconfig in-cluster --xds-listen :15010 \
    --xds-tls-cert /tls/tls.crt --xds-tls-key /tls/tls.key --xds-tls-client-ca /tls/ca.crt

  # What this cluster imports
  curl -s 127.0.0.1:15001/debug/imports | jq .

See docs/federation.md.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runFederation(cmd.Context(), f) },
	}
	fl := cmd.Flags()
	addEtcdFlags(fl, &f.etcd)
	fl.StringVar(&f.cluster, "cluster", "", "this cluster's name (a DNS label, as given to 'meshfed join')")
	fl.StringVar(&f.exports, "exports", "", "exports file (YAML or JSON) listing the services this cluster exports; re-read on change")
	fl.StringVar(&f.kubeconfig, "kubeconfig", "", "export from Kubernetes ServiceExports (path to a kubeconfig; \"in-cluster\" inside a pod)")
	fl.StringVar(&f.admin, "admin", "127.0.0.1:15001", "admin listener: /metrics, /healthz, /readyz, /debug/imports")
	fl.DurationVar(&f.staleGrace, "stale-grace", service.DefaultStaleGrace, "how long a cluster without heartbeat keeps its exports in the import view")
	fl.DurationVar(&f.heartbeatTTL, "heartbeat-ttl", 10*time.Second, "TTL of this cluster's heartbeat lease (at least 2s)")
	fl.DurationVar(&f.pollInterval, "exports-poll-interval", time.Second, "how often --exports is checked for changes")
	fl.BoolVar(&f.leaderElect, "leader-elect", false, "with --kubeconfig: elect one leader among replicas with a Lease; only the leader publishes, writes ServiceExport conditions and imports (all replicas serve xDS)")
	fl.StringVar(&f.leaderNS, "leader-elect-namespace", envOr("POD_NAMESPACE", "meshfed-system"), "namespace of the leader election Lease (env POD_NAMESPACE)")
	fl.StringVar(&f.leaderLease, "leader-elect-lease", "", "name of the leader election Lease (default meshfed-federation-<cluster>)")
	addXDSFlags(fl, &f.xds)
	addIstioFlags(fl, &f.istio)
	addAmbientFlags(fl, &f.ambient)
	f.trust = addTrustFlags(fl)
	return cmd
}

func (f *federationFlags) validate() error {
	var errs validate.Errors
	if err := validate.DNSLabel(f.cluster); err != nil {
		errs.Add("--cluster", "%v (e.g. --cluster east)", err)
	}
	if f.exports != "" && f.kubeconfig != "" {
		errs.Add("--exports/--kubeconfig", "give one discovery source, not both")
	}
	if err := validate.ListenAddr(f.admin); err != nil {
		errs.Add("--admin", "%v", err)
	}
	if f.leaderElect && f.kubeconfig == "" {
		errs.Add("--leader-elect", "needs --kubeconfig (the election uses a Kubernetes Lease); outside Kubernetes run one replica")
	}
	if f.leaderElect {
		errs.AddErr("--leader-elect-namespace", validate.DNSLabel(f.leaderNS))
	}
	if f.staleGrace <= 0 {
		errs.Add("--stale-grace", "must be positive, e.g. 10m")
	}
	if f.heartbeatTTL < 2*time.Second {
		errs.Add("--heartbeat-ttl", "%v: at least 2s", f.heartbeatTTL)
	}
	errs.AddErr("", f.xds.validate())
	errs.AddErr("", f.istio.validate())
	errs.AddErr("", f.ambient.validate(f.kubeconfig))
	if f.trust.enabled() {
		errs.AddErr("", f.trust.validate())
	}
	errs.AddErr("", f.etcd.validate())
	return errs.Err()
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// namedRun is a part's run func, named for error messages.
type namedRun struct {
	name string
	run  func(context.Context) error
}

// federationListenFlagOf names the flags of the listeners the agent binds.
var federationListenFlagOf = map[string]string{xds.FieldListen: "--xds-listen", istio.FieldListen: "--istio-mcp-listen"}

func runFederation(ctx context.Context, f federationFlags) error {
	if err := f.validate(); err != nil {
		return err
	}
	log := slog.Default().With("cluster", f.cluster)
	xdsTLS, err := f.xds.serverTLS()
	if err != nil {
		return err
	}
	if xdsTLS == nil && !loopbackListen(f.xds.listen) {
		log.Warn("xDS is served in plaintext beyond loopback: anyone who reaches it reads every route and endpoint; add --xds-tls-cert/--xds-tls-key (and --xds-tls-client-ca for mTLS)", "xds_listen", f.xds.listen)
	}
	istioOpts, err := f.istio.options()
	if err != nil {
		return err
	}
	if istioOpts.Listen != "" && istioOpts.ServerTLS == nil && !loopbackListen(istioOpts.Listen) {
		log.Warn("the Istio MCP source is served in plaintext beyond loopback: fence it with a NetworkPolicy admitting istiod alone, or add --istio-mcp-tls-cert/--istio-mcp-tls-key", "istio_mcp_listen", istioOpts.Listen)
	}
	st, cli, err := f.etcd.open(ctx, log)
	if err != nil {
		return err
	}
	defer cli.Close()
	adm := admin.New(log)
	// One set of build options for istiod's resources, MCP and Kubernetes (--istio-ambient).
	var istioBuild istio.BuildOptions
	var src discovery.Source
	var kube *kubeWiring
	switch {
	case f.exports != "":
		src = &file.Source{Cluster: f.cluster, Path: f.exports, Interval: f.pollInterval, Log: log}
	case f.kubeconfig != "":
		entries, err := f.ambient.entries(istioBuild, log.With("part", "kube-importer"), adm.Registry)
		if err != nil {
			return err
		}
		kube, err = newKubeWiring(f.cluster, f.kubeconfig, f.ambient.gateways(), entries, adm, log)
		if err != nil {
			return err
		}
		src = kube.source
	default:
		log.Warn("no --exports or --kubeconfig: this cluster imports only")
	}
	if f.etcd.cert != "" {
		adm.Registry.MustRegister(certexpiry.NewCertCollector(nil, certexpiry.CertFile{Name: "etcd-client", Path: f.etcd.cert}))
	}
	if f.xds.tlsCert != "" {
		adm.Registry.MustRegister(certexpiry.NewCertCollector(nil, certexpiry.CertFile{Name: "xds-server", Path: f.xds.tlsCert}))
	}
	var elector service.Elector
	if f.leaderElect {
		lease := f.leaderLease
		if lease == "" {
			lease = "meshfed-federation-" + f.cluster
		}
		host, _ := os.Hostname()
		elector = kube.leaderElector(f.leaderNS, lease, host, log)
	}
	tsvc, err := f.trust.build(f.cluster, st, log, adm.Registry) // nil without trust flags
	if err != nil {
		return fmt.Errorf("trust: %w", err)
	}
	ag, err := agent.New(agent.Config{
		Cluster: f.cluster, Store: st, Source: src, IstioBuild: istioBuild, HeartbeatTTL: f.heartbeatTTL, StaleGrace: f.staleGrace,
		XDS:      xds.Options{Listen: f.xds.listen, MinReassign: f.xds.minReassign, CertProviderInstance: f.xds.certInstance, ServerTLS: xdsTLS},
		Health:   f.xds.healthOptions(),
		IstioMCP: istioOpts,
		Trust:    tsvc, Admin: adm, Log: slog.Default(), Elector: elector,
	})
	if err != nil {
		return flagErr(err, federationListenFlagOf)
	}
	if err := adm.Listen(f.admin); err != nil {
		return err
	}
	runs := []namedRun{{"federation", ag.Run}}
	if kube != nil {
		run := kube.attach(ag)
		if !kube.elected {
			runs = append(runs, namedRun{"kubernetes importer", run})
		}
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errc := make(chan error, len(runs)+2)
	start := func(name string, run func(context.Context) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := run(ctx); err != nil && !errors.Is(err, context.Canceled) {
				errc <- fmt.Errorf("%s: %w", name, err)
			}
		}()
	}
	start("admin", adm.Serve)
	for _, r := range runs {
		start(r.name, r.run)
	}
	var runErr error
	select {
	case <-ctx.Done():
		log.Info("stopping")
	case runErr = <-errc:
		log.Error("stopping after an error", "err", runErr)
	}
	cancel()
	wg.Wait()
	return runErr
}
