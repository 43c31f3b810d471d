package istio

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"sort"
	"strconv"
	"strings"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	mcp "istio.io/api/mcp/v1alpha1"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/meshfed/meshfed/federation/planner"
	"github.com/meshfed/meshfed/keyspace/records"
)

// Labels and names of the resources meshfed gives istiod.
const (
	// LabelManagedBy marks every resource (value "meshfed").
	LabelManagedBy = "app.kubernetes.io/managed-by"
	// LabelService selects a service's WorkloadEntries (the ServiceEntry's workloadSelector).
	LabelService = "federation.meshfed.io/service"
	// LabelCluster names the remote cluster a WorkloadEntry stands for.
	LabelCluster = "federation.meshfed.io/cluster"
	// LabelRankPrefix + N marks a WorkloadEntry of the cluster meshfed ranks Nth after this
	// cluster's own endpoints; the DestinationRule's failoverPriority turns it into Envoy
	// priority N (see failoverPriority).
	LabelRankPrefix = "failover.meshfed.io/rank-"
	// NamePrefix starts the name of every resource meshfed makes.
	NamePrefix = "meshfed-"
)

// Service is one imported service's plan as federation/xds serves it, with what Istio needs
// beside the plan.
type Service struct {
	Plan  planner.ServicePlan
	Ports []records.Port
	// Identities of the remote workloads (ServiceIdentities): the ServiceEntry's
	// subjectAltNames when every remote cluster's are known.
	Identities Identities
}

// BuildOptions are the cluster-wide settings of the resources.
type BuildOptions struct {
	// Domain is the cluster DNS domain (default cluster.local): hosts are
	// <svc>.<ns>.svc.<domain>, as in the SNI meshfed's gateways route.
	Domain string
}

func (o BuildOptions) domain() string {
	if o.Domain == "" {
		return "cluster.local"
	}
	return o.Domain
}

// host is the service's Istio host, <svc>.<ns>.svc.<domain>: the name the sidecars' SNI and
// ztunnel's HBONE authority carry, the same for the MCP and the Kubernetes resources.
func (o BuildOptions) host(ns, name string) string {
	return fmt.Sprintf("%s.%s.svc.%s", name, ns, o.domain())
}

// Skip says why part of a plan was left out of istiod's resources.
type Skip struct {
	Service, Cluster, Reason string
}

// Reasons of Skip (and SkipNoServiceAccount).
const (
	SkipGatewayHostname  = "gateway-hostname"   // istiod's STATIC endpoints must be IP addresses
	SkipLocalAfterRemote = "local-after-remote" // policy ranks this cluster after a remote one
)

// Explain says what the skip means and what fixes it, for the warning logged once per
// skip.
func (s Skip) Explain() string {
	switch s.Reason {
	case SkipGatewayHostname:
		return "a gateway address of the cluster is a hostname; istiod's STATIC endpoints must be IP addresses: that address is left out (join the cluster with IP gateway addresses)"
	case SkipLocalAfterRemote:
		return "the service's policy ranks this cluster's own endpoints after a remote cluster, which istiod's failoverPriority cannot express: the remote clusters follow this cluster's own endpoints (policy localFirst)"
	case SkipNoServiceAccount:
		return "the remote cluster exports ready endpoints of the service without a service account (or its cluster record is unknown), so its workloads' SPIFFE IDs are unknown: " +
			"sidecars get no subjectAltNames for this service and check the remote certificates against the federated roots only (any workload of a federated trust domain passes), " +
			"and ambient importers leave the cluster out (ztunnel refuses a destination whose SPIFFE ID is not in the ServiceEntry's subjectAltNames); " +
			"fix: set serviceAccount on the cluster's endpoints in its exports file, or export from Kubernetes (the pods' spec.serviceAccountName)"
	}
	return s.Reason
}

// BuildService returns the resources of one service by type: a ServiceEntry for the
// service's host (MESH_INTERNAL, STATIC, selecting its WorkloadEntries), one WorkloadEntry
// per usable gateway address of each remote cluster in the plan (address = the gateway,
// every service port mapped to the gateway's port, locality region/zone/cluster, weight =
// the cluster's ready endpoints, tlsMode istio so sidecars originate Istio mTLS with the SNI
// outbound_.<port>_._.<host>), and a DestinationRule whose outlierDetection turns on Istio's
// failover and whose failoverPriority reproduces the plan's order (failoverPriority). The
// ServiceEntry's subjectAltNames are svc.Identities.SANs when no remote cluster's are
// unknown (else none, and a SkipNoServiceAccount per such cluster). A
// service with no remote level yields no resources: istiod then knows only its own
// endpoints, if any.
//
// The WorkloadEntries carry no `network`, on purpose (read in the pinned istiod; docs/istio.md
// "Ambient"). They are for Envoy proxies, which istiod feeds from its config store, MCP
// included: an endpoint on another network is replaced in a sidecar's EDS by that network's
// gateways at the gateway's port, and the istio-remote Gateway that --istio-ambient writes
// for a remote network (label topology.istio.io/network = the remote cluster record's
// network) has only an HBONE listener, so a sidecar would speak Istio mTLS with an SNI to
// meshfed's HBONE port and be refused. Without a network the address (the remote cluster's
// SNI gateway) is dialled directly, which is what meshfed's gateways route. ztunnel never
// sees these resources: istiod's ambient index reads ServiceEntries and WorkloadEntries from
// the Kubernetes API only (pilot/pkg/serviceregistry/ambient, kclient informers), not from
// configSources.
func BuildService(svc *Service, opts BuildOptions) (map[string][]*mcp.Resource, []Skip, error) {
	p := &svc.Plan
	host := opts.host(p.Namespace, p.Name)
	// The plan is per port; Istio's WorkloadEntries are per service. meshfed's planner orders
	// clusters per service (ports differ only by which clusters export the port), so the
	// order of the first port with levels stands for all, and a cluster serving a port it
	// does not export is refused by its gateway (the SNI names the port).
	var levels []planner.Level
	for _, pp := range p.Ports {
		if len(pp.Levels) > len(levels) {
			levels = pp.Levels
		}
	}
	var skips []Skip
	type remote struct {
		lvl  planner.Level
		rank int
	}
	var remotes []remote
	for i, l := range levels {
		if l.Direct {
			if i > 0 {
				skips = append(skips, Skip{Service: p.Key(), Cluster: l.Cluster, Reason: SkipLocalAfterRemote})
			}
			continue
		}
		remotes = append(remotes, remote{lvl: l, rank: len(remotes) + 1})
	}
	if len(remotes) == 0 {
		return nil, skips, nil
	}
	ports := servicePorts(svc.Ports)
	out := map[string][]*mcp.Resource{}

	se := serviceEntry(host, ports, map[string]string{LabelService: p.Name})
	// subjectAltNames: what the sidecars check the remote workload's certificate against
	// (istiod's ISTIO_MUTUAL upstream TLS takes the service's accounts, expanded over
	// trustDomainAliases). All or nothing: a list that misses one remote cluster's
	// identities would refuse that cluster's workloads, so when any is unknown the list
	// stays empty (roots only) and the skip says so.
	if len(svc.Identities.Unknown) > 0 {
		for _, c := range svc.Identities.Unknown {
			skips = append(skips, Skip{Service: p.Key(), Cluster: c, Reason: SkipNoServiceAccount})
		}
	} else {
		se.SubjectAltNames = svc.Identities.SANs
	}
	r, err := resource(p.Namespace, NamePrefix+p.Name, se, map[string]string{LabelManagedBy: "meshfed"})
	if err != nil {
		return nil, nil, err
	}
	out[TypeServiceEntry] = append(out[TypeServiceEntry], r)

	for _, rm := range remotes {
		l := rm.lvl
		for i, ep := range l.Endpoints {
			if net.ParseIP(ep.Host) == nil {
				skips = append(skips, Skip{Service: p.Key(), Cluster: l.Cluster, Reason: SkipGatewayHostname})
				continue
			}
			we := &networking.WorkloadEntry{
				Address:  ep.Host,
				Ports:    map[string]uint32{},
				Locality: locality(l.Region, l.Zone, l.Cluster),
				Weight:   l.Weight,
				Labels: map[string]string{
					LabelService:                            p.Name,
					LabelCluster:                            l.Cluster,
					"security.istio.io/tlsMode":             "istio",
					LabelRankPrefix + strconv.Itoa(rm.rank): "true",
				},
			}
			for _, sp := range ports {
				we.Ports[sp.name] = ep.Port
			}
			name := fmt.Sprintf("%s%s-%s-%d", NamePrefix, p.Name, l.Cluster, i)
			r, err := resource(p.Namespace, name, we, we.Labels)
			if err != nil {
				return nil, nil, err
			}
			out[TypeWorkloadEntry] = append(out[TypeWorkloadEntry], r)
		}
	}

	dr := &networking.DestinationRule{
		Host: host,
		TrafficPolicy: &networking.TrafficPolicy{
			LoadBalancer: &networking.LoadBalancerSettings{
				LocalityLbSetting: &networking.LocalityLoadBalancerSetting{
					Enabled:          wrapperspb.Bool(true),
					FailoverPriority: failoverPriority(len(remotes)),
				},
			},
			// Istio applies failover (priorities) only with outlier detection. meshfed's
			// health checks take a dead gateway out of the plan within seconds; this is the
			// sidecar's own, slower, second line.
			OutlierDetection: &networking.OutlierDetection{
				ConsecutiveGatewayErrors: wrapperspb.UInt32(5),
				Consecutive_5XxErrors:    wrapperspb.UInt32(5),
				Interval:                 durationpb.New(5e9),
				BaseEjectionTime:         durationpb.New(15e9),
				MaxEjectionPercent:       100,
			},
		},
	}
	r, err = resource(p.Namespace, NamePrefix+p.Name, dr, map[string]string{LabelManagedBy: "meshfed"})
	if err != nil {
		return nil, nil, err
	}
	out[TypeDestinationRule] = append(out[TypeDestinationRule], r)
	return out, skips, nil
}

// locality is Istio's region/zone/subzone for a cluster: the subzone is the cluster's name.
func locality(region, zone, cluster string) string { return region + "/" + zone + "/" + cluster }

// failoverPriority is the DestinationRule's list for n remote ranks:
// [rank-n=, rank-n-1=, ..., rank-1=]. istiod gives an endpoint priority len(list)-j, where j
// is the first entry whose label value differs from the entry's value ("" here; istio's
// loadbalancer.applyFailoverPriorityPerLocality): this cluster's own pods carry none of the
// labels and match every entry (priority 0); a WorkloadEntry labelled rank-r first differs
// at j = n-r, so gets priority r. istiod then compacts the priorities to 0..k.
func failoverPriority(n int) []string {
	out := make([]string, 0, n)
	for r := n; r >= 1; r-- {
		out = append(out, LabelRankPrefix+strconv.Itoa(r)+"=")
	}
	return out
}

// serviceEntry is the ServiceEntry of one service, for the MCP source and for the
// Kubernetes API alike: the host, MESH_INTERNAL, STATIC, the ports, and the workloadSelector
// that picks its WorkloadEntries. No addresses: istiod allocates one where it needs it.
func serviceEntry(host string, ports []svcPort, selector map[string]string) *networking.ServiceEntry {
	se := &networking.ServiceEntry{
		Hosts:            []string{host},
		Location:         networking.ServiceEntry_MESH_INTERNAL,
		Resolution:       networking.ServiceEntry_STATIC,
		WorkloadSelector: &networking.WorkloadSelector{Labels: selector},
	}
	for _, sp := range ports {
		se.Ports = append(se.Ports, &networking.ServicePort{Number: uint32(sp.Port.Port), Name: sp.name, Protocol: sp.protocol})
	}
	return se
}

type svcPort struct {
	records.Port
	name, protocol string
}

// servicePorts names each port for Istio (the export's name, or tcp-<port>) with the Istio
// protocol of its appProtocol (TCP when none: the sidecar still originates mTLS, and
// meshfed's gateway passes TLS through whatever is inside).
func servicePorts(ports []records.Port) []svcPort {
	var out []svcPort
	seen := map[string]bool{}
	for _, p := range ports {
		if !strings.EqualFold(p.Protocol, "TCP") && p.Protocol != "" {
			continue // UDP/SCTP: not through a TLS gateway
		}
		proto := "TCP"
		switch strings.ToLower(p.AppProtocol) {
		case "http":
			proto = "HTTP"
		case "http2", "kubernetes.io/h2c":
			proto = "HTTP2"
		case "grpc":
			proto = "GRPC"
		case "https", "tls", "kubernetes.io/wss":
			proto = "TLS"
		}
		name := p.Name
		if name == "" || seen[name] {
			name = strings.ToLower(proto) + "-" + strconv.Itoa(int(p.Port))
		}
		seen[name] = true
		out = append(out, svcPort{Port: p, name: name, protocol: proto})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Port.Port < out[j].Port.Port })
	return out
}

// resource wraps a spec as an MCP resource named ns/name, versioned by its content (istiod
// updates its store only when the version changes).
//
// The body is marshalled deterministically too (anypb.New is not: map fields such as a
// WorkloadEntry's labels and ports come out in map order), so that the same content is the
// same bytes, and a State's versions are equal in every process (NewState hashes them).
func resource(ns, name string, spec proto.Message, labels map[string]string) (*mcp.Resource, error) {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(spec)
	if err != nil {
		return nil, err
	}
	body := &anypb.Any{TypeUrl: "type.googleapis.com/" + string(spec.ProtoReflect().Descriptor().FullName()), Value: b}
	h := sha256.Sum256(b)
	lb := map[string]string{}
	for k, v := range labels {
		lb[k] = v
	}
	lb[LabelManagedBy] = "meshfed"
	return &mcp.Resource{
		Metadata: &mcp.Metadata{Name: ns + "/" + name, Version: hex.EncodeToString(h[:8]), Labels: lb},
		Body:     body,
	}, nil
}
