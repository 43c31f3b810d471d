package drill

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/meshfed/meshfed/api/names"
	"github.com/meshfed/meshfed/federation/planner"
	"github.com/meshfed/meshfed/internal/ctxtime"
	"github.com/meshfed/meshfed/operator/drill/internal/loadgen"
)

// xdsRouter routes the drill's requests from the EDS that a federation service's xDS
// server sends to cluster `from`'s clients: it is a raw ADS client (state of the world,
// like grpc-go) subscribed to one ClusterLoadAssignment, and sends each request to the
// lowest priority that has a healthy endpoint, weighted like the localities and endpoints
// say. The serving cluster of an endpoint is its locality's sub_zone (the design's xDS
// names). It measures the whole path a real client sees: etcd → federation service →
// planner → xDS push. When the stream breaks it keeps the last assignment (static
// stability) and reconnects.
type xdsRouter struct {
	addr    string
	cluster string // the CDS/EDS resource name
	sni     string
	node    string
	onPlan  func(order string)

	mu     sync.Mutex
	eps    []xdsEndpoint // the chosen priority
	order  string
	got    chan struct{}
	gotOne sync.Once
}

type xdsEndpoint struct {
	cluster string
	addr    string
	weight  uint64
}

var _ loadgen.Router = (*xdsRouter)(nil)

// maxXDSWeight caps weights from the wire so that products and sums cannot overflow.
const maxXDSWeight = 1 << 20

func newXDSRouter(addr, from, ns, name string, port uint32, onPlan func(string)) *xdsRouter {
	return &xdsRouter{addr: addr, cluster: names.ClusterName(ns, name, port), sni: names.ServiceSNI(ns, name, port),
		node: "meshfed-drill-" + from, onPlan: onPlan, got: make(chan struct{})}
}

// run keeps an ADS stream open until ctx ends.
func (x *xdsRouter) run(ctx context.Context) {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		err := x.stream(ctx)
		if ctx.Err() != nil {
			return
		}
		_ = err // the last assignment stays in use; reconnect
		if !ctxtime.Sleep(ctx, backoff) {
			return
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

func (x *xdsRouter) stream(ctx context.Context) error {
	conn, err := grpc.NewClient(x.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(sctx)
	if err != nil {
		return err
	}
	node := &corev3.Node{Id: x.node, UserAgentName: "meshfed-drill"}
	req := &discoveryv3.DiscoveryRequest{Node: node, TypeUrl: resourcev3.EndpointType, ResourceNames: []string{x.cluster}}
	if err := st.Send(req); err != nil {
		return err
	}
	for {
		resp, err := st.Recv()
		if err != nil {
			return err
		}
		ack := &discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.EndpointType, ResourceNames: []string{x.cluster},
			VersionInfo: resp.VersionInfo, ResponseNonce: resp.Nonce}
		var good *endpointv3.ClusterLoadAssignment
		for _, a := range resp.Resources {
			var cla endpointv3.ClusterLoadAssignment
			if err := a.UnmarshalTo(&cla); err != nil {
				// NACK: keep the last good version, as a real client does.
				ack.VersionInfo = req.VersionInfo
				ack.ErrorDetail = &rpcstatus.Status{Code: 3, Message: err.Error()}
				good = nil
				break
			}
			if cla.ClusterName == x.cluster {
				good = &cla
			}
		}
		if good != nil {
			x.apply(good)
		}
		req = ack
		if err := st.Send(ack); err != nil {
			return err
		}
	}
}

func unhealthy(s corev3.HealthStatus) bool {
	return s == corev3.HealthStatus_UNHEALTHY || s == corev3.HealthStatus_DRAINING || s == corev3.HealthStatus_TIMEOUT
}

// apply picks the lowest priority with a healthy endpoint (what grpc-go's priority
// balancer does once every higher priority is unusable).
func (x *xdsRouter) apply(cla *endpointv3.ClusterLoadAssignment) {
	byPrio := map[uint32][]xdsEndpoint{}
	clustersByPrio := map[uint32][]string{}
	for _, l := range cla.Endpoints {
		lw := uint64(1)
		if l.LoadBalancingWeight != nil && l.LoadBalancingWeight.Value > 0 {
			lw = min(uint64(l.LoadBalancingWeight.Value), maxXDSWeight)
		}
		c := l.GetLocality().GetSubZone()
		var eps []xdsEndpoint
		var sum uint64
		for _, e := range l.LbEndpoints {
			if unhealthy(e.HealthStatus) {
				continue
			}
			sa := e.GetEndpoint().GetAddress().GetSocketAddress()
			if sa == nil {
				continue
			}
			w := uint64(1)
			if e.LoadBalancingWeight != nil && e.LoadBalancingWeight.Value > 0 {
				w = min(uint64(e.LoadBalancingWeight.Value), maxXDSWeight)
			}
			sum += w
			eps = append(eps, xdsEndpoint{cluster: c, addr: net.JoinHostPort(sa.Address, strconv.FormatUint(uint64(sa.GetPortValue()), 10)), weight: w})
		}
		// Locality weight shared among its endpoints by their weights.
		for i := range eps {
			eps[i].weight = max(1, lw*eps[i].weight*1000/max(sum, 1))
		}
		byPrio[l.Priority] = append(byPrio[l.Priority], eps...)
		if len(eps) > 0 && !contains(clustersByPrio[l.Priority], c) {
			clustersByPrio[l.Priority] = append(clustersByPrio[l.Priority], c)
		}
	}
	prios := make([]uint32, 0, len(byPrio))
	for p := range byPrio {
		prios = append(prios, p)
	}
	sort.Slice(prios, func(i, j int) bool { return prios[i] < prios[j] })
	var chosen []xdsEndpoint
	var parts []string
	for _, p := range prios {
		if len(byPrio[p]) == 0 {
			continue
		}
		if chosen == nil {
			chosen = byPrio[p]
		}
		parts = append(parts, strings.Join(clustersByPrio[p], "+"))
	}
	order := planner.JoinOrder(parts)
	x.mu.Lock()
	x.eps = chosen
	changed := order != x.order
	x.order = order
	x.mu.Unlock()
	x.gotOne.Do(func() { close(x.got) })
	if changed && x.onPlan != nil {
		x.onPlan(order + " (xDS from " + x.addr + ")")
	}
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// waitFirst waits for the first assignment.
func (x *xdsRouter) waitFirst(ctx context.Context) error {
	select {
	case <-x.got:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("no ClusterLoadAssignment %s from the xDS server at %s: %w (is it the xDS server of the traffic's source cluster's federation service, and does that cluster import the service?)", x.cluster, x.addr, ctx.Err())
	}
}

// Route implements loadgen.Router.
func (x *xdsRouter) Route() (loadgen.Route, error) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if len(x.eps) == 0 {
		return loadgen.Route{}, errors.New("the xDS assignment has no healthy endpoint")
	}
	var total uint64
	for _, e := range x.eps {
		total += e.weight
	}
	pick := rand.Uint64N(total)
	for _, e := range x.eps {
		if pick < e.weight {
			return loadgen.Route{Cluster: e.cluster, Addr: e.addr, SNI: x.sni}, nil
		}
		pick -= e.weight
	}
	e := x.eps[len(x.eps)-1]
	return loadgen.Route{Cluster: e.cluster, Addr: e.addr, SNI: x.sni}, nil
}
