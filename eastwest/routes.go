package eastwest

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sort"
	"strconv"

	"github.com/meshfed/meshfed/api/exports"
	"github.com/meshfed/meshfed/api/fault"
)

// ServiceKey names one port of one exported service: what an SNI denotes.
type ServiceKey struct {
	Namespace string
	Name      string
	Port      uint32 // the service port carried in the SNI (not the endpoints' target port)
}

func (k ServiceKey) String() string {
	return k.Namespace + "/" + k.Name + ":" + strconv.FormatUint(uint64(k.Port), 10)
}

// Service is namespace/name, the unit of per-service limits and metric labels.
func (k ServiceKey) Service() string { return k.Namespace + "/" + k.Name }

// Endpoint is one backend the gateway may dial for a service port.
type Endpoint struct {
	// Address is an IP literal; an IPv6 one may carry a zone (fe80::1%eth0, or the
	// interface's index: fe80::1%2) naming an interface of the gateway's host. The file
	// and xDS sources take none (their addresses travel between hosts); a RouteSource of
	// one host's own may.
	Address string
	Port    uint32 // the port dialled (exports' targetPort)
	Zone    string
	Ready   bool
	Weight  uint32 // 0 means 1
	// HBONEPort is where the endpoint takes HBONE tunnels (0: it takes none): the HBONE
	// listener sends a service port's tunnels to endpoints that have one, at this port.
	HBONEPort uint32
}

// HBONEHostPort is address:HBONEPort.
func (e Endpoint) HBONEHostPort() string {
	return net.JoinHostPort(e.Address, strconv.FormatUint(uint64(e.HBONEPort), 10))
}

// HostPort is address:port as net.Dial wants it.
func (e Endpoint) HostPort() string {
	return net.JoinHostPort(e.Address, strconv.FormatUint(uint64(e.Port), 10))
}

// RouteTable is everything the gateway routes: service ports to endpoints. It is plain
// data so that any source (file, xDS ClusterLoadAssignments) can build it.
type RouteTable struct {
	Services map[ServiceKey][]Endpoint
	// Faults are the drill faults the gateway carries out (api/fault), each until its
	// deadline by the gateway's clock; a table without them lifts the ones in force.
	Faults []fault.Fault
	// Origin says where the table came from (a path, an xDS version), for logs.
	Origin string
}

// Len is the number of service ports.
func (t *RouteTable) Len() int {
	if t == nil {
		return 0
	}
	return len(t.Services)
}

// Keys lists the service ports in a stable order.
func (t *RouteTable) Keys() []ServiceKey {
	keys := make([]ServiceKey, 0, len(t.Services))
	for k := range t.Services {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i].String() < keys[j].String() })
	return keys
}

// TableFromExports builds the route table of an exports file: one entry per service
// port, each endpoint dialled at the port's targetPort.
func TableFromExports(f *exports.File, origin string) *RouteTable {
	t := &RouteTable{Services: map[ServiceKey][]Endpoint{}, Origin: origin}
	for _, s := range f.Services {
		for _, p := range s.Ports {
			k := ServiceKey{Namespace: s.Namespace, Name: s.Name, Port: uint32(p.Port)}
			eps := make([]Endpoint, 0, len(s.Endpoints))
			for _, e := range s.Endpoints {
				eps = append(eps, Endpoint{
					Address: e.Address,
					Port:    uint32(p.Target()),
					Zone:    e.Zone,
					Ready:   e.IsReady(),
					Weight:  e.EffectiveWeight(),
					// The HBONE port is the endpoint's, whatever the service port.
					HBONEPort: uint32(e.HBONEPort),
				})
			}
			t.Services[k] = eps
		}
	}
	return t
}

// RouteSource delivers route tables. Run calls update with the first table as soon as it
// has one, then with every new valid table, until ctx ends. A source keeps the last good
// table in force when its input turns bad (it simply does not call update).
// Run returns an error only when it cannot deliver a first table at all.
type RouteSource interface {
	Run(ctx context.Context, update func(*RouteTable)) error
}

// Validate checks a table from any source before the gateway uses it.
func (t *RouteTable) Validate() error {
	for k, eps := range t.Services {
		if k.Port == 0 || k.Port > 65535 || k.Name == "" || k.Namespace == "" {
			return fmt.Errorf("route %s: incomplete service key", k)
		}
		for _, e := range eps {
			a, err := netip.ParseAddr(e.Address)
			if err != nil || e.Port == 0 || e.Port > 65535 {
				return fmt.Errorf("route %s: endpoint %s is not IP:port", k, e.HostPort())
			}
			if z := a.Zone(); z != "" {
				if _, err := zoneIndex(z); err != nil {
					return fmt.Errorf("route %s: endpoint %s: %w", k, e.HostPort(), err)
				}
			}
			if e.HBONEPort > 65535 {
				return fmt.Errorf("route %s: endpoint %s: HBONE port %d: use 1-65535 (0: none)", k, e.HostPort(), e.HBONEPort)
			}
		}
	}
	for i := range t.Faults {
		if err := t.Faults[i].Validate(); err != nil {
			return fmt.Errorf("faults[%d]: %w", i, err)
		}
	}
	return nil
}

// zoneIndex is the index of the interface an IPv6 zone names, as the net package resolves
// it: an interface of that name on this host, else a decimal index.
func zoneIndex(zone string) (uint32, error) {
	if ifi, err := net.InterfaceByName(zone); err == nil {
		return uint32(ifi.Index), nil
	}
	if n, err := strconv.ParseUint(zone, 10, 32); err == nil && n > 0 {
		return uint32(n), nil
	}
	return 0, fmt.Errorf("IPv6 zone %q: no network interface of that name on this host (name it as `ip link` does, or give its index)", zone)
}
