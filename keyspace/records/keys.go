package records

import (
	"fmt"
	"strings"
	"time"

	"github.com/meshfed/meshfed/api/validate"
)

// DefaultPrefix is the keyspace prefix unless configured otherwise.
const DefaultPrefix = "/meshfed/v1/"

// Kind names a family of keys (the first path element after the prefix).
type Kind string

// The key families of keyspace v1.
const (
	KindCluster  Kind = "clusters"
	KindAlive    Kind = "alive"
	KindExport   Kind = "exports"
	KindBundle   Kind = "bundles"
	KindAck      Kind = "acks"
	KindDrill    Kind = "drills"
	KindRotation Kind = "rotations"
	KindPolicy   Kind = "policy"
	KindAudit    Kind = "audit"
)

// Keyspace builds and parses keys under one prefix.
type Keyspace struct{ prefix string }

// NewKeyspace checks prefix (absolute, ends in '/') and returns its keyspace.
func NewKeyspace(prefix string) (Keyspace, error) {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	if !strings.HasPrefix(prefix, "/") || !strings.HasSuffix(prefix, "/") || strings.Contains(prefix, "//") {
		return Keyspace{}, fmt.Errorf("keyspace prefix %q: must start and end with '/' and have no empty element, e.g. %s", prefix, DefaultPrefix)
	}
	return Keyspace{prefix: prefix}, nil
}

// MustKeyspace is NewKeyspace for constant prefixes.
func MustKeyspace(prefix string) Keyspace {
	ks, err := NewKeyspace(prefix)
	if err != nil {
		panic(err)
	}
	return ks
}

// Prefix is the whole keyspace's prefix.
func (k Keyspace) Prefix() string { return k.prefix }

// Family is the prefix of one kind of key, e.g. /meshfed/v1/exports/.
func (k Keyspace) Family(kind Kind) string { return k.prefix + string(kind) + "/" }

// Cluster is clusters/<cluster>.
func (k Keyspace) Cluster(name string) string { return k.Family(KindCluster) + name }

// Alive is alive/<cluster>.
func (k Keyspace) Alive(name string) string { return k.Family(KindAlive) + name }

// Export is exports/<cluster>/<namespace>/<service>.
func (k Keyspace) Export(cluster, namespace, name string) string {
	return k.Family(KindExport) + cluster + "/" + namespace + "/" + name
}

// ExportsOf is the prefix of one cluster's exports.
func (k Keyspace) ExportsOf(cluster string) string { return k.Family(KindExport) + cluster + "/" }

// Bundle is bundles/<trust-domain>.
func (k Keyspace) Bundle(td string) string { return k.Family(KindBundle) + td }

// Ack is acks/<cluster>/bundles/<trust-domain>.
func (k Keyspace) Ack(cluster, td string) string {
	return k.Family(KindAck) + cluster + "/bundles/" + td
}

// IstioAck is acks/<cluster>/istio/<instance>: what the istiods fed by one federation
// replica (instance) of the cluster ACKed, on that replica's lease (records.IstioStatus).
func (k Keyspace) IstioAck(cluster, instance string) string {
	return k.Family(KindAck) + cluster + "/istio/" + instance
}

// HealthAck is acks/<cluster>/health/<instance>: one federation replica (instance) of the
// cluster's view of the other clusters' gateways, on that replica's lease
// (records.GatewayHealth).
func (k Keyspace) HealthAck(cluster, instance string) string {
	return k.Family(KindAck) + cluster + "/health/" + instance
}

// IstioAcksOf is the prefix of one cluster's istio acks.
func (k Keyspace) IstioAcksOf(cluster string) string {
	return k.Family(KindAck) + cluster + "/istio/"
}

// AcksOf is the prefix of one cluster's acks.
func (k Keyspace) AcksOf(cluster string) string { return k.Family(KindAck) + cluster + "/" }

// Drill is drills/<id>.
func (k Keyspace) Drill(id string) string { return k.Family(KindDrill) + id }

// Rotation is rotations/<trust-domain>.
func (k Keyspace) Rotation(td string) string { return k.Family(KindRotation) + td }

// Policy is policy/<namespace>/<service>.
func (k Keyspace) Policy(namespace, name string) string {
	return k.Family(KindPolicy) + namespace + "/" + name
}

// Audit is audit/<time>-<what>; time is UTC RFC 3339 with nanoseconds so keys sort by time.
func (k Keyspace) Audit(t time.Time, what string) string {
	return k.Family(KindAudit) + t.UTC().Format("20060102T150405.000000000Z") + "-" + what
}

// Key is a parsed key.
type Key struct {
	Kind        Kind
	Cluster     string // clusters, alive, exports, acks
	Namespace   string // exports, policy
	Name        string // exports, policy: the service; drills: the id; audit: time-what; istio acks: the instance
	TrustDomain string // bundles, acks of bundles, rotations
	// Acks is what an acks/ key acknowledges: AckBundles (acks/<cluster>/bundles/<td>),
	// AckIstio (acks/<cluster>/istio/<instance>, the instance in Name) or AckHealth
	// (acks/<cluster>/health/<instance>, likewise).
	Acks string
}

// What an acks/ key acknowledges (Key.Acks).
const (
	AckBundles = "bundles"
	AckIstio   = "istio"
	AckHealth  = "health"
)

// Parse splits a key of this keyspace into its parts and validates them, so a stray or
// hostile key in etcd is reported, never half-understood.
func (k Keyspace) Parse(key string) (Key, error) {
	rest, ok := strings.CutPrefix(key, k.prefix)
	if !ok {
		return Key{}, fmt.Errorf("key %q is outside prefix %s", key, k.prefix)
	}
	kind, rest, _ := strings.Cut(rest, "/")
	parts := strings.Split(rest, "/")
	bad := func(want string) (Key, error) {
		return Key{}, fmt.Errorf("key %q: want %s%s/%s", key, k.prefix, kind, want)
	}
	label := func(v string) bool { return validate.DNSLabel(v) == nil }
	td := func(v string) bool { return validate.DNSSubdomain(v) == nil }
	switch Kind(kind) {
	case KindCluster, KindAlive:
		if len(parts) != 1 || !label(parts[0]) {
			return bad("<cluster>")
		}
		return Key{Kind: Kind(kind), Cluster: parts[0]}, nil
	case KindExport:
		if len(parts) != 3 || !label(parts[0]) || !label(parts[1]) || !label(parts[2]) {
			return bad("<cluster>/<namespace>/<service>")
		}
		return Key{Kind: KindExport, Cluster: parts[0], Namespace: parts[1], Name: parts[2]}, nil
	case KindBundle, KindRotation:
		if len(parts) != 1 || !td(parts[0]) {
			return bad("<trust-domain>")
		}
		return Key{Kind: Kind(kind), TrustDomain: parts[0]}, nil
	case KindAck:
		if len(parts) == 3 && label(parts[0]) && parts[1] == AckBundles && td(parts[2]) {
			return Key{Kind: KindAck, Cluster: parts[0], TrustDomain: parts[2], Acks: AckBundles}, nil
		}
		if len(parts) == 3 && label(parts[0]) && (parts[1] == AckIstio || parts[1] == AckHealth) && label(parts[2]) {
			return Key{Kind: KindAck, Cluster: parts[0], Name: parts[2], Acks: parts[1]}, nil
		}
		return bad("<cluster>/bundles/<trust-domain>, " + k.prefix + kind + "/<cluster>/istio/<instance> or " + k.prefix + kind + "/<cluster>/health/<instance>")
	case KindDrill:
		if len(parts) != 1 || ValidateID(parts[0]) != nil {
			return bad("<id>")
		}
		return Key{Kind: KindDrill, Name: parts[0]}, nil
	case KindPolicy:
		if len(parts) != 2 || !label(parts[0]) || !label(parts[1]) {
			return bad("<namespace>/<service>")
		}
		return Key{Kind: KindPolicy, Namespace: parts[0], Name: parts[1]}, nil
	case KindAudit:
		if len(parts) != 1 || parts[0] == "" {
			return bad("<time>-<what>")
		}
		return Key{Kind: KindAudit, Name: parts[0]}, nil
	}
	return Key{}, fmt.Errorf("key %q: unknown family %q", key, kind)
}

// ValidateID checks a drill or job id: 1-64 of [a-z0-9-], starting and ending alphanumeric.
func ValidateID(id string) error {
	if len(id) > 64 {
		return fmt.Errorf("id %q is longer than 64 characters", id)
	}
	if err := validate.DNSLabel(id); err != nil {
		return fmt.Errorf("id: %w", err)
	}
	return nil
}
