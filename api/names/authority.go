package names

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/meshfed/meshfed/api/validate"
)

// MaxAuthorityLength bounds an HBONE :authority accepted from the network (a DNS name of
// at most 253 characters, a colon and a port).
const MaxAuthorityLength = 253 + 6

// ErrIPAuthority is returned for an authority whose host is an IP literal: the gateway
// routes service names only, never addresses (it must not be a general tunnel).
var ErrIPAuthority = errors.New("the host is an IP literal; name a service: <service>.<namespace>.svc.<domain>:<port>")

// ErrNotServiceAuthority is returned for authorities not of the form
// <service>.<namespace>.svc.<domain>:<port>.
var ErrNotServiceAuthority = errors.New("not a <service>.<namespace>.svc.<domain>:<port> authority")

// Authority is a parsed HBONE CONNECT :authority, `<service>.<namespace>.svc.<domain>:<port>`
// (what Istio ambient's ztunnel sends to a remote network's east-west gateway).
type Authority struct {
	Service   string
	Namespace string
	Domain    string
	Port      uint32
}

// String formats the authority.
func (a Authority) String() string {
	d := a.Domain
	if d == "" {
		d = DefaultDomain
	}
	return a.Service + "." + a.Namespace + ".svc." + d + ":" + strconv.FormatUint(uint64(a.Port), 10)
}

// ParseAuthority parses an HBONE :authority strictly: exactly one service name of the
// documented form with a port 1-65535 (no leading zeros); an IP literal host is
// ErrIPAuthority, anything else wraps ErrNotServiceAuthority. Matching is
// case-insensitive (DNS names are), the result is lower-case.
func ParseAuthority(s string) (Authority, error) {
	if len(s) == 0 || len(s) > MaxAuthorityLength {
		return Authority{}, fmt.Errorf("%w: length %d", ErrNotServiceAuthority, len(s))
	}
	i := strings.LastIndexByte(s, ':')
	if i < 0 {
		return Authority{}, fmt.Errorf("%w: no port", ErrNotServiceAuthority)
	}
	host, portStr := s[:i], s[i+1:]
	if strings.HasPrefix(host, "[") || strings.Contains(host, ":") {
		return Authority{}, ErrIPAuthority // [v6]:port, or a bare v6 literal
	}
	if _, err := netip.ParseAddr(host); err == nil {
		return Authority{}, ErrIPAuthority
	}
	if len(portStr) == 0 || len(portStr) > 5 || portStr[0] == '0' {
		return Authority{}, fmt.Errorf("%w: bad port %q", ErrNotServiceAuthority, portStr)
	}
	port, err := strconv.ParseUint(portStr, 10, 32)
	if err != nil || validate.Port(int64(port)) != nil {
		return Authority{}, fmt.Errorf("%w: bad port %q", ErrNotServiceAuthority, portStr)
	}
	host = strings.ToLower(host)
	svc, rest, ok := strings.Cut(host, ".")
	if !ok {
		return Authority{}, fmt.Errorf("%w: no namespace", ErrNotServiceAuthority)
	}
	ns, rest, ok := strings.Cut(rest, ".")
	if !ok {
		return Authority{}, fmt.Errorf("%w: no .svc.", ErrNotServiceAuthority)
	}
	domain, ok := strings.CutPrefix(rest, "svc.")
	if !ok {
		return Authority{}, fmt.Errorf("%w: no .svc.", ErrNotServiceAuthority)
	}
	if err := validate.DNSLabel(svc); err != nil {
		return Authority{}, fmt.Errorf("%w: service %v", ErrNotServiceAuthority, err)
	}
	if err := validate.DNSLabel(ns); err != nil {
		return Authority{}, fmt.Errorf("%w: namespace %v", ErrNotServiceAuthority, err)
	}
	if err := validate.DNSSubdomain(domain); err != nil {
		return Authority{}, fmt.Errorf("%w: domain %v", ErrNotServiceAuthority, err)
	}
	return Authority{Service: svc, Namespace: ns, Domain: domain, Port: uint32(port)}, nil
}
