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

	"github.com/meshfed/meshfed/discovery/file"
	"github.com/meshfed/meshfed/eastwest"
	"github.com/meshfed/meshfed/federation/embedetcd"
	"github.com/meshfed/meshfed/federation/records"
	"github.com/meshfed/meshfed/federation/service"
	"github.com/meshfed/meshfed/federation/store"
)

// ClusterSpec describes one simulated cluster.
type ClusterSpec struct {
	Name        string
	Region      string // default "region-1"
	Zone        string // default "<region>-a"
	Network     string // default "net-<name>"
	TrustDomain string // default "<name>.meshfed.test"
	// Exports is the initial exports file (YAML); empty exports nothing.
	Exports string
	// NoGateway skips the east-west gateway of this cluster.
	NoGateway bool
	// NoJoin skips writing the cluster record (as if `meshfed join` had not run).
	NoJoin bool
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
	Log      *slog.Logger
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
	Registry    *prometheus.Registry
	// GatewayAddr is the gateway's bound HOST:PORT (empty with NoGateway).
	GatewayAddr string
	Gateway     *eastwest.Gateway

	f       *Federation
	mu      sync.Mutex
	fed     *service.Service
	fedStop context.CancelFunc
	fedDone chan error
	gwStop  context.CancelFunc
	gwDone  chan error
	gwLn    net.Listener
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
	c := &Cluster{Spec: spec, Index: i, IP: ClusterIP(i), f: f, Registry: prometheus.NewRegistry()}
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
	if err := c.StartFederation(ctx); err != nil {
		return nil, err
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
		TrustDomain: c.Spec.TrustDomain, Gateways: gws, JoinedAt: time.Now().UTC()}
	_, err := store.Modify[records.Cluster](ctx, c.Store, c.Store.KS.Cluster(c.Spec.Name), func(*records.Cluster) (*records.Cluster, error) {
		return rec, nil
	})
	return err
}

// SetExports replaces the cluster's exports file atomically (write + rename).
func (c *Cluster) SetExports(yaml string) error {
	tmp := c.ExportsPath + ".tmp"
	if err := os.WriteFile(tmp, []byte(yaml), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, c.ExportsPath)
}

// Federation is the cluster's running federation service (nil while stopped).
func (c *Cluster) Federation() *service.Service {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.fed
}

// StartFederation starts the cluster's federation service.
func (c *Cluster) StartFederation(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.fed != nil {
		return errors.New("federation already running")
	}
	reg := prometheus.NewRegistry()
	svc, err := service.New(service.Config{
		Cluster: c.Spec.Name, Store: c.Store, HeartbeatTTL: c.f.Opts.HeartbeatTTL, StaleGrace: c.f.Opts.StaleGrace,
		Source:   &file.Source{Cluster: c.Spec.Name, Path: c.ExportsPath, Interval: c.f.Opts.PollInterval, Log: c.f.log.With("cluster", c.Spec.Name)},
		Log:      c.f.log,
		Registry: reg,
	})
	if err != nil {
		return err
	}
	rctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(rctx) }()
	c.fed, c.fedStop, c.fedDone = svc, cancel, done
	return nil
}

// StopFederation stops the federation service (its heartbeat then expires after the TTL;
// the gateway keeps serving: static stability).
func (c *Cluster) StopFederation() error {
	c.mu.Lock()
	stop, done := c.fedStop, c.fedDone
	c.fed, c.fedStop, c.fedDone = nil, nil, nil
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
		svc := c.Federation()
		if svc == nil {
			return fmt.Errorf("cluster %s: federation not running", c.Spec.Name)
		}
		err := svc.Ready()
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
// picks a free port; restarts reuse it), routing from the exports file.
func (c *Cluster) StartGateway(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gwStop != nil {
		return errors.New("gateway already running")
	}
	addr := c.GatewayAddr
	if addr == "" {
		addr = net.JoinHostPort(c.IP, "0")
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("gateway listen %s: %w", addr, err)
	}
	gw, err := eastwest.New(eastwest.Config{Cluster: c.Spec.Name, Log: c.f.log.With("cluster", c.Spec.Name, "part", "gateway"),
		Registry: prometheus.NewRegistry(), DrainTimeout: 2 * time.Second})
	if err != nil {
		ln.Close()
		return err
	}
	rctx, cancel := context.WithCancel(context.Background())
	src := &eastwest.FileSource{Path: c.ExportsPath, Interval: c.f.Opts.PollInterval, Log: c.f.log, OnReload: gw.ObserveReload}
	if err := gw.StartSource(rctx, src); err != nil {
		cancel()
		ln.Close()
		return err
	}
	done := make(chan error, 1)
	go func() { done <- gw.Serve(rctx, ln) }()
	c.Gateway, c.GatewayAddr, c.gwStop, c.gwDone, c.gwLn = gw, ln.Addr().String(), cancel, done, ln
	return nil
}

// StopGateway stops the gateway (graceful drain, bounded by its 2s drain timeout).
func (c *Cluster) StopGateway() error {
	c.mu.Lock()
	stop, done := c.gwStop, c.gwDone
	c.gwStop, c.gwDone, c.Gateway = nil, nil, nil
	c.mu.Unlock()
	if stop == nil {
		return nil
	}
	stop()
	return <-done
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
