package xdsroutes

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/hashicorp/go-multierror"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/meshfed/meshfed/api/fault"
	"github.com/meshfed/meshfed/api/names"
	"github.com/meshfed/meshfed/api/validate"
	"github.com/meshfed/meshfed/eastwest"
)

// inbound is one accepted CDS cluster of the gateway contract.
type inbound struct {
	key eastwest.ServiceKey
	// eds is the EDS resource to subscribe to: eds_cluster_config.service_name when set,
	// else the cluster name.
	eds string
	// fault is the drill fault the cluster's metadata carries (filter_metadata
	// "meshfed.fault"), if any.
	fault *fault.Fault
}

// maxErrors bounds how many problems one NACK lists (the error_detail message stays small).
const maxErrors = 8

// problems collects resource errors for one response (go-multierror, one a line).
type problems struct {
	errs *multierror.Error
	more int
}

func (p *problems) add(format string, args ...any) {
	if len(p.errs.WrappedErrors()) >= maxErrors {
		p.more++
		return
	}
	if p.errs == nil {
		p.errs = validate.NewList()
	}
	p.errs = multierror.Append(p.errs, fmt.Errorf(format, args...))
}

func (p *problems) err() error {
	if p.more > 0 {
		p.errs = multierror.Append(p.errs, fmt.Errorf("and %d more", p.more))
	}
	return p.errs.ErrorOrNil()
}

// wrappedType is the type URL of a discovery Resource wrapping another resource.
const wrappedType = resourcev3.APITypePrefix + "envoy.service.discovery.v3.Resource"

// unwrap opens a response resource of typeURL, also when it comes wrapped in a
// discovery Resource (servers do that to carry a TTL or a name).
func unwrap(a *anypb.Any, typeURL string, into proto.Message) error {
	if a.GetTypeUrl() == wrappedType {
		var r discoveryv3.Resource
		if err := a.UnmarshalTo(&r); err != nil {
			return fmt.Errorf("decode wrapped resource: %w", err)
		}
		if r.GetResource() == nil {
			return fmt.Errorf("wrapped resource %q has no body", r.GetName())
		}
		a = r.GetResource()
	}
	if a.GetTypeUrl() != typeURL {
		return fmt.Errorf("resource of type %q in a %s response", a.GetTypeUrl(), typeURL)
	}
	if err := a.UnmarshalTo(into); err != nil {
		return fmt.Errorf("decode: %w", err)
	}
	return nil
}

// parseClusters reads a CDS response under the gateway contract: every cluster must be an
// inbound cluster of domain (names.InboundClusterName), of type EDS over ADS, and valid.
// Any unusable cluster fails the whole response (the caller NACKs it and keeps what it has).
func parseClusters(resources []*anypb.Any, domain string) (map[string]inbound, error) {
	out := make(map[string]inbound, len(resources))
	var p problems
	for i, a := range resources {
		var c clusterv3.Cluster
		if err := unwrap(a, resourcev3.ClusterType, &c); err != nil {
			p.add("cluster #%d: %w", i, err)
			continue
		}
		in, err := checkCluster(&c, domain)
		if err != nil {
			p.add("cluster %q: %w", c.GetName(), err)
			continue
		}
		if _, dup := out[c.GetName()]; dup {
			p.add("cluster %q: sent twice in one response", c.GetName())
			continue
		}
		out[c.GetName()] = in
	}
	if err := p.err(); err != nil {
		return nil, err
	}
	return out, nil
}

func checkCluster(c *clusterv3.Cluster, domain string) (inbound, error) {
	if err := c.Validate(); err != nil {
		return inbound{}, fmt.Errorf("invalid: %w", err)
	}
	sp, d, err := names.ParseInboundClusterName(c.GetName())
	if err != nil {
		return inbound{}, err
	}
	if d != domain {
		return inbound{}, fmt.Errorf("domain %q, but this gateway routes SNI names of %q (--domain must match the federation's)", d, domain)
	}
	if c.GetType() != clusterv3.Cluster_EDS {
		return inbound{}, fmt.Errorf("discovery type %v: the gateway contract uses EDS clusters", c.GetType())
	}
	eds := c.GetEdsClusterConfig()
	switch src := eds.GetEdsConfig(); {
	case src == nil, src.GetAds() != nil, src.GetSelf() != nil:
	default:
		return inbound{}, errors.New("eds_config must be ADS (or self): the gateway has one xDS stream")
	}
	name := eds.GetServiceName()
	if name == "" {
		name = c.GetName()
	}
	in := inbound{key: eastwest.ServiceKey{Namespace: sp.Namespace, Name: sp.Name, Port: sp.Port}, eds: name}
	if md := c.GetMetadata().GetFilterMetadata()[fault.MetadataKey]; md != nil {
		f, err := fault.FromStruct(md)
		if err != nil {
			return inbound{}, err
		}
		if !f.Covers(sp.Namespace, sp.Name) {
			return inbound{}, fmt.Errorf("%s narrowed to %s/%s on a cluster of %s/%s", fault.MetadataKey, f.Namespace, f.Service, sp.Namespace, sp.Name)
		}
		in.fault = &f
	}
	return in, nil
}

// faultsOf lists the distinct faults the clusters carry, in a stable order (a global
// fault comes on every cluster, a narrowed one on each port of its service).
func faultsOf(clusters map[string]inbound) []fault.Fault {
	var out []fault.Fault
	for _, in := range clusters {
		if in.fault != nil && !slices.Contains(out, *in.fault) {
			out = append(out, *in.fault)
		}
	}
	slices.SortFunc(out, func(a, b fault.Fault) int {
		return strings.Compare(a.ID+"|"+a.Namespace+"/"+a.Service, b.ID+"|"+b.Namespace+"/"+b.Service)
	})
	return out
}

// ready reports whether an endpoint of this health status may take connections: HEALTHY
// and UNKNOWN (no health checking) are ready; UNHEALTHY, DRAINING, TIMEOUT and DEGRADED
// are not.
func ready(h corev3.HealthStatus) bool {
	return h == corev3.HealthStatus_HEALTHY || h == corev3.HealthStatus_UNKNOWN
}

// parseCLA turns one ClusterLoadAssignment into route endpoints: address and port from
// each LbEndpoint's socket address (the export's target port), ready from its health
// status, zone from its locality, weight from its load_balancing_weight. Priorities are
// kept as failover tiers: only the lowest priority that has a ready endpoint is ready
// (the gateway's balancer has no tiers; the inbound contract uses priority 0 only).
// Endpoints are sorted by address and port.
func parseCLA(cla *endpointv3.ClusterLoadAssignment) ([]eastwest.Endpoint, error) {
	if err := cla.Validate(); err != nil {
		return nil, fmt.Errorf("invalid: %w", err)
	}
	minPrio := ^uint32(0)
	for _, l := range cla.GetEndpoints() {
		for _, lb := range l.GetLbEndpoints() {
			if ready(lb.GetHealthStatus()) && l.GetPriority() < minPrio {
				minPrio = l.GetPriority()
			}
		}
	}
	var eps []eastwest.Endpoint
	seen := map[string]bool{}
	for li, l := range cla.GetEndpoints() {
		for ei, lb := range l.GetLbEndpoints() {
			e, err := endpointOf(lb)
			if err != nil {
				return nil, fmt.Errorf("endpoints[%d].lb_endpoints[%d]: %w", li, ei, err)
			}
			e.Zone = l.GetLocality().GetZone()
			e.Ready = e.Ready && l.GetPriority() == minPrio
			if hp := e.HostPort(); seen[hp] {
				return nil, fmt.Errorf("endpoints[%d].lb_endpoints[%d]: %s listed twice", li, ei, hp)
			} else {
				seen[hp] = true
			}
			eps = append(eps, e)
		}
	}
	slices.SortFunc(eps, func(a, b eastwest.Endpoint) int {
		if c := strings.Compare(a.Address, b.Address); c != 0 {
			return c
		}
		return int(a.Port) - int(b.Port)
	})
	return eps, nil
}

func endpointOf(lb *endpointv3.LbEndpoint) (eastwest.Endpoint, error) {
	ep := lb.GetEndpoint()
	if ep == nil {
		return eastwest.Endpoint{}, errors.New("no endpoint (named endpoints are not supported)")
	}
	sa := ep.GetAddress().GetSocketAddress()
	if sa == nil {
		return eastwest.Endpoint{}, errors.New("address is not a socket address")
	}
	if sa.GetProtocol() != corev3.SocketAddress_TCP {
		return eastwest.Endpoint{}, fmt.Errorf("protocol %v: the gateway carries TCP", sa.GetProtocol())
	}
	if sa.GetResolverName() != "" {
		return eastwest.Endpoint{}, errors.New("resolver_name set: the gateway dials IP literals only")
	}
	ip, err := netip.ParseAddr(sa.GetAddress())
	if err != nil || ip.Zone() != "" {
		return eastwest.Endpoint{}, fmt.Errorf("address %q is not an IP literal", sa.GetAddress())
	}
	if _, named := sa.GetPortSpecifier().(*corev3.SocketAddress_NamedPort); named {
		return eastwest.Endpoint{}, errors.New("named ports are not supported: send port_value")
	}
	port := sa.GetPortValue()
	if port == 0 || port > 65535 {
		return eastwest.Endpoint{}, fmt.Errorf("port %d: use 1-65535", port)
	}
	hbone, err := hbonePort(lb)
	if err != nil {
		return eastwest.Endpoint{}, err
	}
	return eastwest.Endpoint{
		Address:   ip.String(),
		Port:      port,
		Ready:     ready(lb.GetHealthStatus()),
		Weight:    lb.GetLoadBalancingWeight().GetValue(),
		HBONEPort: hbone,
	}, nil
}

// hbonePort reads the endpoint's HBONE port from filter_metadata["meshfed"].hbonePort
// (docs/xds.md, the gateway contract); 0 when absent.
func hbonePort(lb *endpointv3.LbEndpoint) (uint32, error) {
	v, ok := lb.GetMetadata().GetFilterMetadata()[names.EndpointMetadataKey].GetFields()[names.HBONEPortField]
	if !ok {
		return 0, nil
	}
	n, isNum := v.GetKind().(*structpb.Value_NumberValue)
	if !isNum || n.NumberValue < 1 || n.NumberValue > 65535 || n.NumberValue != float64(uint32(n.NumberValue)) {
		return 0, fmt.Errorf("metadata %s.%s %v: want a port number 1-65535", names.EndpointMetadataKey, names.HBONEPortField, v.AsInterface())
	}
	return uint32(n.NumberValue), nil
}

// sameRoutes reports whether two tables route identically (the origin aside).
func sameRoutes(a, b *eastwest.RouteTable) bool {
	if a.Len() != b.Len() || !slices.Equal(a.Faults, b.Faults) {
		return false
	}
	for k, ea := range a.Services {
		eb, ok := b.Services[k]
		if !ok || !slices.Equal(ea, eb) {
			return false
		}
	}
	return true
}
