package testbed

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/meshfed/meshfed/api/names"
	"github.com/meshfed/meshfed/harness/devup"
	"github.com/meshfed/meshfed/internal/atomicfile"
	"github.com/meshfed/meshfed/internal/waitfor"
	"github.com/meshfed/meshfed/trust/devca"
)

// Namespace and port of the demo services every testbed cluster exports.
const (
	ServiceNamespace = "demo"
	ServicePort      = 8443
	workloadPort     = 19443
	fedAdminPort     = 15001
	gwAdminPort      = 15000
	xdsAddr          = "127.0.0.1:15010"
)

// ClusterSpec is one simulated cluster.
type ClusterSpec struct {
	Name, Region, Zone string
	// Exports are the services (namespace demo, port 8443) its workload serves and it
	// exports.
	Exports []string
	// Calls is the service its proxyless gRPC client calls ("" for no client).
	Calls string
}

// DefaultClusters: three clusters, each the first choice (priority 0) of another's
// client, so that every fault has someone who must fail over:
//   - east's client calls echo (west and north export it): west (same region), then north;
//   - west's client calls alpha (east and north): east (same region), then north;
//   - north's client calls beta (east and west; no exporter in region-2): east, then west.
func DefaultClusters() []ClusterSpec {
	return []ClusterSpec{
		{Name: "east", Region: "region-1", Zone: "region-1a", Exports: []string{"alpha", "beta"}, Calls: "echo"},
		{Name: "west", Region: "region-1", Zone: "region-1b", Exports: []string{"echo", "beta"}, Calls: "alpha"},
		{Name: "north", Region: "region-2", Zone: "region-2a", Exports: []string{"echo", "alpha"}, Calls: "beta"},
	}
}

// Options of a testbed.
type Options struct {
	Dir      string // state and logs (required)
	Bin      string // the meshfed binary (required; see Build)
	Clusters []ClusterSpec
	// EtcdMembers is the size of the etcd cluster (default 3, each in its own namespace).
	EtcdMembers int
	// HeartbeatTTL of every federation (default 4s: staleness shows within seconds).
	HeartbeatTTL time.Duration
	// MinReassign is the planners' damping (default 3s, as `make run`; production 10s):
	// it delays only the return of a cluster, never its removal.
	MinReassign time.Duration
	// FederationArgs and GatewayArgs are appended to every federation's and gateway's
	// flags (health tuning, for instance).
	FederationArgs, GatewayArgs []string
	// ClientInterval between two calls of each client (default 100ms).
	ClientInterval time.Duration
	// Logf receives progress lines (default: none).
	Logf func(format string, args ...any)
}

// Testbed is a running clusterset on real networks.
type Testbed struct {
	Opts     Options
	Net      *Net
	Etcd     []*EtcdMember
	Clusters []*Cluster
	// EtcdEndpoints is the --etcd-endpoints value of every member.
	EtcdEndpoints string

	tdCluster map[string]string
}

// EtcdMember is one etcd member (`meshfed etcd --initial-cluster ...`) in its namespace.
type EtcdMember struct {
	Name    string
	Node    *Node
	DataDir string
	Proc    *Proc
	args    []string
	tb      *Testbed
}

// Cluster is one simulated cluster: a namespace with its federation service, east-west
// gateway, demo workload and (with Spec.Calls) a proxyless gRPC client.
type Cluster struct {
	Spec        ClusterSpec
	TrustDomain string
	Node        *Node
	Dir         string
	BundleDir   string
	AdminAddr   string // the federation's admin server (reachable from the host)
	GatewayAddr string

	Federation, Gateway, Workload, Client *Proc
	Calls                                 *Calls

	fedArgs, gwArgs, wlArgs, clientArgs, clientEnv []string
	tb                                             *Testbed
}

func (o *Options) defaults() error {
	if o.Dir == "" || o.Bin == "" {
		return errors.New("testbed: Dir and Bin are required")
	}
	if len(o.Clusters) == 0 {
		o.Clusters = DefaultClusters()
	}
	if o.EtcdMembers == 0 {
		o.EtcdMembers = 3
	}
	if o.HeartbeatTTL == 0 {
		o.HeartbeatTTL = 4 * time.Second
	}
	if o.MinReassign == 0 {
		o.MinReassign = 3 * time.Second
	}
	if o.ClientInterval == 0 {
		o.ClientInterval = 100 * time.Millisecond
	}
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
	return nil
}

// Start builds the network, starts etcd, joins and starts every cluster, and returns once
// every client is served by its first choice. On error everything started is removed.
func Start(ctx context.Context, o Options) (tb *Testbed, err error) {
	if err := o.defaults(); err != nil {
		return nil, err
	}
	nw, err := NewNet(ctx)
	if err != nil {
		return nil, err
	}
	tb = &Testbed{Opts: o, Net: nw, tdCluster: map[string]string{}}
	defer func() {
		if err != nil {
			tb.Close()
			tb = nil
		}
	}()
	o.Logf("testbed: slot %d, bridge %s, host %s, state in %s", nw.Slot, nw.Bridge, nw.HostIP, o.Dir)
	var etcdIPs, clusterIPs, peerURLs []string
	for i := 0; i < o.EtcdMembers; i++ {
		nd, err := nw.AddNode(ctx, fmt.Sprintf("etcd%d", i), 11+i)
		if err != nil {
			return nil, err
		}
		m := &EtcdMember{Name: fmt.Sprintf("m%d", i), Node: nd, DataDir: filepath.Join(o.Dir, nd.Name, "data"), tb: tb}
		tb.Etcd = append(tb.Etcd, m)
		etcdIPs = append(etcdIPs, nd.IP)
		peerURLs = append(peerURLs, fmt.Sprintf("%s=http://%s", m.Name, net.JoinHostPort(nd.IP, fmt.Sprint(EtcdPeerPort))))
	}
	for i, spec := range o.Clusters {
		nd, err := nw.AddNode(ctx, spec.Name, 21+i)
		if err != nil {
			return nil, err
		}
		c := &Cluster{Spec: spec, TrustDomain: spec.Name + ".meshfed.test", Node: nd, Dir: filepath.Join(o.Dir, spec.Name), tb: tb,
			AdminAddr: net.JoinHostPort(nd.IP, fmt.Sprint(fedAdminPort)), GatewayAddr: net.JoinHostPort(nd.IP, fmt.Sprint(GatewayPort))}
		c.BundleDir = filepath.Join(c.Dir, "bundles")
		tb.Clusters = append(tb.Clusters, c)
		tb.tdCluster[c.TrustDomain] = spec.Name
		clusterIPs = append(clusterIPs, nd.IP)
	}
	var eps []string
	for _, m := range tb.Etcd {
		others := without(etcdIPs, m.Node.IP)
		if err := m.Node.nft(ctx, etcdRules(nw.HostIP, clusterIPs, others)); err != nil {
			return nil, err
		}
		eps = append(eps, "http://"+net.JoinHostPort(m.Node.IP, fmt.Sprint(EtcdPort)))
	}
	tb.EtcdEndpoints = strings.Join(eps, ",")
	for _, c := range tb.Clusters {
		if err := c.Node.nft(ctx, clusterRules(nw.HostIP, without(clusterIPs, c.Node.IP), etcdIPs)); err != nil {
			return nil, err
		}
	}
	for _, m := range tb.Etcd {
		m.args = []string{"etcd", "--name", m.Name, "--data-dir", m.DataDir,
			"--listen", net.JoinHostPort(m.Node.IP, fmt.Sprint(EtcdPort)), "--peer-listen", net.JoinHostPort(m.Node.IP, fmt.Sprint(EtcdPeerPort)),
			"--initial-cluster", strings.Join(peerURLs, ","), "--initial-cluster-token", fmt.Sprintf("testbed-%d", nw.Slot),
			"--etcd-log-level", "error", "--log-level", "warn"}
		if err := m.Start(); err != nil {
			return nil, err
		}
	}
	if err := tb.waitEtcd(ctx, 60*time.Second); err != nil {
		return nil, err
	}
	o.Logf("testbed: etcd (%d members) at %s", len(tb.Etcd), tb.EtcdEndpoints)
	for _, c := range tb.Clusters {
		if err := c.prepare(ctx); err != nil {
			return nil, fmt.Errorf("cluster %s: %w", c.Spec.Name, err)
		}
	}
	for _, c := range tb.Clusters {
		if err := c.StartFederation(); err != nil {
			return nil, err
		}
		if err := c.StartGateway(); err != nil {
			return nil, err
		}
		if c.Workload, err = c.Node.Start("workload", c.Dir, o.Bin, c.wlArgs, ProcOptions{}); err != nil {
			return nil, err
		}
	}
	for _, c := range tb.Clusters {
		if err := c.waitReady(ctx, 90*time.Second); err != nil {
			return nil, err
		}
	}
	for _, c := range tb.Clusters {
		if err := c.StartClient(); err != nil {
			return nil, err
		}
	}
	for _, c := range tb.Clusters {
		if c.Spec.Calls == "" {
			continue
		}
		first := tb.Order(c.Spec.Name, c.Spec.Calls)[0]
		if err := c.Calls.WaitServedBy(ctx, first, time.Now().Add(-time.Hour), 90*time.Second); err != nil {
			return nil, fmt.Errorf("%s's client never served by %s: %w\n%s", c.Spec.Name, first, err, c.Client.Tail(2000))
		}
	}
	o.Logf("testbed: %d clusters up, every client served by its first choice", len(tb.Clusters))
	return tb, nil
}

func without(all []string, x string) []string {
	var out []string
	for _, a := range all {
		if a != x {
			out = append(out, a)
		}
	}
	return out
}

// Start starts the member (again, after Kill: it rejoins from its data dir).
func (m *EtcdMember) Start() error {
	p, err := m.Node.Start("etcd-"+m.Name, filepath.Dir(m.DataDir), m.tb.Opts.Bin, m.args, ProcOptions{})
	if err != nil {
		return err
	}
	m.Proc = p
	return nil
}

// Kill stops the member with SIGKILL.
func (m *EtcdMember) Kill() { m.Proc.Kill() }

// EtcdClient is a client of the whole etcd cluster, from the host.
func (tb *Testbed) EtcdClient() (*clientv3.Client, error) {
	return clientv3.New(clientv3.Config{Endpoints: strings.Split(tb.EtcdEndpoints, ","), DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
}

func (tb *Testbed) waitEtcd(ctx context.Context, d time.Duration) error {
	cli, err := tb.EtcdClient()
	if err != nil {
		return err
	}
	defer cli.Close()
	var last error
	if waitfor.Poll(d, func() bool {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		_, last = cli.Put(cctx, "/testbed/ready", time.Now().String())
		return last == nil
	}) {
		return nil
	}
	var tails []string
	for _, m := range tb.Etcd {
		tails = append(tails, m.Proc.Tail(1000))
	}
	return fmt.Errorf("etcd cluster not writable within %v: %v\n%s", d, last, strings.Join(tails, "\n"))
}

// prepare makes the cluster's CA and certificates, joins it, writes its exports and the
// flags of its processes.
func (c *Cluster) prepare(ctx context.Context) error {
	o := c.tb.Opts
	caDir := filepath.Join(c.Dir, "ca")
	ca, err := devca.Init(caDir, c.TrustDomain, devca.Options{SVIDTTL: 24 * time.Hour})
	if err != nil {
		return err
	}
	issue := func(name, id string, dns ...string) (cert, key string, err error) {
		svid, err := ca.Issue(devca.IssueRequest{ID: id, DNSNames: dns})
		if err != nil {
			return "", "", err
		}
		cert, key = filepath.Join(c.Dir, name+".pem"), filepath.Join(c.Dir, name+"-key.pem")
		return cert, key, svid.WriteFiles(cert, key)
	}
	gwCert, gwKey, err := issue("gateway", "spiffe://"+c.TrustDomain+"/ns/meshfed-system/sa/gateway", names.HealthSNI)
	if err != nil {
		return err
	}
	wlCert, wlKey, err := issue("workload", "spiffe://"+c.TrustDomain+"/ns/"+ServiceNamespace+"/sa/workload")
	if err != nil {
		return err
	}
	clCert, clKey, err := issue("client", "spiffe://"+c.TrustDomain+"/ns/"+ServiceNamespace+"/sa/client")
	if err != nil {
		return err
	}
	if out, err := exec.CommandContext(ctx, o.Bin, "join", "--cluster", c.Spec.Name, "--region", c.Spec.Region, "--zone", c.Spec.Zone,
		"--network", "net-"+c.Spec.Name, "--trust-domain", c.TrustDomain, "--gateway", c.GatewayAddr,
		"--etcd-endpoints", c.tb.EtcdEndpoints, "--log-level", "warn").CombinedOutput(); err != nil {
		return fmt.Errorf("meshfed join: %v: %s", err, out)
	}
	if err := c.SetExports(c.Spec.Exports); err != nil {
		return err
	}
	c.fedArgs = append([]string{"federation", "--cluster", c.Spec.Name, "--exports", c.exportsPath(), "--exports-poll-interval", "200ms",
		"--etcd-endpoints", c.tb.EtcdEndpoints, "--admin", c.AdminAddr, "--xds-listen", xdsAddr,
		"--heartbeat-ttl", o.HeartbeatTTL.String(), "--xds-min-reassign", o.MinReassign.String(),
		"--trust-domain", c.TrustDomain, "--bundle-source", "dev", "--dev-ca-dir", caDir, "--bundle-dir", c.BundleDir,
		"--bundle-poll-interval", "200ms", "--log-level", "info"}, o.FederationArgs...)
	c.gwArgs = append([]string{"gateway", "--cluster", c.Spec.Name, "--listen", c.GatewayAddr,
		"--admin", net.JoinHostPort(c.Node.IP, fmt.Sprint(gwAdminPort)), "--federation", xdsAddr,
		"--health-cert", gwCert, "--health-key", gwKey, "--drain-timeout", "2s", "--log-level", "info"}, o.GatewayArgs...)
	c.wlArgs = []string{"dev", "workload", "--listen", net.JoinHostPort(c.Node.IP, fmt.Sprint(workloadPort)),
		"--cert", wlCert, "--key", wlKey, "--bundle-dir", c.BundleDir, "--log-level", "warn"}
	if c.Spec.Calls != "" {
		bootstrap := filepath.Join(c.Dir, "bootstrap.json")
		if err := devup.WriteClientBootstrap(bootstrap, devup.ClientBootstrap{XDSAddr: xdsAddr, NodeID: c.Spec.Name + "~testbed-client~" + c.Spec.Calls,
			Cluster: c.Spec.Name, CertFile: clCert, KeyFile: clKey, BundleDir: c.BundleDir, TrustDomain: c.TrustDomain}); err != nil {
			return err
		}
		c.clientArgs = []string{"dev", "call", "--target", "xds:///" + names.ListenerName(ServiceNamespace, c.Spec.Calls, ServicePort),
			"--interval", o.ClientInterval.String(), "--log-level", "warn"}
		c.clientEnv = devup.ClientEnv(bootstrap)
	}
	return nil
}

func (c *Cluster) exportsPath() string { return filepath.Join(c.Dir, "exports.yaml") }

// SetExports rewrites the cluster's exports file (atomically): each service served by the
// cluster's workload on port 8443.
func (c *Cluster) SetExports(services []string) error {
	var b strings.Builder
	b.WriteString("services:\n")
	for _, s := range services {
		fmt.Fprintf(&b, "  - name: %s\n    namespace: %s\n    ports: [{name: grpc, port: %d, targetPort: %d, appProtocol: grpc}]\n    endpoints: [{address: %s}]\n",
			s, ServiceNamespace, ServicePort, workloadPort, c.Node.IP)
	}
	if len(services) == 0 {
		b.WriteString("  []\n")
	}
	if err := os.MkdirAll(c.Dir, 0o755); err != nil {
		return err
	}
	return atomicfile.Write(c.exportsPath(), []byte(b.String()), 0o644)
}

// StartFederation starts the cluster's federation service (again, after a stop).
func (c *Cluster) StartFederation() (err error) {
	c.Federation, err = c.Node.Start("federation", c.Dir, c.tb.Opts.Bin, c.fedArgs, ProcOptions{})
	return err
}

// StartGateway starts the cluster's gateway (again, after a stop).
func (c *Cluster) StartGateway() (err error) {
	c.Gateway, err = c.Node.Start("gateway", c.Dir, c.tb.Opts.Bin, c.gwArgs, ProcOptions{})
	return err
}

// StartClient starts the cluster's client (no-op without Spec.Calls); its calls are
// recorded in c.Calls.
func (c *Cluster) StartClient() (err error) {
	if c.Spec.Calls == "" {
		return nil
	}
	if c.Calls == nil {
		c.Calls = newCalls(c.tb.tdCluster)
	}
	c.Client, err = c.Node.Start("client", c.Dir, c.tb.Opts.Bin, c.clientArgs, ProcOptions{Env: c.clientEnv, Lines: c.Calls.add})
	return err
}

// waitReady waits for the federation's and the gateway's /readyz and for the federated
// bundles of every cluster.
func (c *Cluster) waitReady(ctx context.Context, d time.Duration) error {
	var tds []string
	for _, o := range c.tb.Clusters {
		tds = append(tds, o.TrustDomain)
	}
	gwAdmin := net.JoinHostPort(c.Node.IP, fmt.Sprint(gwAdminPort))
	var why string
	ok := waitfor.Poll(d, func() bool {
		switch {
		case !c.Federation.Running():
			why = "the federation exited"
			return true
		case !c.Gateway.Running():
			why = "the gateway exited"
			return true
		case !c.Workload.Running():
			why = "the workload exited"
			return true
		}
		if code, err := httpGet(ctx, c.AdminAddr, "/readyz", nil); code != 200 {
			why = fmt.Sprintf("federation /readyz: %d %v", code, err)
			return false
		}
		if code, err := httpGet(ctx, gwAdmin, "/readyz", nil); code != 200 {
			why = fmt.Sprintf("gateway /readyz: %d %v", code, err)
			return false
		}
		if !devup.BundleMapHas(c.BundleDir, tds...) {
			why = "the federated bundles do not list every trust domain yet"
			return false
		}
		why = ""
		return true
	})
	if !ok || why != "" {
		return fmt.Errorf("cluster %s not ready within %v: %s\nfederation: %s\ngateway: %s", c.Spec.Name, d, why,
			c.Federation.Tail(1500), c.Gateway.Tail(1500))
	}
	return nil
}

// Cluster is the named cluster (nil if none).
func (tb *Testbed) Cluster(name string) *Cluster {
	for _, c := range tb.Clusters {
		if c.Spec.Name == name {
			return c
		}
	}
	return nil
}

// Order is the failover order of service as cluster from's clients get it with every
// cluster healthy: the exporters other than from, same region first, then by name (the
// planner's default rule; the testbed sets no policies).
func (tb *Testbed) Order(from, service string) []string {
	var region string
	if c := tb.Cluster(from); c != nil {
		region = c.Spec.Region
	}
	var same, rest []string
	for _, c := range tb.Clusters {
		if c.Spec.Name == from || !contains(c.Spec.Exports, service) {
			continue
		}
		if c.Spec.Region == region {
			same = append(same, c.Spec.Name)
		} else {
			rest = append(rest, c.Spec.Name)
		}
	}
	return append(same, rest...)
}

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}

// Close stops every process (clients first, etcd last) and removes the network.
func (tb *Testbed) Close() {
	var wg sync.WaitGroup
	stopAll := func(ps ...*Proc) {
		for _, p := range ps {
			if p != nil {
				wg.Add(1)
				go func() { defer wg.Done(); _ = p.Stop(5 * time.Second) }()
			}
		}
		wg.Wait()
	}
	for _, c := range tb.Clusters {
		stopAll(c.Client)
	}
	for _, c := range tb.Clusters {
		stopAll(c.Gateway, c.Federation, c.Workload)
	}
	for _, m := range tb.Etcd {
		stopAll(m.Proc)
	}
	if tb.Net != nil {
		tb.Net.Close()
	}
}
