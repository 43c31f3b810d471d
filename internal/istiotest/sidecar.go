package istiotest

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/structpb"
	meshv1alpha1 "istio.io/api/mesh/v1alpha1"
)

// SidecarConfig describes the Envoy sidecar a test poses as.
type SidecarConfig struct {
	// IP, Pod and Namespace make the node id sidecar~IP~POD.NS~NS.svc.cluster.local.
	IP, Pod, Namespace string
	// ClusterID and Network are the sidecar's CLUSTER_ID and NETWORK metadata.
	ClusterID, Network string
	// IstioVersion is ISTIO_VERSION (default 1.31.0): istiod generates for that version.
	IstioVersion string
	// Labels are the pod's labels (LABELS metadata); istiod's failoverPriority matching
	// needs at least one.
	Labels map[string]string
	// Locality is the node's locality (nil: none; then istiod puts every endpoint at
	// priority 0).
	Locality *corev3.Locality
	// ProxyConfig also subscribes to PCDS (ProxyConfigType), as the sidecar's agent does with
	// PROXY_CONFIG_XDS_AGENT=true: istiod then sends the mesh's merged trust roots
	// (Snapshot.CACertificatesPEM) when ISTIO_MULTIROOT_MESH is on.
	ProxyConfig bool
}

// ProxyConfigType is the type URL of istiod's PCDS (istio's pkg/model.ProxyConfigType).
const ProxyConfigType = "type.googleapis.com/istio.mesh.v1alpha1.ProxyConfig"

// NodeID is the sidecar's Envoy node id.
func (c SidecarConfig) NodeID() string {
	return fmt.Sprintf("sidecar~%s~%s.%s~%s.svc.cluster.local", c.IP, c.Pod, c.Namespace, c.Namespace)
}

func (c SidecarConfig) node() (*corev3.Node, error) {
	v := c.IstioVersion
	if v == "" {
		v = "1.31.0"
	}
	labels := map[string]any{}
	for k, val := range c.Labels {
		labels[k] = val
	}
	md, err := structpb.NewStruct(map[string]any{
		"NAMESPACE":         c.Namespace,
		"CLUSTER_ID":        c.ClusterID,
		"NETWORK":           c.Network,
		"ISTIO_VERSION":     v,
		"LABELS":            labels,
		"NAME":              c.Pod,
		"INTERCEPTION_MODE": "REDIRECT",
	})
	if err != nil {
		return nil, err
	}
	return &corev3.Node{Id: c.NodeID(), Cluster: "sidecar", Locality: c.Locality, Metadata: md}, nil
}

// Snapshot is what the sidecar holds at one moment.
type Snapshot struct {
	Clusters  map[string]*clusterv3.Cluster
	Endpoints map[string]*endpointv3.ClusterLoadAssignment
	// CACertificatesPEM is the last PCDS answer's caCertificatesPem (istiod's merged trust
	// bundle for workloads, sorted), and ProxyConfigs the number of PCDS answers so far.
	CACertificatesPEM []string
	ProxyConfigs      int
	// At is when the last response arrived.
	At time.Time
}

// Sidecar is an ADS stream to istiod that ACKs everything, subscribes to EDS for every EDS
// cluster it gets, and keeps the latest state.
type Sidecar struct {
	conn   *grpc.ClientConn
	cancel context.CancelFunc
	done   chan struct{}

	mu      sync.Mutex
	snap    Snapshot
	changed chan struct{} // closed and replaced on every response
	err     error
}

// ConnectSidecar opens the stream; Close ends it.
func ConnectSidecar(addr string, cfg SidecarConfig) (*Sidecar, error) {
	node, err := cfg.node()
	if err != nil {
		return nil, err
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20)))
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		cancel()
		conn.Close()
		return nil, err
	}
	s := &Sidecar{conn: conn, cancel: cancel, done: make(chan struct{}), changed: make(chan struct{}),
		snap: Snapshot{Clusters: map[string]*clusterv3.Cluster{}, Endpoints: map[string]*endpointv3.ClusterLoadAssignment{}}}
	if err := stream.Send(&discoveryv3.DiscoveryRequest{Node: node, TypeUrl: resourcev3.ClusterType}); err != nil {
		cancel()
		conn.Close()
		return nil, err
	}
	if cfg.ProxyConfig {
		if err := stream.Send(&discoveryv3.DiscoveryRequest{TypeUrl: ProxyConfigType}); err != nil {
			cancel()
			conn.Close()
			return nil, err
		}
	}
	go s.recv(stream)
	return s, nil
}

func (s *Sidecar) recv(stream discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesClient) {
	defer close(s.done)
	var edsNames []string
	edsVersion, edsNonce := "", ""
	for {
		resp, err := stream.Recv()
		if err != nil {
			s.mu.Lock()
			s.err = err
			s.mu.Unlock()
			return
		}
		var next []string
		s.mu.Lock()
		switch resp.GetTypeUrl() {
		case resourcev3.ClusterType:
			cs := map[string]*clusterv3.Cluster{}
			for _, a := range resp.GetResources() {
				c := &clusterv3.Cluster{}
				if a.UnmarshalTo(c) == nil {
					cs[c.GetName()] = c
					if c.GetType() == clusterv3.Cluster_EDS {
						next = append(next, c.GetName())
					}
				}
			}
			s.snap.Clusters = cs
		case resourcev3.EndpointType:
			eps := map[string]*endpointv3.ClusterLoadAssignment{}
			for k, v := range s.snap.Endpoints {
				eps[k] = v
			}
			for _, a := range resp.GetResources() {
				e := &endpointv3.ClusterLoadAssignment{}
				if a.UnmarshalTo(e) == nil {
					eps[e.GetClusterName()] = e
				}
			}
			s.snap.Endpoints = eps
			edsVersion, edsNonce = resp.GetVersionInfo(), resp.GetNonce()
		case ProxyConfigType:
			for _, a := range resp.GetResources() {
				pc := &meshv1alpha1.ProxyConfig{}
				if a.UnmarshalTo(pc) == nil {
					s.snap.CACertificatesPEM = append([]string(nil), pc.GetCaCertificatesPem()...)
				}
			}
			s.snap.ProxyConfigs++
		}
		s.snap.At = time.Now()
		close(s.changed)
		s.changed = make(chan struct{})
		s.mu.Unlock()

		// ACK.
		ack := &discoveryv3.DiscoveryRequest{TypeUrl: resp.GetTypeUrl(), VersionInfo: resp.GetVersionInfo(), ResponseNonce: resp.GetNonce()}
		if resp.GetTypeUrl() == resourcev3.EndpointType {
			ack.ResourceNames = edsNames
		}
		if err := stream.Send(ack); err != nil {
			return
		}
		if resp.GetTypeUrl() == resourcev3.ClusterType {
			sort.Strings(next)
			if strings.Join(next, ",") != strings.Join(edsNames, ",") {
				edsNames = next
				if err := stream.Send(&discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.EndpointType, ResourceNames: edsNames,
					VersionInfo: edsVersion, ResponseNonce: edsNonce}); err != nil {
					return
				}
			}
		}
	}
}

// Snapshot returns the latest state (the maps are not modified afterwards).
func (s *Sidecar) Snapshot() Snapshot {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.snap
}

// Err is the stream's error once it ended (nil while it runs).
func (s *Sidecar) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// WaitFor waits until cond holds on a snapshot (checked now and after every response) or
// the timeout passes; it returns the snapshot that held and how long it took.
func (s *Sidecar) WaitFor(timeout time.Duration, cond func(Snapshot) bool) (Snapshot, time.Duration, error) {
	start := time.Now()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		s.mu.Lock()
		snap, ch, err := s.snap, s.changed, s.err
		s.mu.Unlock()
		if cond(snap) {
			return snap, time.Since(start), nil
		}
		if err != nil {
			return snap, time.Since(start), fmt.Errorf("sidecar stream ended: %w", err)
		}
		select {
		case <-ch:
		case <-deadline.C:
			return snap, time.Since(start), fmt.Errorf("condition not met within %v", timeout)
		}
	}
}

// Close ends the stream.
func (s *Sidecar) Close() {
	s.cancel()
	<-s.done
	s.conn.Close()
}

// Endpoint is one endpoint of an EDS answer, flattened for assertions.
type Endpoint struct {
	Priority uint32
	Locality string // region/zone/subzone
	Address  string // host:port
	Weight   uint32
}

// Flatten lists a load assignment's endpoints by priority, then address.
func Flatten(cla *endpointv3.ClusterLoadAssignment) []Endpoint {
	var out []Endpoint
	for _, l := range cla.GetEndpoints() {
		loc := l.GetLocality()
		for _, e := range l.GetLbEndpoints() {
			sa := e.GetEndpoint().GetAddress().GetSocketAddress()
			out = append(out, Endpoint{
				Priority: l.GetPriority(),
				Locality: loc.GetRegion() + "/" + loc.GetZone() + "/" + loc.GetSubZone(),
				Address:  fmt.Sprintf("%s:%d", sa.GetAddress(), sa.GetPortValue()),
				Weight:   e.GetLoadBalancingWeight().GetValue(),
			})
		}
	}
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].Priority != out[j].Priority {
			return out[i].Priority < out[j].Priority
		}
		return out[i].Address < out[j].Address
	})
	return out
}
