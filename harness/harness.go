package harness

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
	mcp "istio.io/api/mcp/v1alpha1"
	"k8s.io/client-go/rest"

	"github.com/meshfed/meshfed/api/names"
	"github.com/meshfed/meshfed/discovery/file"
	"github.com/meshfed/meshfed/discovery/kube"
	"github.com/meshfed/meshfed/eastwest"
	"github.com/meshfed/meshfed/eastwest/process"
	"github.com/meshfed/meshfed/eastwest/xdsroutes"
	"github.com/meshfed/meshfed/federation/agent"
	"github.com/meshfed/meshfed/federation/health"
	"github.com/meshfed/meshfed/federation/istio"
	"github.com/meshfed/meshfed/federation/service"
	"github.com/meshfed/meshfed/federation/xds"
	"github.com/meshfed/meshfed/internal/admin"
	"github.com/meshfed/meshfed/internal/atomicfile"
	"github.com/meshfed/meshfed/internal/faultproxy"
	"github.com/meshfed/meshfed/keyspace/embedetcd"
	"github.com/meshfed/meshfed/keyspace/records"
	"github.com/meshfed/meshfed/keyspace/store"
	"github.com/meshfed/meshfed/keyspace/view"
	"github.com/meshfed/meshfed/trust/devca"
	"github.com/meshfed/meshfed/trust/federate"
	"github.com/meshfed/meshfed/trust/source"
)

// ClusterSpec describes one simulated cluster.
type ClusterSpec struct {
	Name        string
	Region      string // default "region-1"
	Zone        string // default "<region>-a"
	Network     string // default "net-<name>"
	TrustDomain string // default "<name>.meshfed.test"
	// ShareTrustDomainWith records the cluster as sharing the trust domain of that (earlier)
	// cluster (join --share-trust-domain-with); with Options.Trust and Options.DevCADir the
	// two then have one dev CA, one root. Its record is written before its federation starts
	// (as join precedes it in a deployment), so its publisher never takes the bundle.
	ShareTrustDomainWith string
	// Exports is the initial exports file (YAML); empty exports nothing.
	Exports string
	// NoGateway skips the east-west gateway of this cluster.
	NoGateway bool
	// NoJoin skips writing the cluster record (as if `meshfed join` had not run).
	NoJoin bool
	// GatewayFromFile makes the gateway read the exports file itself instead of taking
	// its routes from the cluster's federation over xDS (when Options.GatewayRoutesFromXDS).
	GatewayFromFile bool
	// IstioMCP makes the federation serve istiod too (--istio-mcp-listen on the cluster's
	// loopback address, the last state kept in the cluster's directory).
	IstioMCP bool
	// IstiodXDS, with IstioMCP, is where the federation follows each connected istiod's PCDS
	// (istio.Options.IstiodXDS, `--istiod-xds`; empty: not followed).
	IstiodXDS string
	// GatewayFaults puts a fault proxy (internal/faultproxy, Cluster.Fault) in front of the
	// gateway: the cluster record and GatewayAddr name the proxy, so a test can reset
	// (Kill) or blackhole the gateway as other clusters see it.
	GatewayFaults bool
	// BundleEndpoint, with Options.Trust, makes the cluster's trust component serve the SPIFFE
	// bundle endpoint (`meshfed federation --bundle-endpoint`; Cluster.BundleEndpointAddr).
	BundleEndpoint *federate.EndpointConfig
	// HBONEGateways are written into the cluster record (`meshfed join --hbone-gateway`):
	// HOST:PORT of the cluster's east-west gateway HBONE listeners as other networks reach
	// them. Nothing listens there unless the test starts it.
	HBONEGateways []string
	// Kube gives the cluster's federation the Kubernetes importer of `meshfed federation
	// --kubeconfig` against that API server (ServiceImports, EndpointSlices; MCS CRDs needed).
	Kube *KubeSpec
}

// KubeSpec is a cluster's Kubernetes API, as its federation's importer writes to it.
type KubeSpec struct {
	Config *rest.Config
	// IstioAmbient is `--istio-ambient`: an istio-remote Gateway per other cluster with HBONE
	// gateways (in istio-system), and the ambient ServiceEntries and WorkloadEntries
	// (federation/istio.BuildAmbient). Needs the Gateway API Gateway CRD and Istio's CRDs.
	IstioAmbient bool
}

// Options configures the federation.
type Options struct {
	Clusters []ClusterSpec
	// Dir holds exports files and state; empty means a temporary directory removed on Close.
	Dir          string
	Prefix       string        // keyspace prefix, default records.DefaultPrefix
	HeartbeatTTL time.Duration // default 2s (short, so tests see staleness quickly)
	StaleGrace   time.Duration // default 10m
	PollInterval time.Duration // exports file poll interval, default 20ms
	// EtcdAddr is where etcd listens (default 127.0.0.1:0).
	EtcdAddr string
	// Health tunes every cluster's gateway health checker (zero: the defaults, 1s/500ms).
	Health health.Options
	// MinReassign is the xDS planner's damping (zero: the default 10s).
	MinReassign time.Duration
	// GatewayRoutesFromXDS makes each gateway take its routes from its own cluster's
	// federation xDS server (`meshfed gateway --federation`), as deployed; otherwise the
	// gateway reads the exports file directly.
	GatewayRoutesFromXDS bool
	// Trust gives every cluster a development CA for its trust domain (under Dir), runs
	// the trust component (dev bundle source, bundle files, SDS) and gives each gateway a
	// health certificate from its CA, so health checks are authenticated.
	Trust bool
	// DevCADir, with Trust, keeps every cluster's development CA in DevCADir/<trust
	// domain> (the layout of `meshfed trust dev-ca`, where tools such as `meshfed drill`
	// find them); empty: each under its cluster's directory.
	DevCADir string
	// Admin gives every cluster's federation an admin server (metrics, /readyz,
	// /debug/imports, /debug/xds) on the cluster's address.
	Admin bool
	Log   *slog.Logger
}

// Federation is a running set of simulated clusters.
type Federation struct {
	Opts     Options
	Etcd     *embedetcd.Server
	Clusters []*Cluster
	dir      string
	tmp      bool
	log      *slog.Logger
}

// Cluster is one simulated cluster.
type Cluster struct {
	Spec        ClusterSpec
	Index       int
	IP          string // the cluster's loopback address, 127.<10+i>.0.1
	ExportsPath string
	Client      *clientv3.Client
	Store       *store.Store
	// GatewayAddr is the gateway's HOST:PORT as other clusters dial it: its bound address,
	// or with ClusterSpec.GatewayFaults the fault proxy's (empty with NoGateway).
	GatewayAddr string
	Gateway     *eastwest.Gateway
	// Fault is the proxy in front of the gateway (with ClusterSpec.GatewayFaults).
	Fault *faultproxy.Proxy
	// XDSAddr is the federation's xDS address (kept across federation restarts).
	XDSAddr string
	// CA is the cluster's development CA and BundleDir where its federation writes the
	// federated bundles (<td>.pem, bundle-map.json); set with Options.Trust.
	CA        *devca.CA
	BundleDir string
	// AdminAddr is the federation's admin server (with Options.Admin).
	AdminAddr string
	// IstioMCPAddr is the federation's MCP listener for istiod (with ClusterSpec.IstioMCP;
	// kept across federation restarts) and IstioStateFile where it keeps the last state.
	IstioMCPAddr, IstioStateFile string

	f       *Federation
	mu      sync.Mutex
	agent   *agent.Agent
	reg     *prometheus.Registry // the running federation's metrics
	trust   *federate.Service
	fedStop context.CancelFunc
	fedDone chan error
	gw      *process.Process
	gwAddr  string // the gateway's own bound address (kept across restarts)
}

// ClusterIP is the loopback address of the i-th cluster.
func ClusterIP(i int) string { return fmt.Sprintf("127.%d.0.1", 10+i) }

// WorkloadIP is the loopback address of the j-th workload of the i-th cluster.
func WorkloadIP(i, j int) string { return fmt.Sprintf("127.%d.1.%d", 10+i, 1+j) }

// Start starts etcd and every cluster, and waits until each federation service is ready.
func Start(ctx context.Context, o Options) (*Federation, error) {
	if len(o.Clusters) == 0 {
		return nil, errors.New("harness: no clusters")
	}
	if o.Prefix == "" {
		o.Prefix = records.DefaultPrefix
	}
	if o.HeartbeatTTL == 0 {
		o.HeartbeatTTL = 2 * time.Second
	}
	if o.PollInterval == 0 {
		o.PollInterval = 20 * time.Millisecond
	}
	if o.EtcdAddr == "" {
		o.EtcdAddr = "127.0.0.1:0"
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	f := &Federation{Opts: o, dir: o.Dir, log: o.Log}
	if f.dir == "" {
		d, err := os.MkdirTemp("", "meshfed-harness-")
		if err != nil {
			return nil, err
		}
		f.dir, f.tmp = d, true
	}
	etcd, err := embedetcd.Start(ctx, embedetcd.Config{ClientAddr: o.EtcdAddr, DataDir: filepath.Join(f.dir, "etcd"), NoFsync: true, LogLevel: "fatal"})
	if err != nil {
		f.Close()
		return nil, err
	}
	f.Etcd = etcd
	for i, spec := range o.Clusters {
		c, err := f.addCluster(ctx, i, spec)
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("cluster %s: %w", spec.Name, err)
		}
		f.Clusters = append(f.Clusters, c)
	}
	for _, c := range f.Clusters {
		if err := c.waitReady(ctx); err != nil {
			f.Close()
			return nil, err
		}
	}
	return f, nil
}

func (s *ClusterSpec) defaults() {
	if s.Region == "" {
		s.Region = "region-1"
	}
	if s.Zone == "" {
		s.Zone = s.Region + "-a"
	}
	if s.Network == "" {
		s.Network = "net-" + s.Name
	}
	if s.TrustDomain == "" {
		s.TrustDomain = s.Name + ".meshfed.test"
	}
}

func (f *Federation) addCluster(ctx context.Context, i int, spec ClusterSpec) (*Cluster, error) {
	spec.defaults()
	c := &Cluster{Spec: spec, Index: i, IP: ClusterIP(i), f: f}
	dir := filepath.Join(f.dir, spec.Name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	c.ExportsPath = filepath.Join(dir, "exports.yaml")
	content := spec.Exports
	if content == "" {
		content = "services: []\n"
	}
	if err := c.SetExports(content); err != nil {
		return nil, err
	}
	// One etcd client per simulated cluster, as separate processes would have.
	cli, err := store.Dial(ctx, store.Config{Endpoints: f.Etcd.Clients, Prefix: f.Opts.Prefix})
	if err != nil {
		return nil, err
	}
	c.Client = cli
	c.Store, err = store.New(cli, f.Opts.Prefix, f.log.With("cluster", spec.Name))
	if err != nil {
		return nil, err
	}
	if f.Opts.Trust {
		c.BundleDir = filepath.Join(dir, "bundles")
		caDir := filepath.Join(dir, "ca")
		if f.Opts.DevCADir != "" {
			caDir = f.Opts.DevCADir
		}
		c.CA, err = devca.Init(caDir, spec.TrustDomain, devca.Options{})
		if err != nil {
			return nil, fmt.Errorf("dev CA: %w", err)
		}
	}
	if spec.ShareTrustDomainWith != "" && !spec.NoJoin {
		if err := c.join(ctx); err != nil {
			return nil, err
		}
	}
	if err := c.StartFederation(ctx); err != nil {
		return nil, err
	}
	if !spec.NoGateway {
		if err := c.StartGateway(ctx); err != nil {
			return nil, err
		}
	}
	if !spec.NoJoin {
		if err := c.join(ctx); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// join writes the cluster record (what `meshfed join` does).
func (c *Cluster) join(ctx context.Context) error {
	gws := []string{c.GatewayAddr}
	if c.GatewayAddr == "" {
		gws = []string{net.JoinHostPort(c.IP, "15443")}
	}
	rec := &records.Cluster{Name: c.Spec.Name, Network: c.Spec.Network, Region: c.Spec.Region, Zone: c.Spec.Zone,
		TrustDomain: c.Spec.TrustDomain, Gateways: gws, HBONEGateways: c.Spec.HBONEGateways,
		SharesTrustDomainWith: c.Spec.ShareTrustDomainWith, JoinedAt: time.Now().UTC()}
	_, err := store.Modify[records.Cluster](ctx, c.Store, c.Store.KS.Cluster(c.Spec.Name), func(*records.Cluster) (*records.Cluster, error) {
		return rec, nil
	})
	return err
}

// SetExports replaces the cluster's exports file atomically (internal/atomicfile).
func (c *Cluster) SetExports(yaml string) error {
	return atomicfile.Write(c.ExportsPath, []byte(yaml), 0o644)
}

// Federation is the cluster's running federation service (nil while stopped).
func (c *Cluster) Federation() *service.Service {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.agent == nil {
		return nil
	}
	return c.agent.Service
}

// Agent is the cluster's running federation process (nil while stopped).
func (c *Cluster) Agent() *agent.Agent {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.agent
}

// Metrics is the running federation process's metrics registry (a new one on each
// StartFederation; nil while stopped).
func (c *Cluster) Metrics() prometheus.Gatherer {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.agent == nil {
		return nil
	}
	return c.reg
}

// StartFederation starts the cluster's federation process: service, health checker,
// xDS server (on the cluster's address; a restart reuses the port) and, with
// Options.Trust, the trust component.
func (c *Cluster) StartFederation(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.agent != nil {
		return errors.New("federation already running")
	}
	log := c.f.log
	reg := prometheus.NewRegistry()
	xdsAddr := c.XDSAddr
	if xdsAddr == "" {
		xdsAddr = net.JoinHostPort(c.IP, "0")
	}
	var tsvc *federate.Service
	if c.CA != nil {
		src, err := source.Parse("dev:"+filepath.Dir(c.CA.Dir()), c.Spec.TrustDomain, source.Options{Log: log, Poll: 100 * time.Millisecond, DevCADir: filepath.Dir(c.CA.Dir())})
		if err != nil {
			return fmt.Errorf("trust source: %w", err)
		}
		tsvc, err = federate.New(federate.Config{Cluster: c.Spec.Name, TrustDomain: c.Spec.TrustDomain, Source: src,
			BundleDir: c.BundleDir, Store: c.Store, Log: log.With("cluster", c.Spec.Name), Registry: reg, RetryInterval: 200 * time.Millisecond,
			Endpoint: c.Spec.BundleEndpoint})
		if err != nil {
			return fmt.Errorf("trust: %w", err)
		}
	}
	var adm *admin.Server
	if c.f.Opts.Admin {
		adm = admin.New(log)
		adminAddr := c.AdminAddr
		if adminAddr == "" {
			adminAddr = net.JoinHostPort(c.IP, "0")
		}
		if err := adm.Listen(adminAddr); err != nil {
			return err
		}
		c.AdminAddr = adm.Addr()
		reg = adm.Registry
	}
	var istioOpts istio.Options
	if c.Spec.IstioMCP {
		istioOpts.Listen = c.IstioMCPAddr
		if istioOpts.Listen == "" {
			istioOpts.Listen = net.JoinHostPort(c.IP, "0")
		}
		if c.IstioStateFile == "" {
			c.IstioStateFile = filepath.Join(filepath.Dir(c.ExportsPath), "istio-state.json")
		}
		istioOpts.StateFile = c.IstioStateFile
		istioOpts.IstiodXDS = c.Spec.IstiodXDS
	}
	ag, err := agent.New(agent.Config{
		IstioMCP: istioOpts,
		Admin:    adm,
		Cluster:  c.Spec.Name, Store: c.Store, HeartbeatTTL: c.f.Opts.HeartbeatTTL, StaleGrace: c.f.Opts.StaleGrace,
		Source: &file.Source{Cluster: c.Spec.Name, Path: c.ExportsPath, Interval: c.f.Opts.PollInterval, Log: log.With("cluster", c.Spec.Name)},
		XDS:    xds.Options{Listen: xdsAddr, MinReassign: c.f.Opts.MinReassign},
		Health: c.f.Opts.Health, Trust: tsvc, Log: log, Registry: reg,
	})
	if err != nil {
		return err
	}
	c.XDSAddr = ag.XDS.Addr()
	if ag.Istio != nil {
		c.IstioMCPAddr = ag.Istio.Addr()
	}
	var importer *kube.Importer
	if c.Spec.Kube != nil {
		if importer, err = c.kubeImporter(ag, log); err != nil {
			return err
		}
	}
	rctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	if adm != nil {
		go func() { _ = adm.Serve(rctx) }()
	}
	go func() {
		imported := make(chan struct{})
		if importer != nil {
			go func() { _ = importer.Run(rctx); close(imported) }()
		} else {
			close(imported)
		}
		err := ag.Run(rctx)
		<-imported
		done <- err
	}()
	c.agent, c.reg, c.fedStop, c.fedDone, c.trust = ag, reg, cancel, done, tsvc
	return nil
}

// kubeImporter wires the Kubernetes importer to the agent's views, as cmd/meshfed's
// federation does with --kubeconfig (and --istio-ambient).
func (c *Cluster) kubeImporter(ag *agent.Agent, log *slog.Logger) (*kube.Importer, error) {
	cl, err := kube.ClientsFor(c.Spec.Kube.Config)
	if err != nil {
		return nil, err
	}
	cfg := kube.ImporterConfig{Cluster: c.Spec.Name, Kube: cl.Kube, MCS: cl.MCS, Dynamic: cl.Dynamic,
		Log: log.With("cluster", c.Spec.Name, "part", "kube-importer")}
	if c.Spec.Kube.IstioAmbient {
		cfg.IstioRemoteGateways = &kube.IstioRemoteGateways{}
		cfg.IstioAmbientEntries = &kube.IstioAmbientEntries{Build: func(v *view.View, self string, networks map[string]string) (map[string][]*mcp.Resource, error) {
			return istio.BuildAmbient(v, self, networks, istio.BuildOptions{})
		}}
	}
	im, err := kube.NewImporter(cfg)
	if err != nil {
		return nil, err
	}
	ag.OnView(im.Update)
	return im, nil
}

// BundleEndpointAddr is the bound address of the cluster's SPIFFE bundle endpoint
// (ClusterSpec.BundleEndpoint; "" until it listens or without one).
func (c *Cluster) BundleEndpointAddr() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.trust == nil {
		return ""
	}
	return c.trust.EndpointAddr()
}

// StopFederation stops the federation process (its heartbeat then expires after the
// TTL; the gateway keeps serving: static stability).
func (c *Cluster) StopFederation() error {
	c.mu.Lock()
	stop, done := c.fedStop, c.fedDone
	c.agent, c.reg, c.fedStop, c.fedDone = nil, nil, nil, nil
	c.mu.Unlock()
	if stop == nil {
		return nil
	}
	stop()
	return <-done
}

func (c *Cluster) waitReady(ctx context.Context) error {
	deadline := time.Now().Add(2 * time.Minute)
	for {
		ag := c.Agent()
		if ag == nil {
			return fmt.Errorf("cluster %s: federation not running", c.Spec.Name)
		}
		err := ag.Ready()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("cluster %s: federation not ready after 2m: %w", c.Spec.Name, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// WaitReady waits until the cluster's federation service is ready.
func (c *Cluster) WaitReady(ctx context.Context) error { return c.waitReady(ctx) }

// StartGateway starts the east-west gateway on the cluster's address (the first start
// picks a free port; restarts reuse it). Its routes come from the federation's xDS with
// Options.GatewayRoutesFromXDS, else from the exports file; with Options.Trust its health
// certificate is an SVID of the cluster's trust domain.
func (c *Cluster) StartGateway(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gw != nil {
		return errors.New("gateway already running")
	}
	addr := c.gwAddr
	if addr == "" {
		addr = net.JoinHostPort(c.IP, "0")
	}
	cfg := process.Config{
		Gateway: eastwest.Config{Cluster: c.Spec.Name, Log: c.f.log.With("cluster", c.Spec.Name, "part", "gateway"), DrainTimeout: 2 * time.Second},
		Listen:  addr,
		Exports: c.ExportsPath, ExportsPoll: c.f.Opts.PollInterval,
	}
	if c.CA != nil {
		svid, err := c.CA.Issue(devca.IssueRequest{ID: "spiffe://" + c.Spec.TrustDomain + "/ns/meshfed-system/sa/gateway", DNSNames: []string{names.HealthSNI}})
		if err != nil {
			return fmt.Errorf("gateway health certificate: %w", err)
		}
		cfg.Gateway.HealthCert = svid.TLSCertificate()
	}
	if c.f.Opts.GatewayRoutesFromXDS && !c.Spec.GatewayFromFile {
		cfg.Exports = ""
		cfg.Federation = &xdsroutes.Config{Address: c.XDSAddr, Host: "harness",
			BackoffBase: 50 * time.Millisecond, BackoffMax: time.Second, Log: c.f.log.With("cluster", c.Spec.Name, "part", "gateway-xds")}
	}
	p, err := process.Start(context.Background(), cfg)
	if err != nil {
		return err
	}
	c.Gateway, c.GatewayAddr, c.gw, c.gwAddr = p.Gateway(), p.Addr(), p, p.Addr()
	if c.Spec.GatewayFaults {
		if c.Fault == nil {
			if c.Fault, err = faultproxy.New(net.JoinHostPort(c.IP, "0"), p.Addr()); err != nil {
				_ = p.Close()
				return err
			}
		}
		c.Fault.SetTarget(p.Addr())
		c.GatewayAddr = c.Fault.Addr()
	}
	return nil
}

// StopGateway stops the gateway (graceful drain, bounded by its 2s drain timeout).
func (c *Cluster) StopGateway() error {
	c.mu.Lock()
	p := c.gw
	c.gw, c.Gateway = nil, nil
	c.mu.Unlock()
	if p == nil {
		return nil
	}
	return p.Close()
}

// Cluster returns the named cluster, or nil.
func (f *Federation) Cluster(name string) *Cluster {
	for _, c := range f.Clusters {
		if c.Spec.Name == name {
			return c
		}
	}
	return nil
}

// Dir is the federation's state directory.
func (f *Federation) Dir() string { return f.dir }

// Close stops everything and removes a temporary directory.
func (f *Federation) Close() {
	for _, c := range f.Clusters {
		_ = c.StopFederation()
		_ = c.StopGateway()
		if c.Fault != nil {
			c.Fault.Close()
		}
		if c.Client != nil {
			c.Client.Close()
		}
	}
	if f.Etcd != nil {
		f.Etcd.Close()
	}
	if f.tmp {
		_ = os.RemoveAll(f.dir)
	}
}
