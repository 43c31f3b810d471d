package names

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/meshfed/meshfed/api/validate"
)

const (
	// DefaultDomain is the cluster DNS domain carried in SNI names.
	DefaultDomain = "cluster.local"
	// ClustersetDomain is the domain of xDS names (the MCS API's clusterset zone).
	ClustersetDomain = "svc.clusterset.local"
	// HealthSNI is answered by the gateway itself: remote clusters health-check it.
	HealthSNI = "health.meshfed.internal"
	// MaxSNILength bounds what we accept from the network (RFC 6066 host_name is a DNS name).
	MaxSNILength = 253
)

// SNI is a parsed `outbound_.<port>_.<subset>_.<service>.<namespace>.svc.<domain>` name.
type SNI struct {
	Port      uint32
	Subset    string // empty for none
	Service   string
	Namespace string
	Domain    string // e.g. cluster.local
}

// String formats the SNI exactly as Istio's AUTO_PASSTHROUGH gateways expect it.
func (s SNI) String() string {
	d := s.Domain
	if d == "" {
		d = DefaultDomain
	}
	return "outbound_." + strconv.FormatUint(uint64(s.Port), 10) + "_." + s.Subset + "_." +
		s.Service + "." + s.Namespace + ".svc." + d
}

// ServiceSNI is the SNI for service namespace/name on port with no subset, default domain.
func ServiceSNI(namespace, name string, port uint32) string {
	return SNI{Port: port, Service: name, Namespace: namespace, Domain: DefaultDomain}.String()
}

// ErrNotServiceSNI is returned for names that are not of the outbound_ form.
var ErrNotServiceSNI = errors.New("not an outbound_.<port>_.<subset>_.<service>.<namespace>.svc.<domain> name")

// ParseSNI parses a service SNI. It is strict: anything that is not exactly the documented
// form is refused, because the gateway must never guess where a connection goes.
// Matching is case-insensitive (DNS names are), the result is lower-case.
func ParseSNI(name string) (SNI, error) {
	if len(name) == 0 || len(name) > MaxSNILength {
		return SNI{}, fmt.Errorf("%w: length %d", ErrNotServiceSNI, len(name))
	}
	name = strings.ToLower(name)
	rest, ok := strings.CutPrefix(name, "outbound_.")
	if !ok {
		return SNI{}, ErrNotServiceSNI
	}
	portStr, rest, ok := strings.Cut(rest, "_.")
	if !ok {
		return SNI{}, ErrNotServiceSNI
	}
	subset, host, ok := strings.Cut(rest, "_.")
	if !ok {
		return SNI{}, ErrNotServiceSNI
	}
	if len(portStr) == 0 || len(portStr) > 5 || portStr[0] == '0' {
		return SNI{}, fmt.Errorf("%w: bad port %q", ErrNotServiceSNI, portStr)
	}
	port, err := strconv.ParseUint(portStr, 10, 32)
	if err != nil || port < 1 || port > 65535 {
		return SNI{}, fmt.Errorf("%w: bad port %q", ErrNotServiceSNI, portStr)
	}
	if subset != "" {
		if err := validate.DNSLabel(subset); err != nil {
			return SNI{}, fmt.Errorf("%w: subset %v", ErrNotServiceSNI, err)
		}
	}
	svc, rest, ok := strings.Cut(host, ".")
	if !ok {
		return SNI{}, ErrNotServiceSNI
	}
	ns, rest, ok := strings.Cut(rest, ".")
	if !ok {
		return SNI{}, ErrNotServiceSNI
	}
	domain, ok := strings.CutPrefix(rest, "svc.")
	if !ok {
		return SNI{}, fmt.Errorf("%w: missing .svc.", ErrNotServiceSNI)
	}
	if err := validate.DNSLabel(svc); err != nil {
		return SNI{}, fmt.Errorf("%w: service %v", ErrNotServiceSNI, err)
	}
	if err := validate.DNSLabel(ns); err != nil {
		return SNI{}, fmt.Errorf("%w: namespace %v", ErrNotServiceSNI, err)
	}
	if err := validate.DNSSubdomain(domain); err != nil {
		return SNI{}, fmt.Errorf("%w: domain %v", ErrNotServiceSNI, err)
	}
	return SNI{Port: uint32(port), Subset: subset, Service: svc, Namespace: ns, Domain: domain}, nil
}

// ServiceHost is `<service>.<namespace>.svc.clusterset.local`.
func ServiceHost(namespace, name string) string {
	return name + "." + namespace + "." + ClustersetDomain
}

// ClusterName is the xDS (CDS/EDS) name `outbound|<port>||<service>.<namespace>.svc.clusterset.local`.
func ClusterName(namespace, name string, port uint32) string {
	return "outbound|" + strconv.FormatUint(uint64(port), 10) + "||" + ServiceHost(namespace, name)
}

// ListenerName is the xDS LDS/RDS name for proxyless gRPC:
// `<service>.<namespace>.svc.clusterset.local:<port>`. It is also what a gRPC client dials
// as `xds:///<service>.<namespace>.svc.clusterset.local:<port>`.
func ListenerName(namespace, name string, port uint32) string {
	return ServiceHost(namespace, name) + ":" + strconv.FormatUint(uint64(port), 10)
}

// ServicePort identifies one port of one service.
type ServicePort struct {
	Namespace string
	Name      string
	Port      uint32
}

// ParseClusterName parses an xDS cluster name made by ClusterName.
func ParseClusterName(s string) (ServicePort, error) {
	rest, ok := strings.CutPrefix(s, "outbound|")
	if !ok {
		return ServicePort{}, fmt.Errorf("xds cluster %q: want outbound|<port>||<svc>.<ns>.%s", s, ClustersetDomain)
	}
	portStr, host, ok := strings.Cut(rest, "||")
	if !ok {
		return ServicePort{}, fmt.Errorf("xds cluster %q: want outbound|<port>||<svc>.<ns>.%s", s, ClustersetDomain)
	}
	return parseHostPort(s, host, portStr)
}

// ParseListenerName parses an xDS listener name made by ListenerName.
func ParseListenerName(s string) (ServicePort, error) {
	i := strings.LastIndexByte(s, ':')
	if i < 0 {
		return ServicePort{}, fmt.Errorf("xds listener %q: want <svc>.<ns>.%s:<port>", s, ClustersetDomain)
	}
	return parseHostPort(s, s[:i], s[i+1:])
}

func parseHostPort(full, host, portStr string) (ServicePort, error) {
	p, err := strconv.ParseUint(portStr, 10, 32)
	if err != nil || validate.Port(int64(p)) != nil {
		return ServicePort{}, fmt.Errorf("%q: bad port %q", full, portStr)
	}
	base, ok := strings.CutSuffix(host, "."+ClustersetDomain)
	if !ok {
		return ServicePort{}, fmt.Errorf("%q: host must end in .%s", full, ClustersetDomain)
	}
	svc, ns, ok := strings.Cut(base, ".")
	if !ok || validate.DNSLabel(svc) != nil || validate.DNSLabel(ns) != nil {
		return ServicePort{}, fmt.Errorf("%q: host must be <service>.<namespace>.%s", full, ClustersetDomain)
	}
	return ServicePort{Namespace: ns, Name: svc, Port: uint32(p)}, nil
}
