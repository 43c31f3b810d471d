package istiotest

import (
	"context"
	"fmt"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/structpb"
)

// Type URLs of istiod's ambient discovery (WDS), as ztunnel subscribes to them (istio's
// pilot/pkg/model AddressType and WorkloadAuthorizationType).
const (
	// AddressType carries istio.workload.Address: a Workload or a Service.
	AddressType = "type.googleapis.com/istio.workload.Address"
	// AuthorizationType carries istio.security.Authorization (ztunnel's policies).
	AuthorizationType = "type.googleapis.com/istio.security.Authorization"
)

// ZtunnelConfig describes the ztunnel a test poses as. istiod recognises ztunnel by the
// node id's first part ("ztunnel", model.Ztunnel) and serves it only with
// PILOT_ENABLE_AMBIENT=true ("ztunnel requires PILOT_ENABLE_AMBIENT=true" otherwise); on
// the plaintext xDS port no identity is checked, as for Sidecar.
type ZtunnelConfig struct {
	// IP and Pod make the node id ztunnel~IP~POD.istio-system~istio-system.svc.cluster.local.
	IP, Pod string
	// ClusterID is the CLUSTER_ID metadata (istiod's cluster).
	ClusterID string
	// IstioVersion is ISTIO_VERSION (default 1.31.0).
	IstioVersion string
	// Types are the type URLs subscribed to, wildcard (default: AddressType and
	// AuthorizationType, as ztunnel does).
	Types []string
}

// NodeID is the ztunnel's node id.
func (c ZtunnelConfig) NodeID() string {
	return fmt.Sprintf("ztunnel~%s~%s.%s~%s.svc.cluster.local", c.IP, c.Pod, Namespace, Namespace)
}

// ZtunnelSnapshot is what the ztunnel holds at one moment: every resource istiod gave it,
// by type URL, then resource name (undecoded: istio.workload types are in istio's module,
// not meshfed's; hack/interop/ambient decodes them).
type ZtunnelSnapshot struct {
	Resources map[string]map[string]*discoveryv3.Resource
	// Responses counts the delta responses so far; At is when the last one arrived.
	Responses int
	At        time.Time
}

// Ztunnel is a delta-xDS ADS stream to istiod that subscribes (wildcard) as ztunnel does,
// applies every response (added or replaced resources, removed names), ACKs it, and keeps
// the result.
type Ztunnel struct {
	conn   *grpc.ClientConn
	cancel context.CancelFunc
	done   chan struct{}

	mu      sync.Mutex
	snap    ZtunnelSnapshot
	changed chan struct{}
	err     error
}

// ConnectZtunnel opens the stream; Close ends it.
func ConnectZtunnel(addr string, cfg ZtunnelConfig) (*Ztunnel, error) {
	v := cfg.IstioVersion
	if v == "" {
		v = "1.31.0"
	}
	types := cfg.Types
	if len(types) == 0 {
		types = []string{AddressType, AuthorizationType}
	}
	md, err := structpb.NewStruct(map[string]any{
		"NAMESPACE":     Namespace,
		"NAME":          cfg.Pod,
		"CLUSTER_ID":    cfg.ClusterID,
		"ISTIO_VERSION": v,
	})
	if err != nil {
		return nil, err
	}
	node := &corev3.Node{Id: cfg.NodeID(), Metadata: md}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20)))
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(ctx)
	if err != nil {
		cancel()
		conn.Close()
		return nil, err
	}
	z := &Ztunnel{conn: conn, cancel: cancel, done: make(chan struct{}), changed: make(chan struct{}),
		snap: ZtunnelSnapshot{Resources: map[string]map[string]*discoveryv3.Resource{}}}
	for i, t := range types {
		req := &discoveryv3.DeltaDiscoveryRequest{TypeUrl: t, ResourceNamesSubscribe: []string{"*"}}
		if i == 0 {
			req.Node = node
		}
		if err := stream.Send(req); err != nil {
			cancel()
			conn.Close()
			return nil, err
		}
	}
	go z.recv(stream)
	return z, nil
}

func (z *Ztunnel) recv(stream discoveryv3.AggregatedDiscoveryService_DeltaAggregatedResourcesClient) {
	defer close(z.done)
	for {
		resp, err := stream.Recv()
		if err != nil {
			z.mu.Lock()
			z.err = err
			close(z.changed)
			z.changed = make(chan struct{})
			z.mu.Unlock()
			return
		}
		z.mu.Lock()
		// Copy on write: a snapshot handed out is never modified.
		res := make(map[string]map[string]*discoveryv3.Resource, len(z.snap.Resources))
		for k, v := range z.snap.Resources {
			res[k] = v
		}
		byName := map[string]*discoveryv3.Resource{}
		for k, v := range res[resp.GetTypeUrl()] {
			byName[k] = v
		}
		for _, r := range resp.GetResources() {
			byName[r.GetName()] = r
		}
		for _, n := range resp.GetRemovedResources() {
			delete(byName, n)
		}
		res[resp.GetTypeUrl()] = byName
		z.snap = ZtunnelSnapshot{Resources: res, Responses: z.snap.Responses + 1, At: time.Now()}
		close(z.changed)
		z.changed = make(chan struct{})
		z.mu.Unlock()
		if err := stream.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resp.GetTypeUrl(), ResponseNonce: resp.GetNonce()}); err != nil {
			return
		}
	}
}

// Snapshot returns the latest state.
func (z *Ztunnel) Snapshot() ZtunnelSnapshot {
	z.mu.Lock()
	defer z.mu.Unlock()
	return z.snap
}

// WaitFor waits until cond holds on a snapshot (checked now and after every response) or
// the timeout passes; it returns the snapshot that held and how long it took.
func (z *Ztunnel) WaitFor(timeout time.Duration, cond func(ZtunnelSnapshot) bool) (ZtunnelSnapshot, time.Duration, error) {
	start := time.Now()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		z.mu.Lock()
		snap, ch, err := z.snap, z.changed, z.err
		z.mu.Unlock()
		if cond(snap) {
			return snap, time.Since(start), nil
		}
		if err != nil {
			return snap, time.Since(start), fmt.Errorf("ztunnel stream ended: %w", err)
		}
		select {
		case <-ch:
		case <-deadline.C:
			return snap, time.Since(start), fmt.Errorf("condition not met within %v", timeout)
		}
	}
}

// Close ends the stream.
func (z *Ztunnel) Close() {
	z.cancel()
	<-z.done
	z.conn.Close()
}
