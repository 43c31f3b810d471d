package planner

import (
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/meshfed/meshfed/federation/health"
	"github.com/meshfed/meshfed/keyspace/records"
	"github.com/meshfed/meshfed/keyspace/view"
)

// DefaultStaleGrace is how long a cluster whose heartbeat is gone stays in plans while its
// gateway passes health checks (design: static stability).
const DefaultStaleGrace = 10 * time.Minute

// Input is everything one planning pass reads. It is not modified.
type Input struct {
	// Local is this cluster's name: its own ready endpoints are served direct.
	Local string
	View  *view.View
	// Health reports a remote gateway address's state; nil means every address Unknown
	// (usable).
	Health func(cluster, addr string) health.State
	// Now is the planning time (stale grace, drill expiry).
	Now time.Time
	// StaleGrace: a stale cluster is dropped once StaleSince is this old (0: default).
	StaleGrace time.Duration
}

func (in *Input) grace() time.Duration {
	if in.StaleGrace <= 0 {
		return DefaultStaleGrace
	}
	return in.StaleGrace
}

// Endpoint is one address a client connects to.
type Endpoint struct {
	Host   string
	Port   uint32
	Weight uint32
	// Zone of a direct endpoint ("" when unknown); gateway endpoints carry none.
	Zone string
	// HBONEPort of a direct endpoint that takes HBONE tunnels (0: none).
	HBONEPort uint32
}

// HostPort is Host:Port.
func (e Endpoint) HostPort() string {
	return net.JoinHostPort(e.Host, strconv.FormatUint(uint64(e.Port), 10))
}

// Level is one priority: one cluster, reached direct (this cluster's own endpoints) or
// through its gateway addresses.
type Level struct {
	Cluster string
	// Direct: the endpoints are this cluster's own workloads, dialled directly.
	Direct bool
	Region string
	Zone   string
	// Weight is the cluster's ready endpoint count for the service: the weight of the
	// level's locality, and of each gateway endpoint.
	Weight    uint32
	Endpoints []Endpoint
	// Stale is set when the cluster's heartbeat is gone (kept: its gateway is healthy).
	Stale bool
	// Panic is set when every cluster failed health checks and the plan ignores health
	// rather than route nowhere (Envoy's panic threshold, at 0%).
	Panic bool
}

// PortPlan is the ordered priority list of one service port: Levels[i] is priority i.
type PortPlan struct {
	Port   uint32
	Levels []Level
}

// Exclusion says why a cluster is not in a port's plan.
type Exclusion struct {
	Cluster string `json:"cluster"`
	Port    uint32 `json:"port,omitempty"` // 0: every port
	Reason  string `json:"reason"`
}

// Reasons of exclusions.
const (
	ReasonNoReadyEndpoints = "no-ready-endpoints"
	ReasonGatewayDown      = "gateway-down"
	ReasonCordoned         = "cordoned"
	ReasonStaleExpired     = "stale-expired"
	ReasonNotJoined        = "no-cluster-record"
	ReasonPortNotExported  = "port-not-exported"
)

// ServicePlan is the plan of one imported service.
type ServicePlan struct {
	Namespace, Name string
	Ports           []PortPlan // by port number
	Excluded        []Exclusion
}

// Key is "namespace/name".
func (p *ServicePlan) Key() string { return view.Key(p.Namespace, p.Name) }

// Port returns the plan of port n, or nil.
func (p *ServicePlan) Port(n uint32) *PortPlan {
	for i := range p.Ports {
		if p.Ports[i].Port == n {
			return &p.Ports[i]
		}
	}
	return nil
}

// candidate is one cluster that may serve the service.
type candidate struct {
	ce       *view.ClusterExport
	rec      *records.Cluster // nil for a cluster that has not joined
	direct   bool
	rank     int // policy position, or len(order) when not listed
	sameReg  bool
	ready    int
	healthy  []string // usable gateway addresses
	gateways []string // all gateway addresses (panic mode)
}

// PlanService computes the failover plan of one imported service, per the design's rules:
//   - this cluster's own ready endpoints, direct, first (policy localFirst, the default);
//   - then every other exporting cluster with ready endpoints, a usable gateway, no live
//     cordon and, if stale, within the grace: one endpoint per usable gateway address,
//     weight = its ready endpoint count, locality region/zone/sub_zone=cluster;
//   - order: the policy's order first, then same region as this cluster, then the rest,
//     ties by name; priorities contiguous from 0, one cluster per priority.
//
// When every remote cluster is excluded only by health and nothing else is left, the plan
// keeps them, in order, marked Panic: routing to possibly-dead gateways beats routing
// nowhere when the checker itself may be the one cut off.
func PlanService(in *Input, svc *view.Service) ServicePlan {
	plan := ServicePlan{Namespace: svc.Namespace, Name: svc.Name}
	v := in.View
	var localRec *records.Cluster
	if v != nil {
		localRec = v.Clusters[in.Local]
	}
	var pol *records.Policy
	if v != nil && v.Policies != nil {
		pol = v.Policies[view.Key(svc.Namespace, svc.Name)]
	}
	localFirst := pol == nil || pol.IsLocalFirst()
	var order []string
	if pol != nil {
		order = pol.Order
	}

	cands := make([]*candidate, 0, len(svc.Clusters))
	for _, ce := range svc.Clusters {
		if ce == nil || ce.Export == nil {
			continue
		}
		c := &candidate{ce: ce, direct: ce.Cluster == in.Local, ready: ce.ReadyEndpoints()}
		if v != nil {
			c.rec = v.Clusters[ce.Cluster]
		}
		if c.ready == 0 {
			plan.Excluded = append(plan.Excluded, Exclusion{Cluster: ce.Cluster, Reason: ReasonNoReadyEndpoints})
			continue
		}
		if cordoned(in, ce.Cluster, svc) {
			plan.Excluded = append(plan.Excluded, Exclusion{Cluster: ce.Cluster, Reason: ReasonCordoned})
			continue
		}
		if !c.direct {
			if ce.Stale && !ce.StaleSince.IsZero() && in.Now.Sub(ce.StaleSince) >= in.grace() {
				plan.Excluded = append(plan.Excluded, Exclusion{Cluster: ce.Cluster, Reason: ReasonStaleExpired})
				continue
			}
			if c.rec == nil || len(c.rec.Gateways) == 0 {
				plan.Excluded = append(plan.Excluded, Exclusion{Cluster: ce.Cluster, Reason: ReasonNotJoined})
				continue
			}
			c.gateways = c.rec.Gateways
			for _, g := range c.rec.Gateways {
				if in.Health == nil || in.Health(ce.Cluster, g).Usable() {
					c.healthy = append(c.healthy, g)
				}
			}
		}
		c.rank = len(order)
		if i := slices.Index(order, ce.Cluster); i >= 0 {
			c.rank = i
		}
		if localRec != nil && c.rec != nil && c.rec.Region == localRec.Region {
			c.sameReg = true
		}
		cands = append(cands, c)
	}
	slices.SortStableFunc(cands, func(a, b *candidate) int {
		if localFirst && a.direct != b.direct {
			if a.direct {
				return -1
			}
			return 1
		}
		if a.rank != b.rank {
			return a.rank - b.rank
		}
		// Without localFirst the local cluster sorts as a same-region one.
		ar, br := a.direct || a.sameReg, b.direct || b.sameReg
		if ar != br {
			if ar {
				return -1
			}
			return 1
		}
		return strings.Compare(a.ce.Cluster, b.ce.Cluster)
	})

	// Panic: every remote candidate is unhealthy and nothing direct is left for a port.
	anyHealthy := false
	for _, c := range cands {
		if c.direct || len(c.healthy) > 0 {
			anyHealthy = true
			break
		}
	}
	panicMode := !anyHealthy && len(cands) > 0
	if !panicMode {
		for _, c := range cands {
			if !c.direct && len(c.healthy) == 0 {
				plan.Excluded = append(plan.Excluded, Exclusion{Cluster: c.ce.Cluster, Reason: ReasonGatewayDown})
			}
		}
	}

	for _, p := range svc.Ports {
		pp := PortPlan{Port: uint32(p.Port)}
		var seen addrSet // grpc-go NACKs a CLA that lists an address twice
		for _, c := range cands {
			ep := exportedPort(c.ce.Export, p.Port)
			if ep == nil {
				plan.Excluded = append(plan.Excluded, Exclusion{Cluster: c.ce.Cluster, Port: uint32(p.Port), Reason: ReasonPortNotExported})
				continue
			}
			lv := Level{Cluster: c.ce.Cluster, Direct: c.direct, Weight: uint32(c.ready), Stale: c.ce.Stale}
			if c.rec != nil {
				lv.Region, lv.Zone = c.rec.Region, c.rec.Zone
			}
			if c.direct {
				target := uint32(ep.Port)
				if ep.TargetPort != 0 {
					target = uint32(ep.TargetPort)
				}
				for _, e := range c.ce.Export.Endpoints {
					if !e.Ready {
						continue
					}
					w := e.Weight
					if w == 0 {
						w = 1
					}
					x := Endpoint{Host: e.Address, Port: target, Weight: w, Zone: e.Zone, HBONEPort: uint32(e.HBONEPort)}
					if seen.add(hostPort{x.Host, x.Port}) {
						lv.Endpoints = append(lv.Endpoints, x)
					}
				}
			} else {
				addrs := c.healthy
				if panicMode {
					addrs, lv.Panic = c.gateways, true
				}
				if len(addrs) == 0 {
					continue
				}
				for _, a := range addrs {
					host, port, err := splitHostPort(a)
					if err != nil {
						continue // validated in the record; defensive
					}
					x := Endpoint{Host: host, Port: port, Weight: uint32(c.ready)}
					if seen.add(hostPort{x.Host, x.Port}) {
						lv.Endpoints = append(lv.Endpoints, x)
					}
				}
			}
			if len(lv.Endpoints) == 0 {
				continue
			}
			slices.SortFunc(lv.Endpoints, compareEndpoints)
			pp.Levels = append(pp.Levels, lv)
		}
		plan.Ports = append(plan.Ports, pp)
	}
	slices.SortFunc(plan.Ports, func(a, b PortPlan) int { return int(a.Port) - int(b.Port) })
	return plan
}

// addrSet is a set of addresses: a slice while small (the common case: tens of addresses
// per service port), a map beyond.
type addrSet struct {
	list []hostPort
	m    map[hostPort]bool
}

// add reports whether hp was not in the set, and adds it.
func (s *addrSet) add(hp hostPort) bool {
	if s.m != nil {
		if s.m[hp] {
			return false
		}
		s.m[hp] = true
		return true
	}
	if slices.Contains(s.list, hp) {
		return false
	}
	s.list = append(s.list, hp)
	if len(s.list) > 64 {
		s.m = make(map[hostPort]bool, 2*len(s.list))
		for _, x := range s.list {
			s.m[x] = true
		}
		s.list = nil
	}
	return true
}

type hostPort struct {
	host string
	port uint32
}

// compareEndpoints orders by host then port (no allocation: this runs for every endpoint
// of every service on a full re-plan).
func compareEndpoints(a, b Endpoint) int {
	if c := strings.Compare(a.Host, b.Host); c != 0 {
		return c
	}
	return int(a.Port) - int(b.Port)
}

func exportedPort(e *records.Export, port int32) *records.Port {
	for i := range e.Ports {
		if e.Ports[i].Port == port {
			return &e.Ports[i]
		}
	}
	return nil
}

// cordoned reports a live drill on cluster for the service. The drill key is bound to its
// own lease (it disappears by itself); Until is honoured too, in case the drill process
// outlives its intent.
func cordoned(in *Input, cluster string, svc *view.Service) bool {
	if in.View == nil {
		return false
	}
	for _, d := range in.View.Drills {
		if d != nil && d.Cordons() && d.Covers(cluster, svc.Namespace, svc.Name) && (d.Until.IsZero() || in.Now.Before(d.Until)) {
			return true
		}
	}
	return false
}

func splitHostPort(a string) (string, uint32, error) {
	h, p, err := net.SplitHostPort(a)
	if err != nil {
		return "", 0, err
	}
	n, err := strconv.ParseUint(p, 10, 16)
	if err != nil {
		return "", 0, err
	}
	return h, uint32(n), nil
}

// NextEvent is the earliest future time at which PlanService's answer for svc may change
// without any input changing (a stale cluster's grace ending, a drill's Until passing);
// zero when none.
func NextEvent(in *Input, svc *view.Service) time.Time {
	var next time.Time
	consider := func(t time.Time) {
		if t.After(in.Now) && (next.IsZero() || t.Before(next)) {
			next = t
		}
	}
	for _, ce := range svc.Clusters {
		if ce != nil && ce.Stale && !ce.StaleSince.IsZero() {
			consider(ce.StaleSince.Add(in.grace()))
		}
		if in.View != nil {
			for _, d := range in.View.Drills {
				if d != nil && ce != nil && d.Cordons() && !d.Until.IsZero() && d.Covers(ce.Cluster, svc.Namespace, svc.Name) {
					consider(d.Until)
				}
			}
		}
	}
	return next
}
