package devup

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/meshfed/meshfed/api/names"
	"github.com/meshfed/meshfed/harness"
	"github.com/meshfed/meshfed/internal/ctxtime"
	"github.com/meshfed/meshfed/keyspace/records"
	"github.com/meshfed/meshfed/operator"
	"github.com/meshfed/meshfed/trust/devca"
)

// Options of the local federation.
type Options struct {
	// Dir holds state (etcd data, CAs, bundles, the client's bootstrap, logs); empty
	// means a temporary directory removed at the end.
	Dir string
	// EtcdAddr is the embedded etcd's client address (default 127.0.0.1:2379, or a free
	// port when that one is taken).
	EtcdAddr string
	// ClientCommand starts the demo client process; the bootstrap path is passed in its
	// environment (default: this executable, `dev call`).
	ClientCommand []string
	// DrillFor is how long the drill cordons west (default 8s).
	DrillFor time.Duration
	// MinReassign is the planners' damping (default 3s for the demo; 10s in production).
	MinReassign time.Duration
	// DevCADir keeps the clusters' development CAs in DevCADir/<trust domain>, where
	// `meshfed drill` finds the --from cluster's CA by default (`meshfed dev up` passes
	// .meshfed/dev-ca, the default of both); empty: under Dir.
	DevCADir string
	// DrillCommand is the command the story ends by printing (default "bin/meshfed").
	DrillCommand string
	// Stay keeps the federation running after the story until ctx ends.
	Stay bool
	Out  io.Writer
}

const (
	service = "echo"
	ns      = "demo"
	port    = 8443
)

// Run starts the local federation, tells the story, and stops everything cleanly when
// the story ends (or, with Stay, when ctx ends).
func Run(ctx context.Context, o Options) error {
	if o.Out == nil {
		o.Out = os.Stdout
	}
	if o.DrillFor == 0 {
		o.DrillFor = 8 * time.Second
	}
	if o.MinReassign == 0 {
		o.MinReassign = 3 * time.Second
	}
	dir := o.Dir
	if dir == "" {
		d, err := os.MkdirTemp("", "meshfed-dev-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		dir = d
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if o.EtcdAddr == "" {
		o.EtcdAddr = "127.0.0.1:2379"
		if ln, err := net.Listen("tcp", o.EtcdAddr); err != nil {
			o.EtcdAddr = "127.0.0.1:0"
		} else {
			ln.Close()
		}
	}
	if len(o.ClientCommand) == 0 {
		exe, err := os.Executable()
		if err != nil {
			return err
		}
		o.ClientCommand = []string{exe, "dev", "call"}
	}
	logPath := filepath.Join(dir, "meshfed.log")
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logFile.Close()
	s := &story{out: o.Out, start: time.Now()}
	s.say("Starting a local federation in %s (component logs: %s)", dir, logPath)

	f, err := harness.Start(ctx, harness.Options{
		Dir: dir, EtcdAddr: o.EtcdAddr, HeartbeatTTL: 10 * time.Second, PollInterval: 100 * time.Millisecond,
		MinReassign: o.MinReassign, GatewayRoutesFromXDS: true, Trust: true, Admin: true, DevCADir: o.DevCADir,
		Log: slog.New(slog.NewTextHandler(logFile, &slog.HandlerOptions{Level: slog.LevelInfo})),
		Clusters: []harness.ClusterSpec{
			{Name: "east", Region: "region-1", Zone: "region-1a", TrustDomain: "east.meshfed.local"},
			{Name: "west", Region: "region-1", Zone: "region-1b", TrustDomain: "west.meshfed.local"},
			{Name: "north", Region: "region-2", Zone: "region-2a", TrustDomain: "north.meshfed.local"},
		},
	})
	if err != nil {
		return fmt.Errorf("start the federation: %w", err)
	}
	defer func() {
		s.say("Stopping: gateways drain, federation services stop, etcd shuts down.")
		f.Close()
		s.say("Stopped cleanly.")
	}()
	etcd := f.Etcd.Clients[0]
	s.say("etcd (embedded) serves the clusterset's keyspace at %s", etcd)
	for _, c := range f.Clusters {
		s.say("  cluster %-5s %s: gateway %s, xDS %s, admin http://%s, trust domain %s (development CA)",
			c.Spec.Name, c.Spec.Region, c.GatewayAddr, c.XDSAddr, c.AdminAddr, c.Spec.TrustDomain)
	}
	east, west, north := f.Cluster("east"), f.Cluster("west"), f.Cluster("north")

	// Workloads: the demo service in west and north, exported through their exports files.
	var wls []*workload
	defer func() {
		for _, w := range wls {
			w.stop()
		}
	}()
	for i, c := range []*harness.Cluster{west, north} {
		id := fmt.Sprintf("spiffe://%s/ns/%s/sa/%s", c.Spec.TrustDomain, ns, service)
		w, err := startWorkload(harness.WorkloadIP(c.Index, i)+":0", c.CA, id, c.BundleDir)
		if err != nil {
			return err
		}
		wls = append(wls, w)
		host, p, _ := net.SplitHostPort(w.addr)
		if err := c.SetExports(fmt.Sprintf("services:\n  - name: %s\n    namespace: %s\n    ports: [{name: grpc, port: %d, targetPort: %s, appProtocol: grpc}]\n    endpoints: [{address: %s}]\n",
			service, ns, port, p, host)); err != nil {
			return err
		}
		s.say("%s exports %s/%s: a gRPC server at %s with identity %s", c.Spec.Name, ns, service, w.addr, id)
	}
	if err := waitFor(ctx, 60*time.Second, func() bool {
		p := east.Agent()
		if p == nil {
			return false
		}
		v := p.Service.View().Services[ns+"/"+service]
		return v != nil && v.Exporter("west") != nil && v.Exporter("north") != nil
	}); err != nil {
		return fmt.Errorf("east never imported %s/%s from west and north: %w", ns, service, err)
	}
	s.say("east imports %s/%s from west and north (through etcd); its xDS plan: %s", ns, service, planOf(east))

	// The client in east: a separate grpc-go process that only has an xDS bootstrap.
	bootstrap, err := writeClientFiles(filepath.Join(dir, "east", "client"), east)
	if err != nil {
		return err
	}
	if err := waitFor(ctx, 60*time.Second, func() bool { return BundleMapHas(east.BundleDir, "west.meshfed.local", "north.meshfed.local") }); err != nil {
		return fmt.Errorf("east's federated bundles never listed west and north: %w", err)
	}
	s.say("east's federation wrote the federated trust bundles to %s (bundle-map.json, one PEM per trust domain)", east.BundleDir)
	target := "xds:///" + names.ListenerName(ns, service, port)
	cl, err := startClient(ctx, o.ClientCommand, bootstrap, target)
	if err != nil {
		return err
	}
	defer cl.stop()
	s.say("A proxyless gRPC client in east calls %s every 100ms (bootstrap %s)", target, bootstrap)

	tdCluster := map[string]string{}
	for _, c := range f.Clusters {
		tdCluster[c.Spec.TrustDomain] = c.Spec.Name
	}
	first, err := cl.waitServed(ctx, tdCluster, "west", 60*time.Second)
	if err != nil {
		return fmt.Errorf("no call from east reached west: %w", err)
	}
	s.say("Calls are served by west, the nearest healthy cluster (same region as east):")
	s.say("  east's client  --mTLS-->  west's gateway %s (routes by SNI %s, never terminates TLS)", west.GatewayAddr, names.ServiceSNI(ns, service, port))
	s.say("  -->  west's workload %s, identity %s, verified by east through west's federated bundle", first.Workload, first.SPIFFEID)

	// Step 1: a failover drill of west.
	s.say("")
	s.say("Failover drill: west is cordoned for %v (drills/<id> on its own 10s lease: if this process died, the cordon would end by itself).", o.DrillFor)
	st := east.Store
	d := &records.Drill{ID: fmt.Sprintf("devup-%d", time.Now().Unix()), Cluster: "west", Until: time.Now().Add(o.DrillFor + 10*time.Second),
		StartedBy: "meshfed dev up", StartedAt: time.Now().UTC()}
	t0 := time.Now()
	cordon, err := operator.StartCordon(ctx, st, d, 10*time.Second)
	if err != nil {
		return err
	}
	away := cl.watch(ctx, s, tdCluster, t0, o.DrillFor)
	if err := cordon.Lift(ctx); err != nil {
		return err
	}
	t1 := time.Now()
	if o.DrillFor >= o.MinReassign {
		s.say("Cordon lifted; west is eligible again (the planner makes at most one reassignment per %v, and the last one was the cordon, %v ago: it moves back at once).", o.MinReassign, o.DrillFor)
	} else {
		s.say("Cordon lifted; west is eligible again (the planner makes at most one reassignment per %v: it moves back when that has passed since the cordon).", o.MinReassign)
	}
	back, errs := cl.waitBack(ctx, s, tdCluster, "west", t1, o.MinReassign+15*time.Second)
	s.say("Drill result: traffic left west %s after the cordon, came back %s after the lift; %d failed calls.", away, back, errs)

	// Step 2: west's gateway goes dark.
	s.say("")
	s.say("Outage: west's east-west gateway stops (it drains: its health name says \"draining\" at once).")
	t2 := time.Now()
	if err := west.StopGateway(); err != nil {
		return err
	}
	away2 := cl.watch(ctx, s, tdCluster, t2, 5*time.Second)
	s.say("West's gateway starts again.")
	if err := west.StartGateway(ctx); err != nil {
		return err
	}
	t3 := time.Now()
	back2, errs2 := cl.waitBack(ctx, s, tdCluster, "west", t3, o.MinReassign+15*time.Second)
	s.say("Outage result: traffic left west %s after its gateway stopped, came back %s after it returned; %d failed calls.", away2, back2, errs2)
	_ = north

	s.say("")
	s.say("Done. What happened: east's federation service planned %s/%s as west (priority 0, same region) then north;", ns, service)
	s.say("the drill and the outage moved traffic to north within the times above, and back when west returned.")
	if !o.Stay {
		return nil
	}
	bin := o.DrillCommand
	if bin == "" {
		bin = "bin/meshfed"
	}
	s.say("")
	s.say("The federation keeps running. Try, in another terminal:")
	s.say("  %s status --etcd-endpoints %s --from east", bin, etcd)
	s.say("  curl -s http://%s/debug/imports", east.AdminAddr)
	s.say("  curl -s http://%s/debug/xds", east.AdminAddr)
	s.say("A drill with traffic: east's requests to %s/%s over mTLS (an SVID of east from its development CA), west's gateway blackholed for 15s:", ns, service)
	s.say("  %s", DrillCommand(bin, etcd, east.XDSAddr, o.DevCADir))
	s.say("Ctrl-C stops everything.")
	cl.quiet()
	<-ctx.Done()
	return nil
}

// DrillCommand is the drill with traffic that the story prints (and a test runs): west's
// gateways blackholed, east's requests to demo/echo through east's xDS, identity from the
// development CA in devCADir (the flag is left out at its default, .meshfed/dev-ca).
func DrillCommand(bin, etcd, xds, devCADir string) string {
	cmd := fmt.Sprintf("%s drill --etcd-endpoints %s --fail west --fault blackhole --duration 15s --from east --target %s/%s:%d --xds %s",
		bin, etcd, ns, service, port, xds)
	if devCADir != "" && filepath.Clean(devCADir) != filepath.Clean(DefaultDevCADir) {
		cmd += " --dev-ca-dir " + devCADir
	}
	return cmd
}

// DefaultDevCADir is where `meshfed dev up` keeps the development CAs and where
// `meshfed drill` and `meshfed trust dev-ca` look by default.
const DefaultDevCADir = ".meshfed/dev-ca"

// story prints the narrative with the time since start.
type story struct {
	out   io.Writer
	start time.Time
	mu    sync.Mutex
}

func (s *story) say(format string, args ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if format == "" {
		fmt.Fprintln(s.out)
		return
	}
	fmt.Fprintf(s.out, "[%6.1fs] %s\n", time.Since(s.start).Seconds(), fmt.Sprintf(format, args...))
}

func waitFor(ctx context.Context, d time.Duration, cond func() bool) error {
	wctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	err := ctxtime.Poll(wctx, 50*time.Millisecond, func() (bool, error) { return cond(), nil })
	if err != nil && ctx.Err() == nil {
		return fmt.Errorf("not within %v", d)
	}
	return err
}

func planOf(c *harness.Cluster) string {
	p := c.Agent().XDS.Plans()[ns+"/"+service]
	return p.String()
}

// BundleMapHas reports whether the bundle map a federation wrote into dir lists every
// trust domain of tds.
func BundleMapHas(dir string, tds ...string) bool {
	b, err := os.ReadFile(filepath.Join(dir, "bundle-map.json"))
	if err != nil {
		return false
	}
	var m struct {
		TrustDomains map[string]json.RawMessage `json:"trust_domains"`
	}
	if json.Unmarshal(b, &m) != nil {
		return false
	}
	for _, td := range tds {
		if _, ok := m.TrustDomains[td]; !ok {
			return false
		}
	}
	return true
}

// writeClientFiles issues the client's SVID and writes it with the bootstrap that points
// grpc-go at east's xDS server and east's federated bundle files.
func writeClientFiles(dir string, east *harness.Cluster) (string, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	svid, err := east.CA.Issue(devca.IssueRequest{ID: "spiffe://" + east.Spec.TrustDomain + "/ns/demo/sa/client"})
	if err != nil {
		return "", err
	}
	cert, key := filepath.Join(dir, "svid.pem"), filepath.Join(dir, "svid-key.pem")
	if err := svid.WriteFiles(cert, key); err != nil {
		return "", err
	}
	path := filepath.Join(dir, "bootstrap.json")
	return path, WriteClientBootstrap(path, ClientBootstrap{XDSAddr: east.XDSAddr, NodeID: "east~demo-client~devup", Cluster: "east",
		CertFile: cert, KeyFile: key, BundleDir: east.BundleDir, TrustDomain: east.Spec.TrustDomain})
}

// ClientBootstrap is what a proxyless grpc-go client of meshfed needs to know.
type ClientBootstrap struct {
	XDSAddr           string // its cluster's federation xDS server (plaintext)
	NodeID, Cluster   string
	CertFile, KeyFile string // its SVID
	// BundleDir is where its cluster's federation writes the federated bundles
	// (<td>.pem and bundle-map.json); TrustDomain is the cluster's own.
	BundleDir, TrustDomain string
}

// WriteClientBootstrap writes the grpc-go xDS bootstrap file of b to path: the xDS server,
// and a file_watcher certificate provider with the SVID and the SPIFFE bundle map.
func WriteClientBootstrap(path string, b ClientBootstrap) error {
	m := map[string]any{
		"xds_servers": []any{map[string]any{
			"server_uri":      b.XDSAddr,
			"channel_creds":   []any{map[string]any{"type": "insecure"}},
			"server_features": []any{"xds_v3"},
		}},
		"node": map[string]any{"id": b.NodeID, "cluster": b.Cluster},
		"certificate_providers": map[string]any{
			"meshfed": map[string]any{"plugin_name": "file_watcher", "config": map[string]any{
				"certificate_file":             b.CertFile,
				"private_key_file":             b.KeyFile,
				"ca_certificate_file":          filepath.Join(b.BundleDir, b.TrustDomain+".pem"),
				"spiffe_trust_bundle_map_file": filepath.Join(b.BundleDir, "bundle-map.json"),
				"refresh_interval":             "1s",
			}},
		},
	}
	js, _ := json.MarshalIndent(m, "", "  ")
	return os.WriteFile(path, js, 0o600)
}

// client is the demo client process and what it reported.
type client struct {
	cmd    *exec.Cmd
	cancel context.CancelFunc
	done   chan struct{}
	mu     sync.Mutex
	calls  []Call
	silent bool
}

func startClient(ctx context.Context, command []string, bootstrap, target string) (*client, error) {
	cctx, cancel := context.WithCancel(ctx)
	args := append(append([]string(nil), command[1:]...), "--target", target, "--interval", "100ms")
	cmd := exec.CommandContext(cctx, command[0], args...)
	cmd.Env = append(os.Environ(), ClientEnv(bootstrap)...)
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = 5 * time.Second
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		cancel()
		return nil, err
	}
	var stderr strings.Builder
	cmd.Stderr = &limitWriter{w: &stderr, n: 8 << 10}
	if err := cmd.Start(); err != nil {
		cancel()
		return nil, fmt.Errorf("start the demo client %s: %w", command[0], err)
	}
	c := &client{cmd: cmd, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(c.done)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			var call Call
			if json.Unmarshal(sc.Bytes(), &call) == nil {
				c.mu.Lock()
				c.calls = append(c.calls, call)
				c.mu.Unlock()
			}
		}
		_ = cmd.Wait()
	}()
	return c, nil
}

func (c *client) stop() {
	c.cancel()
	<-c.done
}

func (c *client) quiet() {
	c.mu.Lock()
	c.silent = true
	c.mu.Unlock()
}

func (c *client) since(t time.Time) []Call {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []Call
	for _, x := range c.calls {
		if !x.At.Before(t) {
			out = append(out, x)
		}
	}
	return out
}

func clusterOf(call Call, tdCluster map[string]string) string {
	if call.Error != "" {
		return ""
	}
	u, err := url.Parse(call.SPIFFEID)
	if err != nil {
		return ""
	}
	return tdCluster[u.Host]
}

// waitServed waits for a successful call served by cluster.
func (c *client) waitServed(ctx context.Context, tdCluster map[string]string, cluster string, d time.Duration) (Call, error) {
	var got Call
	start := time.Now()
	err := waitFor(ctx, d, func() bool {
		for _, x := range c.since(start.Add(-time.Minute)) {
			if clusterOf(x, tdCluster) == cluster {
				got = x
				return true
			}
		}
		return false
	})
	if err != nil {
		var last []string
		calls := c.since(start.Add(-time.Minute))
		for i := max(0, len(calls)-3); i < len(calls); i++ {
			last = append(last, fmt.Sprintf("%+v", calls[i]))
		}
		return got, fmt.Errorf("%w; last calls: %s", err, strings.Join(last, "; "))
	}
	return got, nil
}

// watch prints a line per second for d and returns how long after t0 the last call
// served by west came ("before the next call" when none did).
func (c *client) watch(ctx context.Context, s *story, tdCluster map[string]string, t0 time.Time, d time.Duration) string {
	end := t0.Add(d)
	next := t0.Add(time.Second)
	for time.Now().Before(end) && ctx.Err() == nil {
		select {
		case <-ctx.Done():
		case <-time.After(time.Until(next)):
		}
		s.say("  %s", c.tally(next.Add(-time.Second), next, tdCluster))
		next = next.Add(time.Second)
	}
	var last time.Time
	for _, x := range c.since(t0) {
		if clusterOf(x, tdCluster) == "west" {
			last = x.At
		}
	}
	if last.IsZero() {
		return "before the next call (<100ms)"
	}
	return last.Sub(t0).Round(time.Millisecond).String()
}

// waitBack waits until cluster serves again and returns how long that took after t0 and
// how many calls failed meanwhile.
func (c *client) waitBack(ctx context.Context, s *story, tdCluster map[string]string, cluster string, t0 time.Time, d time.Duration) (string, int) {
	next := t0.Add(time.Second)
	deadline := t0.Add(d)
	for ctx.Err() == nil && time.Now().Before(deadline) {
		for _, x := range c.since(t0) {
			if clusterOf(x, tdCluster) == cluster {
				return x.At.Sub(t0).Round(time.Millisecond).String(), c.errorsSince(t0)
			}
		}
		if time.Now().After(next) {
			s.say("  %s", c.tally(next.Add(-time.Second), next, tdCluster))
			next = next.Add(time.Second)
		}
		select {
		case <-ctx.Done():
		case <-time.After(50 * time.Millisecond):
		}
	}
	return "not within " + d.String(), c.errorsSince(t0)
}

func (c *client) errorsSince(t time.Time) int {
	n := 0
	for _, x := range c.since(t) {
		if x.Error != "" {
			n++
		}
	}
	return n
}

func (c *client) tally(from, to time.Time, tdCluster map[string]string) string {
	counts := map[string]int{}
	for _, x := range c.since(from) {
		if !x.At.Before(to) {
			continue
		}
		k := clusterOf(x, tdCluster)
		if k == "" {
			k = "failed"
		}
		counts[k]++
	}
	if len(counts) == 0 {
		return "calls this second: none"
	}
	return "calls this second: " + FormatCounts(counts)
}

// FormatCounts writes counts as "a 3, b 1", sorted by key.
func FormatCounts(counts map[string]int) string {
	keys := make([]string, 0, len(counts))
	for k := range counts {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s %d", k, counts[k]))
	}
	return strings.Join(parts, ", ")
}

type limitWriter struct {
	w io.Writer
	n int
}

func (l *limitWriter) Write(p []byte) (int, error) {
	if l.n <= 0 {
		return len(p), nil
	}
	q := p
	if len(q) > l.n {
		q = q[:l.n]
	}
	l.n -= len(q)
	_, err := l.w.Write(q)
	if err != nil {
		return 0, err
	}
	return len(p), nil
}
