package names

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/meshfed/meshfed/api/validate"
)

// The local gateway takes its route table from its cluster's federation service over xDS.
// It identifies itself with this node metadata field; see docs/xds.md ("gateway contract").
const (
	// NodeRoleKey is the xDS node metadata field naming the client's role.
	NodeRoleKey = "meshfed.role"
	// NodeRoleGateway marks the east-west gateway of this cluster.
	NodeRoleGateway = "gateway"
)

// Per-endpoint fields of the gateway contract's EDS that Envoy has no field for travel in
// the LbEndpoint's metadata, filter_metadata[EndpointMetadataKey] (a Struct).
const (
	// EndpointMetadataKey is the filter_metadata key of meshfed's endpoint fields.
	EndpointMetadataKey = "meshfed.endpoint"
	// HBONEPortField is the endpoint's HBONE port (a number, 1-65535); absent when the
	// endpoint takes no HBONE tunnels.
	HBONEPortField = "hbonePort"
)

// InboundClusterName is the xDS cluster a gateway node gets for each service port its
// cluster exports: `inbound|<port>||<service>.<namespace>.svc.<domain>` (domain default
// cluster.local: the domain of the SNI names the gateway routes).
func InboundClusterName(namespace, name string, port uint32, domain string) string {
	if domain == "" {
		domain = DefaultDomain
	}
	return "inbound|" + strconv.FormatUint(uint64(port), 10) + "||" + name + "." + namespace + ".svc." + domain
}

// ParseInboundClusterName parses a name made by InboundClusterName.
func ParseInboundClusterName(s string) (sp ServicePort, domain string, err error) {
	bad := func(why string) (ServicePort, string, error) {
		return ServicePort{}, "", fmt.Errorf("xds cluster %q: %s; want inbound|<port>||<service>.<namespace>.svc.<domain>", s, why)
	}
	if len(s) > 512 {
		return bad("too long")
	}
	rest, ok := strings.CutPrefix(s, "inbound|")
	if !ok {
		return bad("no inbound| prefix")
	}
	portStr, host, ok := strings.Cut(rest, "||")
	if !ok {
		return bad("no || after the port")
	}
	if len(portStr) == 0 || len(portStr) > 5 || portStr[0] == '0' {
		return bad("bad port")
	}
	p, err := strconv.ParseUint(portStr, 10, 32)
	if err != nil || validate.Port(int64(p)) != nil {
		return bad("bad port")
	}
	svc, rest, ok := strings.Cut(host, ".")
	if !ok {
		return bad("no namespace")
	}
	ns, rest, ok := strings.Cut(rest, ".")
	if !ok {
		return bad("no .svc.")
	}
	domain, ok = strings.CutPrefix(rest, "svc.")
	if !ok {
		return bad("no .svc.")
	}
	if validate.DNSLabel(svc) != nil || validate.DNSLabel(ns) != nil || validate.DNSSubdomain(domain) != nil {
		return bad("service and namespace must be DNS labels, the domain a DNS name")
	}
	return ServicePort{Namespace: ns, Name: svc, Port: uint32(p)}, domain, nil
}
