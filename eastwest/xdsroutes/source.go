package xdsroutes

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/meshfed/meshfed/api/names"
	"github.com/meshfed/meshfed/api/validate"
	"github.com/meshfed/meshfed/eastwest"
)

// UserAgent is the node user_agent_name the gateway sends.
const UserAgent = "meshfed-gateway"

// Config configures a Source; zero values take the defaults.
type Config struct {
	// Address is the federation service's xDS server, HOST:PORT (--federation).
	Address string
	// Cluster is this cluster's name: the node is "<cluster>~gateway~<host>".
	Cluster string
	// Host names this gateway instance in the node id (default: the hostname).
	Host string
	// Domain is the SNI domain the gateway routes (default cluster.local); inbound clusters
	// of another domain are refused.
	Domain string
	// Version is sent as the node's user_agent_version (default "dev").
	Version string
	// TLS, when set, secures the xDS connection (set Certificates for mTLS); nil is
	// plaintext, which is only right on loopback.
	TLS *tls.Config
	// BackoffBase and BackoffMax bound the reconnect delay: it doubles from BackoffBase
	// (default 250ms) up to BackoffMax (default 30s), half of it random (jitter), and
	// starts over once a stream has answered.
	BackoffBase, BackoffMax time.Duration
	// ConnectTimeout bounds one connection attempt, TCP and HTTP/2 handshake (default 5s).
	ConnectTimeout time.Duration
	// InitialFetchTimeout: the first table waits for the EDS of every CDS cluster; a
	// cluster whose EDS has not come this long after the CDS is left out of the first
	// table rather than keeping the gateway unready for ever (default 15s; Envoy's
	// initial_fetch_timeout plays the same part).
	InitialFetchTimeout time.Duration
	// StaleLogInterval is how often the watchdog logs while the federation is unreachable
	// (default 30s).
	StaleLogInterval time.Duration
	// CacheFile, when set, keeps the last good table on disk: every table put in force is
	// written there, and at start a valid cache file of this cluster and domain is put in
	// force at once, before the federation answers (a gateway restarted during a federation
	// outage keeps routing). Empty: the table lives in memory only.
	CacheFile string
	// CacheMaxAge refuses a cache file saved longer ago than this (0: any age).
	CacheMaxAge time.Duration
	Log         *slog.Logger
	// Registry receives the meshfed_gateway_xds_* metrics (nil: not registered).
	Registry prometheus.Registerer
}

func (c *Config) defaults() error {
	if c.Domain == "" {
		c.Domain = names.DefaultDomain
	}
	if c.Host == "" {
		h, err := os.Hostname()
		if err != nil || h == "" {
			h = "unknown"
		}
		c.Host = h
	}
	if c.Version == "" {
		c.Version = "dev"
	}
	if c.BackoffBase <= 0 {
		c.BackoffBase = 250 * time.Millisecond
	}
	if c.BackoffMax <= 0 {
		c.BackoffMax = 30 * time.Second
	}
	if c.BackoffMax < c.BackoffBase {
		c.BackoffMax = c.BackoffBase
	}
	if c.ConnectTimeout <= 0 {
		c.ConnectTimeout = 5 * time.Second
	}
	if c.InitialFetchTimeout <= 0 {
		c.InitialFetchTimeout = 15 * time.Second
	}
	if c.StaleLogInterval <= 0 {
		c.StaleLogInterval = 30 * time.Second
	}
	if c.Log == nil {
		c.Log = slog.Default()
	}
	var errs validate.Errors
	if _, _, err := net.SplitHostPort(c.Address); err != nil {
		errs.Add("address", "%q is not HOST:PORT of the federation's xDS server (e.g. 127.0.0.1:15010)", c.Address)
	}
	if err := validate.DNSLabel(c.Cluster); err != nil {
		errs.Add("cluster", "%v", err)
	}
	if err := validate.DNSSubdomain(c.Domain); err != nil {
		errs.Add("domain", "%v", err)
	}
	return errs.Err()
}

// Status is what a Source knows about its federation link.
type Status struct {
	// Connected is true while the ADS stream is up and has answered.
	Connected bool
	// StaleSince is when the link went down (the start, before the first connection);
	// zero while connected.
	StaleSince time.Time
	// LastUpdate is when the last xDS response was accepted (the start, before any).
	LastUpdate time.Time
	// Table is the last route table delivered (nil before the first); its Origin says
	// whether it came from the federation or from the cache file.
	Table *eastwest.RouteTable
	// CDSVersion and EDSVersion are the versions last accepted.
	CDSVersion, EDSVersion string
}

// Source is an eastwest.RouteSource that takes the route table from the federation's xDS
// server. Make it with New.
type Source struct {
	cfg  Config
	log  *slog.Logger
	m    *metrics
	node *corev3.Node

	running atomic.Bool

	mu         sync.Mutex
	connected  bool
	staleSince time.Time
	lastUpdate time.Time
	table      *eastwest.RouteTable
	cdsVersion string
	edsVersion string
}

var _ eastwest.RouteSource = (*Source)(nil)

// New makes a source; it connects when Run is called.
func New(cfg Config) (*Source, error) {
	if err := cfg.defaults(); err != nil {
		return nil, fmt.Errorf("xds route source: %w", err)
	}
	md, err := structpb.NewStruct(map[string]any{names.NodeRoleKey: names.NodeRoleGateway})
	if err != nil {
		return nil, err
	}
	now := time.Now()
	s := &Source{
		cfg: cfg,
		log: cfg.Log.With("part", "xds-routes", "federation", cfg.Address),
		node: &corev3.Node{
			Id:                   cfg.Cluster + "~gateway~" + cfg.Host,
			Cluster:              cfg.Cluster,
			Metadata:             md,
			UserAgentName:        UserAgent,
			UserAgentVersionType: &corev3.Node_UserAgentVersion{UserAgentVersion: cfg.Version},
		},
		staleSince: now,
		lastUpdate: now,
	}
	s.m, err = newMetrics(cfg.Registry, s)
	if err != nil {
		return nil, fmt.Errorf("xds route source metrics: %w", err)
	}
	return s, nil
}

// NodeID is the xDS node id this source presents.
func (s *Source) NodeID() string { return s.node.GetId() }

// Status reports the link and the table in force.
func (s *Source) Status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := Status{Connected: s.connected, LastUpdate: s.lastUpdate, Table: s.table,
		CDSVersion: s.cdsVersion, EDSVersion: s.edsVersion}
	if !s.connected {
		st.StaleSince = s.staleSince
	}
	return st
}

// Run implements eastwest.RouteSource: it connects to the federation, delivers the first
// table once CDS and the EDS of every cluster have arrived, then every changed table, and
// reconnects for ever (with backoff) when the stream breaks, the last table staying in
// force meanwhile. It returns nil when ctx ends.
func (s *Source) Run(ctx context.Context, update func(*eastwest.RouteTable)) error {
	if !s.running.CompareAndSwap(false, true) {
		return errors.New("xds route source: Run called twice")
	}
	defer s.running.Store(false)
	wctx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	go s.watchdog(wctx)
	if s.cfg.CacheFile != "" {
		if t, ok := s.loadCache(); ok {
			s.log.Info("route table from the cache until the federation answers", "origin", t.Origin, "service_ports", t.Len())
			s.mu.Lock()
			s.table = t
			s.mu.Unlock()
			update(t)
		}
	}

	fails := 0
	for {
		answered, err := s.session(ctx, update)
		s.setDisconnected()
		if ctx.Err() != nil {
			return nil
		}
		if answered {
			fails = 0
		}
		delay := s.backoff(fails)
		// The first failure after a working link is a warning; the retries that follow are
		// debug lines (the watchdog keeps saying how stale the table is).
		lvl := slog.LevelWarn
		if fails > 0 {
			lvl = slog.LevelDebug
		}
		fails++
		s.m.disconnects.Inc()
		st := s.Status()
		s.log.Log(ctx, lvl, "federation xDS stream ended; the route table in force stays, reconnecting",
			"err", err, "retry_in", delay.Round(time.Millisecond), "stale_since", st.StaleSince, "service_ports", st.Table.Len())
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// backoff is the delay before reconnect attempt fails+1: exponential, capped, half jitter
// so that gateways cut off together do not come back in lockstep.
func (s *Source) backoff(fails int) time.Duration {
	d := s.cfg.BackoffMax
	if fails < 30 {
		if b := s.cfg.BackoffBase << fails; b > 0 && b < d {
			d = b
		}
	}
	return d/2 + rand.N(d/2+1)
}

// watchdog says, every StaleLogInterval, that the table in force is getting old while
// the federation is unreachable.
func (s *Source) watchdog(ctx context.Context) {
	t := time.NewTicker(s.cfg.StaleLogInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		st := s.Status()
		if st.Connected {
			continue
		}
		if st.Table == nil {
			s.log.Warn("no route table yet: the federation's xDS server has not answered", "waiting_since", st.StaleSince,
				"waiting_for", time.Since(st.StaleSince).Round(time.Second))
			continue
		}
		s.log.Warn("federation unreachable: routing with the last good table", "stale_since", st.StaleSince,
			"stale_for", time.Since(st.StaleSince).Round(time.Second), "service_ports", st.Table.Len(), "origin", st.Table.Origin)
	}
}

func (s *Source) setConnected() {
	s.mu.Lock()
	was := s.connected
	s.connected = true
	s.mu.Unlock()
	if !was {
		s.m.connected.Set(1)
		s.log.Info("connected to the federation's xDS server", "node", s.node.GetId())
	}
}

func (s *Source) setDisconnected() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.connected {
		s.connected = false
		s.staleSince = time.Now()
		s.m.connected.Set(0)
	}
}

func (s *Source) accepted(typ, version string) {
	s.mu.Lock()
	s.lastUpdate = time.Now()
	if typ == "cds" {
		s.cdsVersion = version
	} else {
		s.edsVersion = version
	}
	s.mu.Unlock()
	s.m.updates.WithLabelValues(typ).Inc()
}

// stream is the state of one ADS stream; it lives in the session goroutine only.
type stream struct {
	s        *Source
	ads      discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesClient
	sentNode bool
	// Per type URL: the version last accepted and the nonce last received.
	cdsVersion, cdsNonce string
	edsVersion, edsNonce string
	edsNames             []string // the EDS subscription sent, sorted
	gotCDS               bool
	clusters             map[string]inbound             // by cluster name, from the last accepted CDS
	wanted               map[string]bool                // the EDS names subscribed (edsNames)
	endpoints            map[string][]eastwest.Endpoint // by EDS name, received on this stream
	// dirty: something a table is built from changed since the last publish.
	dirty bool
}

// session runs one connection and ADS stream until it fails or ctx ends. answered says
// whether the server answered at all (the backoff starts over then).
func (s *Source) session(ctx context.Context, update func(*eastwest.RouteTable)) (answered bool, err error) {
	creds := insecure.NewCredentials()
	if s.cfg.TLS != nil {
		creds = credentials.NewTLS(s.cfg.TLS)
	}
	cc, err := grpc.NewClient(s.cfg.Address,
		grpc.WithTransportCredentials(creds),
		grpc.WithUserAgent(UserAgent+"/"+s.cfg.Version),
		// One attempt per session: this source owns the reconnect backoff.
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: backoff.DefaultConfig, MinConnectTimeout: s.cfg.ConnectTimeout}),
		// The federation's server permits pings every 10s; a dead peer that sends no RST is
		// found within Time+Timeout.
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 20 * time.Second, Timeout: 10 * time.Second}),
	)
	if err != nil {
		return false, fmt.Errorf("xds client %s: %w", s.cfg.Address, err)
	}
	defer cc.Close()
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ads, err := discoveryv3.NewAggregatedDiscoveryServiceClient(cc).StreamAggregatedResources(sctx)
	if err != nil {
		return false, fmt.Errorf("open ADS stream: %w", err)
	}
	st := &stream{s: s, ads: ads, endpoints: map[string][]eastwest.Endpoint{}}

	type recv struct {
		r   *discoveryv3.DiscoveryResponse
		err error
	}
	rc := make(chan recv)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel() // runs before wg.Wait: Recv returns once the stream's context ends
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			r, err := ads.Recv()
			select {
			case rc <- recv{r, err}:
			case <-sctx.Done():
				return
			}
			if err != nil {
				return
			}
		}
	}()

	// A new stream starts from nothing (empty versions): the server sends everything,
	// and the table in force stays until this stream's state is complete.
	if err := st.send(&discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.ClusterType}); err != nil {
		return false, fmt.Errorf("send CDS subscription: %w", err)
	}
	var fetchTimeout <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return answered, nil
		case <-fetchTimeout:
			fetchTimeout = nil
			st.publish(update, true)
		case m := <-rc:
			if m.err != nil {
				return answered, fmt.Errorf("ADS stream: %w", m.err)
			}
			answered = true
			s.setConnected()
			var reqs []*discoveryv3.DiscoveryRequest
			switch m.r.GetTypeUrl() {
			case resourcev3.ClusterType:
				reqs = st.onCDS(m.r)
				if st.gotCDS && s.Status().Table == nil && fetchTimeout == nil {
					fetchTimeout = time.After(s.cfg.InitialFetchTimeout)
				}
			case resourcev3.EndpointType:
				reqs = st.onEDS(m.r)
			default:
				s.log.Warn("ignoring an xDS response of a type the gateway did not ask for", "type", m.r.GetTypeUrl())
			}
			// The table is in force before the ACK leaves: an ACK means "applied".
			st.publish(update, false)
			for _, req := range reqs {
				if err := st.send(req); err != nil {
					return answered, fmt.Errorf("send %s request: %w", shortType(req.GetTypeUrl()), err)
				}
			}
		}
	}
}

func shortType(typeURL string) string {
	switch typeURL {
	case resourcev3.ClusterType:
		return "cds"
	case resourcev3.EndpointType:
		return "eds"
	}
	return typeURL
}

func (st *stream) send(r *discoveryv3.DiscoveryRequest) error {
	if !st.sentNode {
		r.Node, st.sentNode = st.s.node, true
	}
	return st.ads.Send(r)
}

func nack(err error) *rpcstatus.Status {
	return &rpcstatus.Status{Code: int32(codes.InvalidArgument), Message: err.Error()}
}

// onCDS takes a CDS response: a usable one replaces the cluster set (CDS is full state)
// and is ACKed, and the EDS subscription follows it; an unusable one is NACKed and
// changes nothing. It returns the requests to send once the table is published.
func (st *stream) onCDS(r *discoveryv3.DiscoveryResponse) []*discoveryv3.DiscoveryRequest {
	s := st.s
	clusters, perr := parseClusters(r.GetResources(), s.cfg.Domain)
	st.cdsNonce = r.GetNonce()
	if perr != nil {
		s.m.nacks.WithLabelValues("cds").Inc()
		s.log.Error("federation sent clusters the gateway cannot use: rejected (NACK), the route table in force stays",
			"version", r.GetVersionInfo(), "err", perr)
		return []*discoveryv3.DiscoveryRequest{{TypeUrl: resourcev3.ClusterType, VersionInfo: st.cdsVersion,
			ResponseNonce: st.cdsNonce, ErrorDetail: nack(perr)}}
	}
	st.cdsVersion, st.clusters, st.gotCDS, st.dirty = r.GetVersionInfo(), clusters, true, true
	s.accepted("cds", st.cdsVersion)
	reqs := []*discoveryv3.DiscoveryRequest{{TypeUrl: resourcev3.ClusterType, VersionInfo: st.cdsVersion, ResponseNonce: st.cdsNonce}}
	want := make([]string, 0, len(clusters))
	used := make(map[string]bool, len(clusters))
	for _, in := range clusters {
		if !used[in.eds] {
			used[in.eds] = true
			want = append(want, in.eds)
		}
	}
	sort.Strings(want)
	// An empty EDS request would be a wildcard subscription: with no clusters, the old
	// subscription stays, and so do the assignments it brings (the server will not send
	// them again should those clusters come back).
	if len(want) == 0 || slices.Equal(want, st.edsNames) {
		return reqs
	}
	for n := range st.endpoints {
		if !used[n] {
			delete(st.endpoints, n) // unsubscribed: the server resends it if it comes back
		}
	}
	st.edsNames, st.wanted = want, used
	return append(reqs, &discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.EndpointType, VersionInfo: st.edsVersion,
		ResponseNonce: st.edsNonce, ResourceNames: want})
}

// onEDS takes an EDS response. State of the world for EDS carries only the assignments
// that changed, so they are merged into what this stream has; an unusable one rejects the
// whole response (NACK). It returns the request to send once the table is published.
func (st *stream) onEDS(r *discoveryv3.DiscoveryResponse) []*discoveryv3.DiscoveryRequest {
	s := st.s
	st.edsNonce = r.GetNonce()
	got := map[string][]eastwest.Endpoint{}
	var p problems
	for i, a := range r.GetResources() {
		var cla endpointv3.ClusterLoadAssignment
		if err := unwrap(a, resourcev3.EndpointType, &cla); err != nil {
			p.add("assignment #%d: %w", i, err)
			continue
		}
		name := cla.GetClusterName()
		if !st.wanted[name] {
			continue // no longer (or never) in the CDS: nothing routes by it
		}
		eps, err := parseCLA(&cla)
		if err != nil {
			p.add("assignment %q: %w", name, err)
			continue
		}
		if _, dup := got[name]; dup {
			p.add("assignment %q: sent twice in one response", name)
			continue
		}
		got[name] = eps
	}
	if perr := p.err(); perr != nil {
		s.m.nacks.WithLabelValues("eds").Inc()
		s.log.Error("federation sent endpoints the gateway cannot use: rejected (NACK), the route table in force stays",
			"version", r.GetVersionInfo(), "err", perr)
		return []*discoveryv3.DiscoveryRequest{{TypeUrl: resourcev3.EndpointType, VersionInfo: st.edsVersion,
			ResponseNonce: st.edsNonce, ResourceNames: st.edsNames, ErrorDetail: nack(perr)}}
	}
	for n, eps := range got {
		if old, ok := st.endpoints[n]; !ok || !slices.Equal(old, eps) {
			st.endpoints[n] = eps
			st.dirty = true
		}
	}
	st.edsVersion = r.GetVersionInfo()
	s.accepted("eds", st.edsVersion)
	return []*discoveryv3.DiscoveryRequest{{TypeUrl: resourcev3.EndpointType, VersionInfo: st.edsVersion,
		ResponseNonce: st.edsNonce, ResourceNames: st.edsNames}}
}

// publish builds the table from this stream's state and delivers it when it differs
// from the one in force. No half tables: a cluster whose EDS has not come on this
// stream keeps the endpoints it had in the table in force; one that had none waits (the
// first table waits for every cluster, until force after InitialFetchTimeout).
func (st *stream) publish(update func(*eastwest.RouteTable), force bool) {
	s := st.s
	if !st.gotCDS || (!st.dirty && !force) {
		return
	}
	prev := s.Status().Table
	t := &eastwest.RouteTable{Services: make(map[eastwest.ServiceKey][]eastwest.Endpoint, len(st.clusters)),
		Origin: fmt.Sprintf("xds %s cds=%s eds=%s", s.cfg.Address, st.cdsVersion, st.edsVersion)}
	var pending []string
	for name, in := range st.clusters {
		if eps, ok := st.endpoints[in.eds]; ok {
			t.Services[in.key] = eps
			continue
		}
		if prev != nil {
			if eps, ok := prev.Services[in.key]; ok {
				t.Services[in.key] = eps
				continue
			}
		}
		pending = append(pending, name)
	}
	t.Faults = faultsOf(st.clusters)
	sort.Strings(pending)
	if len(pending) > 0 && prev == nil {
		if !force {
			return // still dirty: the next EDS answer tries again
		}
		s.log.Warn("first route table without the services whose endpoints never came", "after", s.cfg.InitialFetchTimeout, "clusters", pending)
	}
	st.dirty = false
	if prev != nil && sameRoutes(prev, t) {
		return
	}
	if err := t.Validate(); err != nil {
		// parseCLA checks more than Validate does: this is a bug, not a federation fault.
		s.log.Error("built an invalid route table; keeping the one in force", "err", err)
		return
	}
	if len(pending) > 0 {
		s.log.Info("new services wait for their endpoints", "clusters", pending)
	}
	// Recorded first: whoever update wakes (StartSource's caller) sees it in Status.
	s.mu.Lock()
	s.table = t
	s.mu.Unlock()
	update(t)
	if s.cfg.CacheFile != "" {
		s.saveCache(t)
	}
}
