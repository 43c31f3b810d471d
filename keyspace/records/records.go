package records

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"github.com/meshfed/meshfed/api/fault"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/meshfed/meshfed/api/exports"
	"github.com/meshfed/meshfed/api/validate"
)

// CurrentVersion is the record version this binary writes and the newest it reads.
const CurrentVersion = 1

// MaxValueBytes keeps every value well under etcd's default 1.5 MiB request limit.
const MaxValueBytes = 1 << 20

// Meta is embedded in every record: the `version` field of versioned JSON.
type Meta struct {
	Version int `json:"version"`
}

func (m *Meta) setVersion()  { m.Version = CurrentVersion }
func (m *Meta) version() int { return m.Version }

// Record is implemented by every record type (as a pointer).
type Record interface {
	// Validate checks every field and reports all problems, each naming its field.
	Validate() error
	setVersion()
	version() int
}

// Encode validates r, stamps the current version and marshals it.
func Encode(r Record) ([]byte, error) {
	r.setVersion()
	if err := r.Validate(); err != nil {
		return nil, fmt.Errorf("invalid %T: %w", r, err)
	}
	b, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("encode %T: %w", r, err)
	}
	if len(b) > MaxValueBytes {
		return nil, fmt.Errorf("encode %T: %d bytes is over the %d byte limit of one record", r, len(b), MaxValueBytes)
	}
	return b, nil
}

// Decode parses and validates a record. Unknown fields are tolerated (a newer writer may add
// some); a missing or newer version is refused.
func Decode[T any, PT interface {
	*T
	Record
}](data []byte) (*T, error) {
	if len(data) > MaxValueBytes {
		return nil, fmt.Errorf("record is %d bytes, over the %d byte limit", len(data), MaxValueBytes)
	}
	var v T
	p := PT(&v)
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(p); err != nil {
		return nil, fmt.Errorf("decode %T: %w", p, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("decode %T: trailing data after the record", p)
	}
	switch ver := p.version(); {
	case ver == 0:
		return nil, fmt.Errorf("decode %T: no \"version\" field: not a meshfed record", p)
	case ver > CurrentVersion:
		return nil, fmt.Errorf("decode %T: record version %d was written by a newer meshfed (this one reads up to %d): upgrade this cluster", p, ver, CurrentVersion)
	}
	if err := p.Validate(); err != nil {
		return nil, fmt.Errorf("invalid %T: %w", p, err)
	}
	return &v, nil
}

// Cluster is clusters/<name>: one member of the clusterset, written by `meshfed join`.
type Cluster struct {
	Meta
	Name        string   `json:"name"`
	Network     string   `json:"network"`
	Region      string   `json:"region"`
	Zone        string   `json:"zone"`
	TrustDomain string   `json:"trustDomain"`
	Gateways    []string `json:"gateways"`
	// HBONEGateways are the HOST:PORT addresses of this cluster's east-west gateway HBONE
	// listeners (Istio ambient's double HBONE, usually port 15008), as another network's
	// ztunnels dial them. Optional (a cluster without one is reachable over SNI only); all
	// share one port, because istiod's `istio-remote` Gateway carries one HBONE port per
	// network gateway set.
	HBONEGateways []string `json:"hboneGateways,omitempty"`
	// SharesTrustDomainWith names the cluster that owns this cluster's trust domain when the
	// two share one trust domain and one root (the clusters of one Istio mesh on several
	// networks). The owner alone publishes and rotates bundles/<trustDomain>; this cluster
	// reads it like any federated bundle and never writes it. Empty: the cluster owns its
	// trust domain (the default; no other cluster may have it unless it names this one).
	// The clusters of one trust domain trust each other's workloads fully.
	SharesTrustDomainWith string    `json:"sharesTrustDomainWith,omitempty"`
	JoinedAt              time.Time `json:"joinedAt"`
}

// BundleOwner is the cluster that owns (publishes and rotates) bundles/<TrustDomain>:
// SharesTrustDomainWith when set, else the cluster itself.
func (c *Cluster) BundleOwner() string {
	if c.SharesTrustDomainWith != "" {
		return c.SharesTrustDomainWith
	}
	return c.Name
}

// Validate implements Record.
func (c *Cluster) Validate() error {
	var errs validate.Errors
	errs.AddErr("name", validate.DNSLabel(c.Name))
	errs.AddErr("network", validate.DNSLabel(c.Network))
	errs.AddErr("region", validate.DNSLabel(c.Region))
	errs.AddErr("zone", validate.DNSLabel(c.Zone))
	errs.AddErr("trustDomain", validate.DNSSubdomain(c.TrustDomain))
	if len(c.Gateways) == 0 {
		errs.Add("gateways", "at least one east-west gateway address (HOST:PORT) is required")
	}
	seen := map[string]bool{}
	for i, g := range c.Gateways {
		errs.AddErr(fmt.Sprintf("gateways[%d]", i), validate.HostPort(g))
		if seen[g] {
			errs.Add(fmt.Sprintf("gateways[%d]", i), "%s is listed twice", g)
		}
		seen[g] = true
	}
	ValidateHBONEGateways(&errs, "hboneGateways", c.HBONEGateways)
	if c.SharesTrustDomainWith != "" {
		if err := validate.DNSLabel(c.SharesTrustDomainWith); err != nil {
			errs.AddErr("sharesTrustDomainWith", err)
		} else if c.SharesTrustDomainWith == c.Name {
			errs.Add("sharesTrustDomainWith", "%s names the cluster itself: leave it empty for a cluster that owns its trust domain", c.Name)
		}
	}
	if c.JoinedAt.IsZero() {
		errs.Add("joinedAt", "must be set")
	}
	return errs.Err()
}

// ValidateHBONEGateways checks HBONE gateway addresses: HOST:PORT each, none twice, one
// port for all. field names the list in errors (a record field, or a flag for join).
func ValidateHBONEGateways(errs *validate.Errors, field string, gws []string) {
	seen := map[string]bool{}
	port := ""
	for i, g := range gws {
		f := fmt.Sprintf("%s[%d]", field, i)
		if err := validate.HostPort(g); err != nil {
			errs.AddErr(f, err)
			continue
		}
		if seen[g] {
			errs.Add(f, "%s is listed twice", g)
		}
		seen[g] = true
		p := g[strings.LastIndexByte(g, ':')+1:]
		if port == "" {
			port = p
		} else if p != port {
			errs.Add(f, "port %s differs from %s[0]'s %s: give every HBONE gateway address the same port (istiod takes one HBONE port per network gateway)", p, field, port)
		}
	}
}

// WorkloadID is the SPIFFE ID of a workload of this cluster running as Kubernetes service
// account sa in namespace ns: spiffe://<trustDomain>/ns/<ns>/sa/<sa> (Istio's and SPIRE's
// Kubernetes form). TrustDomain is the effective one also for a cluster that shares
// another's (sharesTrustDomainWith): join and CheckTrustDomains hold a sharer to its
// owner's trust domain, so the record's own field is it.
func (c *Cluster) WorkloadID(ns, sa string) string {
	return "spiffe://" + c.TrustDomain + "/ns/" + ns + "/sa/" + sa
}

// HBONEPort is the port of the cluster's HBONE gateway addresses (0: none).
func (c *Cluster) HBONEPort() int32 {
	if len(c.HBONEGateways) == 0 {
		return 0
	}
	g := c.HBONEGateways[0]
	var n int32
	for _, ch := range g[strings.LastIndexByte(g, ':')+1:] {
		if ch < '0' || ch > '9' {
			return 0
		}
		n = n*10 + ch - '0'
	}
	return n
}

// SameMember reports whether o describes the same cluster (everything but the join time),
// which makes a repeated join idempotent.
func (c *Cluster) SameMember(o *Cluster) bool {
	return c.Name == o.Name && c.Network == o.Network && c.Region == o.Region && c.Zone == o.Zone &&
		c.TrustDomain == o.TrustDomain && slices.Equal(c.Gateways, o.Gateways) &&
		slices.Equal(c.HBONEGateways, o.HBONEGateways) && c.SharesTrustDomainWith == o.SharesTrustDomainWith
}

// CheckTrustDomains checks the trust domains of a set of cluster records (by name) against
// each other: a trust domain belongs to one cluster, its owner, and any other cluster with
// it must name that owner in sharesTrustDomainWith (an owner that has the trust domain
// and shares no one's). It returns one problem per cluster that breaks the rule, by name.
func CheckTrustDomains(clusters map[string]*Cluster) map[string]string {
	out := map[string]string{}
	byTD := map[string][]string{}
	for name, c := range clusters {
		byTD[c.TrustDomain] = append(byTD[c.TrustDomain], name)
	}
	for _, names := range byTD {
		sort.Strings(names)
	}
	for name, c := range clusters {
		if c.SharesTrustDomainWith != "" {
			o, ok := clusters[c.SharesTrustDomainWith]
			switch {
			case !ok:
				out[name] = fmt.Sprintf("shares the trust domain %s of cluster %s, which is not a member", c.TrustDomain, c.SharesTrustDomainWith)
			case o.TrustDomain != c.TrustDomain:
				out[name] = fmt.Sprintf("shares the trust domain of cluster %s, but has %s and %s has %s", o.Name, c.TrustDomain, o.Name, o.TrustDomain)
			case o.SharesTrustDomainWith != "":
				out[name] = fmt.Sprintf("shares the trust domain %s of cluster %s, which itself shares that of %s: name the owner", c.TrustDomain, o.Name, o.SharesTrustDomainWith)
			}
			continue
		}
		for _, other := range byTD[c.TrustDomain] {
			if other != name && clusters[other].SharesTrustDomainWith == "" {
				out[name] = fmt.Sprintf("trust domain %s is also owned by cluster %s: a trust domain has one owner", c.TrustDomain, other)
				break
			}
		}
	}
	return out
}

// Alive is alive/<cluster>: the heartbeat, attached to the cluster's lease so that it
// disappears by itself when the federation service stops renewing.
type Alive struct {
	Meta
	Cluster  string    `json:"cluster"`
	Instance string    `json:"instance"`
	Since    time.Time `json:"since"`
	TTL      int64     `json:"ttlSeconds"`
}

// Validate implements Record.
func (a *Alive) Validate() error {
	var errs validate.Errors
	errs.AddErr("cluster", validate.DNSLabel(a.Cluster))
	if a.Instance == "" || len(a.Instance) > 253 {
		errs.Add("instance", "must be 1-253 characters naming the process (host/pid)")
	}
	if a.TTL < 1 || a.TTL > 3600 {
		errs.Add("ttlSeconds", "%d: use 1-3600", a.TTL)
	}
	return errs.Err()
}

// Service types of an export (MCS ServiceImport types).
const (
	TypeClusterSetIP = "ClusterSetIP"
	TypeHeadless     = "Headless"
)

// Session affinities (Kubernetes Service sessionAffinity).
const (
	AffinityNone     = "None"
	AffinityClientIP = "ClientIP"
)

// Export is exports/<cluster>/<namespace>/<service>: one service one cluster offers.
type Export struct {
	Meta
	Cluster         string     `json:"cluster"`
	Namespace       string     `json:"namespace"`
	Name            string     `json:"name"`
	Type            string     `json:"type"`
	SessionAffinity string     `json:"sessionAffinity,omitempty"`
	Ports           []Port     `json:"ports"`
	Endpoints       []Endpoint `json:"endpoints"`
	// Revision grows by one on every content change this cluster publishes; importers use
	// it to ignore replays and to tell "nothing changed" from "changed back".
	Revision int64 `json:"revision"`
	// ExportedAt is when the export was created (the ServiceExport's creation time): the
	// MCS API resolves conflicts in favour of the oldest export.
	ExportedAt time.Time `json:"exportedAt"`
	UpdatedAt  time.Time `json:"updatedAt"`
}

// Port is one service port. TargetPort is what the exporting cluster's gateway dials on an
// endpoint; importers only see Port (the SNI carries it).
type Port struct {
	Name        string `json:"name,omitempty"`
	Port        int32  `json:"port"`
	TargetPort  int32  `json:"targetPort,omitempty"`
	Protocol    string `json:"protocol"`
	AppProtocol string `json:"appProtocol,omitempty"`
}

// Endpoint is one backend of the service in the exporting cluster.
type Endpoint struct {
	Address string `json:"address"`
	Zone    string `json:"zone,omitempty"`
	Ready   bool   `json:"ready"`
	Weight  uint32 `json:"weight,omitempty"`
	// HBONEPort is the endpoint's HBONE port (0: the endpoint takes no HBONE tunnels).
	HBONEPort int32 `json:"hbonePort,omitempty"`
	// ServiceAccount is the Kubernetes service account of the workload behind the
	// endpoint ("" when the exporter does not know it). Added after version 1 was
	// fixed, like hbonePort: optional, so records written before it (and by exporters that
	// do not know it) decode unchanged and mean "unknown". The workload's SPIFFE ID is
	// Cluster.WorkloadID(namespace, ServiceAccount) of the exporting cluster.
	ServiceAccount string `json:"serviceAccount,omitempty"`
}

// ServiceKey is namespace/name.
func (e *Export) ServiceKey() string { return e.Namespace + "/" + e.Name }

// ReadyEndpoints counts ready endpoints.
func (e *Export) ReadyEndpoints() int {
	n := 0
	for _, ep := range e.Endpoints {
		if ep.Ready {
			n++
		}
	}
	return n
}

// ServiceAccounts returns the service accounts of the endpoints that include selects (all
// when include is nil), sorted and each once, and how many of those endpoints have none
// (the exporter does not know it).
func (e *Export) ServiceAccounts(include func(Endpoint) bool) (accounts []string, unknown int) {
	for _, ep := range e.Endpoints {
		if include != nil && !include(ep) {
			continue
		}
		if ep.ServiceAccount == "" {
			unknown++
			continue
		}
		if !slices.Contains(accounts, ep.ServiceAccount) {
			accounts = append(accounts, ep.ServiceAccount)
		}
	}
	sort.Strings(accounts)
	return accounts, unknown
}

// Validate implements Record.
func (e *Export) Validate() error {
	var errs validate.Errors
	errs.AddErr("cluster", validate.DNSLabel(e.Cluster))
	if e.Type != TypeClusterSetIP && e.Type != TypeHeadless {
		errs.Add("type", "%q: use %s or %s", e.Type, TypeClusterSetIP, TypeHeadless)
	}
	if e.SessionAffinity != "" && e.SessionAffinity != AffinityNone && e.SessionAffinity != AffinityClientIP {
		errs.Add("sessionAffinity", "%q: use %s or %s", e.SessionAffinity, AffinityNone, AffinityClientIP)
	}
	if e.Revision < 1 {
		errs.Add("revision", "%d: must be at least 1", e.Revision)
	}
	if e.ExportedAt.IsZero() {
		errs.Add("exportedAt", "must be set")
	}
	// The service shape is the exports file's: one set of rules for both.
	svc := e.Service()
	exports.ValidateService(&errs, "", &svc)
	for i, p := range e.Ports {
		if p.Protocol == "" {
			errs.Add(fmt.Sprintf("ports[%d].protocol", i), "must be set (TCP)")
		}
	}
	return errs.Err()
}

// Service converts the record to the exports file shape.
func (e *Export) Service() exports.Service {
	s := exports.Service{Name: e.Name, Namespace: e.Namespace}
	for _, p := range e.Ports {
		s.Ports = append(s.Ports, exports.Port{Name: p.Name, Port: p.Port, TargetPort: p.TargetPort, Protocol: p.Protocol, AppProtocol: p.AppProtocol})
	}
	for _, ep := range e.Endpoints {
		ready := ep.Ready
		s.Endpoints = append(s.Endpoints, exports.Endpoint{Address: ep.Address, Zone: ep.Zone, Ready: &ready, Weight: ep.Weight, HBONEPort: ep.HBONEPort, ServiceAccount: ep.ServiceAccount})
	}
	return s
}

// ExportFromService builds the record of cluster's export of s (Revision, times and type are
// the caller's).
func ExportFromService(cluster string, s *exports.Service) *Export {
	e := &Export{Cluster: cluster, Namespace: s.Namespace, Name: s.Name, Type: TypeClusterSetIP}
	for _, p := range s.Ports {
		proto := p.Protocol
		if proto == "" {
			proto = exports.ProtocolTCP
		}
		e.Ports = append(e.Ports, Port{Name: p.Name, Port: p.Port, TargetPort: p.TargetPort, Protocol: proto, AppProtocol: p.AppProtocol})
	}
	e.Endpoints = make([]Endpoint, 0, len(s.Endpoints))
	for _, ep := range s.Endpoints {
		e.Endpoints = append(e.Endpoints, Endpoint{Address: ep.Address, Zone: ep.Zone, Ready: ep.IsReady(), Weight: ep.Weight, HBONEPort: ep.HBONEPort, ServiceAccount: ep.ServiceAccount})
	}
	e.Canonicalize()
	return e
}

// Canonicalize sorts ports and endpoints so that equal content encodes equally.
func (e *Export) Canonicalize() {
	sort.SliceStable(e.Ports, func(a, b int) bool { return e.Ports[a].Port < e.Ports[b].Port })
	sort.SliceStable(e.Endpoints, func(a, b int) bool {
		x, errx := netip.ParseAddr(e.Endpoints[a].Address)
		y, erry := netip.ParseAddr(e.Endpoints[b].Address)
		if errx != nil || erry != nil {
			return e.Endpoints[a].Address < e.Endpoints[b].Address
		}
		return x.Less(y)
	})
}

// SameContent reports whether two exports carry the same service definition and endpoints
// (ignoring revision and timestamps): publishing identical content is skipped.
func (e *Export) SameContent(o *Export) bool {
	if e.Cluster != o.Cluster || e.Namespace != o.Namespace || e.Name != o.Name || e.Type != o.Type ||
		e.SessionAffinity != o.SessionAffinity || len(e.Ports) != len(o.Ports) || len(e.Endpoints) != len(o.Endpoints) {
		return false
	}
	for i := range e.Ports {
		if e.Ports[i] != o.Ports[i] {
			return false
		}
	}
	for i := range e.Endpoints {
		if e.Endpoints[i] != o.Endpoints[i] {
			return false
		}
	}
	return true
}

// Bundle is bundles/<trust-domain>: the SPIFFE bundle of one trust domain, owned by the
// cluster that owns the trust domain. JWKS is the SPIFFE bundle document itself (with
// spiffe_sequence and spiffe_refresh_hint); Sequence mirrors its spiffe_sequence so that
// readers can compare without parsing. The trust package validates the JWKS content.
type Bundle struct {
	Meta
	TrustDomain string          `json:"trustDomain"`
	Owner       string          `json:"owner"`
	Sequence    uint64          `json:"sequence"`
	RefreshHint int64           `json:"refreshHintSeconds,omitempty"`
	JWKS        json.RawMessage `json:"jwks"`
	// Digest is "sha256:<hex>" over a canonical form of the roots and keys (never over
	// go-spiffe's Marshal output, whose map order is not deterministic).
	Digest string `json:"digest"`
	// Revoked marks a deliberately empty bundle ("trust nothing from this domain").
	Revoked   bool      `json:"revoked,omitempty"`
	Lock      *Lock     `json:"lock,omitempty"`
	UpdatedAt time.Time `json:"updatedAt"`
}

// Lock is held in a bundle record by a running rotation job: while it is set only that job
// writes the bundle.
type Lock struct {
	Job    string    `json:"job"`
	Holder string    `json:"holder"`
	Since  time.Time `json:"since"`
}

// Validate implements Record (structure only; see trust for the JWKS content).
func (b *Bundle) Validate() error {
	var errs validate.Errors
	errs.AddErr("trustDomain", validate.DNSSubdomain(b.TrustDomain))
	errs.AddErr("owner", validate.DNSLabel(b.Owner))
	if b.Sequence < 1 {
		errs.Add("sequence", "must be at least 1")
	}
	if b.RefreshHint < 0 {
		errs.Add("refreshHintSeconds", "must not be negative")
	}
	if len(b.JWKS) == 0 || !json.Valid(b.JWKS) {
		errs.Add("jwks", "must be a SPIFFE bundle (JWKS JSON document)")
	}
	if len(b.Digest) != len("sha256:")+64 || b.Digest[:7] != "sha256:" {
		errs.Add("digest", "must be sha256:<64 hex digits>")
	}
	if b.Lock != nil {
		if b.Lock.Job == "" || b.Lock.Holder == "" {
			errs.Add("lock", "job and holder must be set")
		}
	}
	return errs.Err()
}

// Ack is acks/<cluster>/bundles/<trust-domain>: the bundle sequence a cluster has applied
// (written out to all its outputs).
type Ack struct {
	Meta
	Cluster     string    `json:"cluster"`
	TrustDomain string    `json:"trustDomain"`
	Sequence    uint64    `json:"sequence"`
	Digest      string    `json:"digest"`
	AppliedAt   time.Time `json:"appliedAt"`
	// Istiod: this cluster feeds istiod (--istio-mcp-listen), so the bundle reaches that
	// cluster's sidecars only through istiod: a rotation gate counts the cluster as acked
	// only when every istiod listed under acks/<cluster>/istio/ (IstiodStatus.Roots) gives
	// its proxies the bundle's roots too (docs/trust.md, "Istio clusters").
	Istiod bool `json:"istiod,omitempty"`
}

// Validate implements Record.
func (a *Ack) Validate() error {
	var errs validate.Errors
	errs.AddErr("cluster", validate.DNSLabel(a.Cluster))
	errs.AddErr("trustDomain", validate.DNSSubdomain(a.TrustDomain))
	if a.Sequence < 1 {
		errs.Add("sequence", "must be at least 1")
	}
	if a.AppliedAt.IsZero() {
		errs.Add("appliedAt", "must be set")
	}
	return errs.Err()
}

// IstioStatus is acks/<cluster>/istio/<instance>: the istiods one federation replica
// (instance) of the cluster feeds over MCP (--istio-mcp-listen), directly or through a
// `meshfed istio source` beside istiod, with what each ACKed or NACKed and when it was last
// pushed. The replica writes it on its own lease (it goes with the replica) whenever that
// changes, at most once a second; `meshfed status` shows it.
type IstioStatus struct {
	Meta
	Cluster  string `json:"cluster"`
	Instance string `json:"instance"`
	// StateAt is when the served state last changed; FromDisk: it is still the last good
	// state read at start (no plan yet).
	StateAt   time.Time      `json:"stateAt,omitzero"`
	FromDisk  bool           `json:"fromDisk,omitempty"`
	UpdatedAt time.Time      `json:"updatedAt"`
	Istiods   []IstiodStatus `json:"istiods"`
	// Sources are `meshfed istio source` relays connected to this replica (each listed
	// with the istiods behind it in Istiods[].via).
	Sources []string `json:"sources,omitempty"`
	// UnknownTypes are type URLs an istiod asked for that this meshfed does not know
	// (version skew; answered with an empty state).
	UnknownTypes []string `json:"unknownTypes,omitempty"`
	// NACKs counts rejected responses since the replica started, by type and reason.
	NACKs []IstioNACKCount `json:"nacks,omitempty"`
}

// IstiodStatus is one istiod connected to an MCP source.
type IstiodStatus struct {
	Node      string    `json:"node"`
	Via       string    `json:"via,omitempty"` // the `meshfed istio source` it is connected to
	Connected time.Time `json:"connected"`
	// Synced: every type it asked for is ACKed at the version being served.
	Synced   bool      `json:"synced"`
	LastPush time.Time `json:"lastPush,omitzero"`
	LastAck  time.Time `json:"lastAck,omitzero"`
	// NACKs are the types whose last response it rejected, with its error.
	NACKs []IstioTypeNACK `json:"nacks,omitempty"`
	// Roots are the roots this istiod gives its proxies, as the replica's probe of istiod's
	// PCDS sees them (nil: no probe, --istiod-xds empty). Rotation gates read them.
	Roots *IstiodRoots `json:"roots,omitempty"`
}

// Fingerprint is "sha256:<hex>" of a certificate's DER: how records name a root (an
// IstiodRoots fingerprint, a rotation's root; trust.Fingerprint is the same).
func Fingerprint(der []byte) string {
	s := sha256.Sum256(der)
	return "sha256:" + hex.EncodeToString(s[:])
}

// IstiodRoots is what one istiod sends its proxies over PCDS (ProxyConfig.caCertificatesPem:
// its merged workload trust bundle, from meshConfig.caCertificates PEM, the roots fetched
// from each spiffeBundleUrl and its own CA's root), as a probe subscribed to istiod's xDS
// like a sidecar's agent last received it.
type IstiodRoots struct {
	// Addr is the istiod xDS address probed.
	Addr string `json:"addr"`
	// Fingerprints are the roots' sha256 fingerprints (trust.Fingerprint), sorted; empty
	// when istiod sends none.
	Fingerprints []string `json:"fingerprints"`
	// Since is when the probe first received exactly these roots (zero: nothing received).
	Since time.Time `json:"since,omitzero"`
	// Error says why the probe has no current answer (cannot connect, stream ended); the
	// fingerprints are then the last ones received, if any.
	Error string `json:"error,omitempty"`
}

// IstioTypeNACK is one rejected type and istiod's error.
type IstioTypeNACK struct {
	Type  string `json:"type"`
	Error string `json:"error"`
}

// IstioNACKCount counts NACKs of one type and reason (the gRPC code of istiod's error).
type IstioNACKCount struct {
	Type   string `json:"type"`
	Reason string `json:"reason"`
	Count  uint64 `json:"count"`
}

// Validate implements Record.
func (a *IstioStatus) Validate() error {
	var errs validate.Errors
	errs.AddErr("cluster", validate.DNSLabel(a.Cluster))
	errs.AddErr("instance", validate.DNSLabel(a.Instance))
	if a.UpdatedAt.IsZero() {
		errs.Add("updatedAt", "must be set")
	}
	for i, c := range a.Istiods {
		if c.Node == "" {
			errs.Add(fmt.Sprintf("istiods[%d].node", i), "must be set")
		}
		if r := c.Roots; r != nil {
			if r.Addr == "" {
				errs.Add(fmt.Sprintf("istiods[%d].roots.addr", i), "must be set")
			}
			for j, fp := range r.Fingerprints {
				if len(fp) != len("sha256:")+64 || fp[:7] != "sha256:" {
					errs.Add(fmt.Sprintf("istiods[%d].roots.fingerprints[%d]", i, j), "must be sha256:<64 hex digits>")
				}
			}
		}
	}
	return errs.Err()
}

// GatewayHealth is acks/<cluster>/health/<instance>: how one federation replica (instance)
// of the cluster sees every other cluster's east-west gateways through its health
// checker, on the replica's own lease (it goes with the replica). The replica rewrites it
// after every change, at most once a second; each Since is the moment of the change by the
// replica's clock, so a reader learns when it happened, not when it was written. `meshfed
// drill` reads it to tell when each federation service marked a failed cluster down and up.
type GatewayHealth struct {
	Meta
	Cluster   string       `json:"cluster"`
	Instance  string       `json:"instance"`
	UpdatedAt time.Time    `json:"updatedAt"`
	Peers     []PeerHealth `json:"peers"`
}

// PeerHealth is one remote cluster in a GatewayHealth.
type PeerHealth struct {
	Cluster string `json:"cluster"`
	// Down: none of its gateway addresses is usable (each is down or hard-down), so the
	// replica's planner sends it nothing (unless every remote cluster is down: panic).
	Down bool `json:"down"`
	// Since is when Down took its present value: the last address going down, or the
	// first coming back (the replica's clock; zero if not known).
	Since    time.Time            `json:"since,omitzero"`
	Gateways []GatewayHealthState `json:"gateways"`
}

// GatewayHealthState is one gateway address's health state (health.State's name:
// unknown, up, down, hard-down) and since when.
type GatewayHealthState struct {
	Addr  string    `json:"addr"`
	State string    `json:"state"`
	Since time.Time `json:"since,omitzero"`
}

// Health state names of GatewayHealthState.State.
var healthStates = map[string]bool{"unknown": true, "up": true, "down": true, "hard-down": true}

// Validate implements Record.
func (g *GatewayHealth) Validate() error {
	var errs validate.Errors
	errs.AddErr("cluster", validate.DNSLabel(g.Cluster))
	errs.AddErr("instance", validate.DNSLabel(g.Instance))
	if g.UpdatedAt.IsZero() {
		errs.Add("updatedAt", "must be set")
	}
	for i, p := range g.Peers {
		errs.AddErr(fmt.Sprintf("peers[%d].cluster", i), validate.DNSLabel(p.Cluster))
		for j, gw := range p.Gateways {
			errs.AddErr(fmt.Sprintf("peers[%d].gateways[%d].addr", i, j), validate.HostPort(gw.Addr))
			if !healthStates[gw.State] {
				errs.Add(fmt.Sprintf("peers[%d].gateways[%d].state", i, j), "%q: want unknown, up, down or hard-down", gw.State)
			}
		}
	}
	return errs.Err()
}

// Peer is the named peer's entry (nil if absent).
func (g *GatewayHealth) Peer(cluster string) *PeerHealth {
	for i := range g.Peers {
		if g.Peers[i].Cluster == cluster {
			return &g.Peers[i]
		}
	}
	return nil
}

// Drill is drills/<id>: a cordon of one cluster, for one service or for all, attached to
// its own lease so that it reverts by itself when the drill process dies.
type Drill struct {
	Meta
	ID      string `json:"id"`
	Cluster string `json:"cluster"`
	// Namespace and Service name the cordoned service; both empty means every service.
	Namespace string    `json:"namespace,omitempty"`
	Service   string    `json:"service,omitempty"`
	Until     time.Time `json:"until"`
	StartedBy string    `json:"startedBy"`
	StartedAt time.Time `json:"startedAt"`
	// Fault is what the drill does (api/fault text form: cordon, blackhole, reset,
	// delay=D, error=F); empty is cordon, what older drills wrote. Only a cordon is seen
	// by the planners; every other kind is carried out by the cluster's own gateways.
	Fault string `json:"fault,omitempty"`
	// FaultDeadline is when a gateway fault ends by the gateways' own clocks (the drill's
	// start plus its duration), whatever becomes of this record.
	FaultDeadline time.Time `json:"faultDeadline,omitempty"`
}

// Spec is the drill's fault (Cordon when none is recorded, or unreadable: a record that
// Validate refuses is never acted on).
func (d *Drill) Spec() fault.Spec {
	s, err := fault.Parse(d.Fault)
	if err != nil {
		return fault.Spec{Kind: fault.Cordon}
	}
	return s
}

// Cordons reports whether the planners treat the cluster as down (a cordon drill).
func (d *Drill) Cordons() bool { return !d.Spec().AtGateway() }

// GatewayFault is the fault the cluster's gateways carry out, or false for a cordon.
func (d *Drill) GatewayFault() (fault.Fault, bool) {
	s := d.Spec()
	if !s.AtGateway() {
		return fault.Fault{}, false
	}
	return fault.Fault{Spec: s, ID: d.ID, Namespace: d.Namespace, Service: d.Service, Deadline: d.FaultDeadline}.Normal(), true
}

// Covers reports whether the drill cordons cluster for namespace/service.
func (d *Drill) Covers(cluster, namespace, service string) bool {
	if d.Cluster != cluster {
		return false
	}
	return d.Service == "" || (d.Namespace == namespace && d.Service == service)
}

// Validate implements Record.
func (d *Drill) Validate() error {
	var errs validate.Errors
	errs.AddErr("id", ValidateID(d.ID))
	errs.AddErr("cluster", validate.DNSLabel(d.Cluster))
	if (d.Namespace == "") != (d.Service == "") {
		errs.Add("service", "give both namespace and service, or neither to cordon every service")
	} else if d.Service != "" {
		errs.AddErr("namespace", validate.DNSLabel(d.Namespace))
		errs.AddErr("service", validate.DNSLabel(d.Service))
	}
	if d.Until.IsZero() {
		errs.Add("until", "must be set")
	}
	if d.StartedBy == "" {
		errs.Add("startedBy", "must name who started the drill")
	}
	if s, err := fault.Parse(d.Fault); err != nil {
		errs.AddErr("fault", err)
	} else if s.AtGateway() && d.FaultDeadline.IsZero() {
		errs.Add("faultDeadline", "must be set for a %s fault: gateways end it at that time by themselves", s.Kind)
	}
	return errs.Err()
}

// Policy is policy/<namespace>/<service>: an operator's failover order override.
type Policy struct {
	Meta
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	// Order lists clusters in preference order; clusters not listed follow in the default
	// order (same region, then the rest, ties by name).
	Order []string `json:"order,omitempty"`
	// LocalFirst keeps the client's own cluster at priority 0 (default true).
	LocalFirst *bool     `json:"localFirst,omitempty"`
	UpdatedAt  time.Time `json:"updatedAt"`
	UpdatedBy  string    `json:"updatedBy,omitempty"`
}

// IsLocalFirst is LocalFirst with its default.
func (p *Policy) IsLocalFirst() bool { return p.LocalFirst == nil || *p.LocalFirst }

// Validate implements Record.
func (p *Policy) Validate() error {
	var errs validate.Errors
	errs.AddErr("namespace", validate.DNSLabel(p.Namespace))
	errs.AddErr("name", validate.DNSLabel(p.Name))
	seen := map[string]int{}
	for i, c := range p.Order {
		errs.AddErr(fmt.Sprintf("order[%d]", i), validate.DNSLabel(c))
		if j, dup := seen[c]; dup {
			errs.Add(fmt.Sprintf("order[%d]", i), "%s is also order[%d]: list each cluster once", c, j)
		}
		seen[c] = i
	}
	return errs.Err()
}

// Audit is audit/<time>-<what>: who did what (join, leave, forced overwrites).
type Audit struct {
	Meta
	Time    time.Time `json:"time"`
	Actor   string    `json:"actor"`
	Action  string    `json:"action"`
	Cluster string    `json:"cluster,omitempty"`
	Detail  string    `json:"detail,omitempty"`
}

// Validate implements Record.
func (a *Audit) Validate() error {
	var errs validate.Errors
	if a.Time.IsZero() {
		errs.Add("time", "must be set")
	}
	if a.Actor == "" {
		errs.Add("actor", "must be set")
	}
	errs.AddErr("action", validate.DNSLabel(a.Action))
	if a.Cluster != "" {
		errs.AddErr("cluster", validate.DNSLabel(a.Cluster))
	}
	if len(a.Detail) > 64<<10 {
		errs.Add("detail", "over 64 KiB")
	}
	return errs.Err()
}

var (
	_ Record = (*Cluster)(nil)
	_ Record = (*Alive)(nil)
	_ Record = (*Export)(nil)
	_ Record = (*Bundle)(nil)
	_ Record = (*Ack)(nil)
	_ Record = (*IstioStatus)(nil)
	_ Record = (*GatewayHealth)(nil)
	_ Record = (*Drill)(nil)
	_ Record = (*Policy)(nil)
	_ Record = (*Audit)(nil)
)
