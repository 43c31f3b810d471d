package operator

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/meshfed/meshfed/api/validate"
	"github.com/meshfed/meshfed/federation/health"
	"github.com/meshfed/meshfed/federation/planner"
	"github.com/meshfed/meshfed/internal/healthprobe"
	"github.com/meshfed/meshfed/keyspace/records"
	"github.com/meshfed/meshfed/keyspace/store"
	"github.com/meshfed/meshfed/keyspace/view"
	"github.com/meshfed/meshfed/trust"
	"github.com/meshfed/meshfed/trust/expiry"
)

// DefaultExpiryWarning: status warns about trust roots that expire sooner than this.
const DefaultExpiryWarning = expiry.WarnBefore

// OrderSource says how status computes the failover order: with the failover planner the
// federation services use (federation/planner), fed with this machine's gateway probes.
const OrderSource = "federation/planner with gateway health probed from this machine"

// StatusOptions tune Status.
type StatusOptions struct {
	// From is the cluster whose point of view the failover order is computed from; empty
	// computes no order.
	From string
	// ProbeTimeout bounds each gateway probe (default 1s); NoProbe skips probing.
	ProbeTimeout time.Duration
	NoProbe      bool
	// ExpiryWarning is how close a root's expiry must be to be warned about.
	ExpiryWarning time.Duration
	Now           time.Time
}

// Status is the clusterset as seen from here. Field names are the -o json contract.
type Status struct {
	Prefix      string           `json:"prefix"`
	Revision    int64            `json:"revision"`
	Time        time.Time        `json:"time"`
	From        string           `json:"from,omitempty"`
	OrderSource string           `json:"order_source,omitempty"`
	Clusters    []ClusterStatus  `json:"clusters"`
	Services    []ServiceStatus  `json:"services"`
	Drills      []DrillStatus    `json:"drills"`
	Rotations   []RotationStatus `json:"rotations"`
	Policies    []PolicyView     `json:"policies"`
	Warnings    []string         `json:"warnings"`
}

// ClusterStatus is one cluster.
type ClusterStatus struct {
	Name        string `json:"name"`
	Joined      bool   `json:"joined"`
	Region      string `json:"region,omitempty"`
	Zone        string `json:"zone,omitempty"`
	Network     string `json:"network,omitempty"`
	TrustDomain string `json:"trust_domain,omitempty"`
	// SharesTrustDomainWith is the member owning this cluster's trust domain when the
	// cluster shares it (join --share-trust-domain-with); TrustDomainSharedBy lists, on the
	// owner, the members that share its trust domain. Clusters of one trust domain trust
	// each other's workloads fully.
	SharesTrustDomainWith string     `json:"shares_trust_domain_with,omitempty"`
	TrustDomainSharedBy   []string   `json:"trust_domain_shared_by,omitempty"`
	JoinedAt              *time.Time `json:"joined_at,omitempty"`
	Alive                 bool       `json:"alive"`
	Instance              string     `json:"instance,omitempty"`
	AliveSince            *time.Time `json:"alive_since,omitempty"`
	// Stale: no heartbeat. StaleSince is only known to the federation services that saw
	// the heartbeat go (etcd keeps no time for a deletion); LastActivity is the latest
	// time the cluster's own records were written, a hint of when it was last seen.
	Stale        bool            `json:"stale"`
	StaleSince   *time.Time      `json:"stale_since,omitempty"`
	LastActivity *time.Time      `json:"last_activity,omitempty"`
	Gateways     []GatewayStatus `json:"gateways"`
	Exports      int             `json:"exports"`
	Bundle       *BundleStatus   `json:"bundle,omitempty"`
	Acks         []AckStatus     `json:"acks"`
	// AcksBehind lists trust domains whose current bundle sequence this cluster has not
	// acked (missing or older ack).
	AcksBehind []string `json:"acks_behind"`
	Cordoned   []string `json:"cordoned_by_drills,omitempty"`
	// Istio: the istiods fed by the cluster's federation over MCP (acks/<cluster>/istio/),
	// nil when no federation replica of the cluster serves MCP (--istio-mcp-listen).
	Istio *IstioStatus `json:"istio,omitempty"`
}

// IstioStatus is what a cluster's federation replicas publish about the istiods they feed
// (acks/<cluster>/istio/<instance>).
type IstioStatus struct {
	// Replicas are the federation instances serving MCP.
	Replicas []string `json:"replicas"`
	// Sources are the `meshfed istio source` relays connected to them.
	Sources []string     `json:"sources,omitempty"`
	Istiods []IstiodView `json:"istiods"`
	// StateAt is when the served state last changed (the latest of the replicas);
	// FromDisk: a replica still serves the state read from its file at start.
	StateAt  *time.Time `json:"state_at,omitempty"`
	FromDisk bool       `json:"from_disk,omitempty"`
	// UnknownTypes: type URLs an istiod asked for that meshfed does not know (skew).
	UnknownTypes []string        `json:"unknown_types,omitempty"`
	NACKs        []IstioNACKView `json:"nacks,omitempty"`
}

// IstiodView is one connected istiod.
type IstiodView struct {
	Node      string          `json:"node"`
	Replica   string          `json:"replica"`
	Via       string          `json:"via,omitempty"`
	Connected time.Time       `json:"connected"`
	Synced    bool            `json:"synced"`
	LastPush  *time.Time      `json:"last_push,omitempty"`
	LastAck   *time.Time      `json:"last_ack,omitempty"`
	NACKed    []IstioTypeNACK `json:"nacked,omitempty"`
	// Roots are the roots this istiod gives its proxies over PCDS, as the replica's probe
	// saw them (what rotation gates wait for; absent without --istiod-xds).
	Roots *IstiodRootsView `json:"roots,omitempty"`
}

// IstiodRootsView is records.IstiodRoots: the probed address, the roots' fingerprints,
// since when, and the probe's error.
type IstiodRootsView struct {
	Addr         string     `json:"addr"`
	Fingerprints []string   `json:"fingerprints"`
	Since        *time.Time `json:"since,omitempty"`
	Error        string     `json:"error,omitempty"`
}

// IstioTypeNACK is a type whose last response an istiod rejected.
type IstioTypeNACK struct {
	Type  string `json:"type"`
	Error string `json:"error"`
}

// IstioNACKView counts NACKs by type and reason since the replica started.
type IstioNACKView struct {
	Replica string `json:"replica"`
	Type    string `json:"type"`
	Reason  string `json:"reason"`
	Count   uint64 `json:"count"`
}

// GatewayStatus is one gateway address probed from here (TLS to health.meshfed.internal).
type GatewayStatus struct {
	Address string  `json:"address"`
	Probed  bool    `json:"probed"`
	Healthy bool    `json:"healthy"`
	Result  string  `json:"result,omitempty"`
	Line    string  `json:"line,omitempty"`
	Detail  string  `json:"detail,omitempty"`
	RTTMs   float64 `json:"rtt_ms,omitempty"`
}

// BundleStatus is bundles/<td> of the cluster's trust domain.
type BundleStatus struct {
	TrustDomain string     `json:"trust_domain"`
	Owner       string     `json:"owner"`
	Sequence    uint64     `json:"sequence"`
	Digest      string     `json:"digest"`
	Revoked     bool       `json:"revoked,omitempty"`
	LockedBy    string     `json:"locked_by,omitempty"`
	UpdatedAt   time.Time  `json:"updated_at"`
	RootsExpire *time.Time `json:"roots_expire,omitempty"`
	Error       string     `json:"error,omitempty"`
}

// AckStatus is one acks/<cluster>/bundles/<td>.
type AckStatus struct {
	TrustDomain string    `json:"trust_domain"`
	Sequence    uint64    `json:"sequence"`
	Current     bool      `json:"current"`
	AppliedAt   time.Time `json:"applied_at"`
}

// ServiceStatus is one exported service.
type ServiceStatus struct {
	Service   string           `json:"service"`
	Type      string           `json:"type"`
	Ports     []int32          `json:"ports"`
	Exporters []ExporterStatus `json:"exporters"`
	Conflicts []string         `json:"conflicts,omitempty"`
	Policy    *PolicyView      `json:"policy,omitempty"`
	// Order is the failover order per port from From's point of view (with --from).
	Order    []PortOrder     `json:"order,omitempty"`
	Excluded []ExcludedOrder `json:"excluded,omitempty"`
	// plan is what Order and Excluded show, for the table.
	plan *planner.ServicePlan
}

// ExporterStatus is one cluster exporting a service.
type ExporterStatus struct {
	Cluster        string `json:"cluster"`
	ReadyEndpoints int    `json:"ready_endpoints"`
	Endpoints      int    `json:"endpoints"`
	Stale          bool   `json:"stale"`
	Cordoned       bool   `json:"cordoned"`
	Revision       int64  `json:"revision"`
}

// PortOrder is the priority list of one port.
type PortOrder struct {
	Port   uint32       `json:"port"`
	Levels []OrderLevel `json:"levels"`
}

// OrderLevel is one priority (the plan's one JSON form, as /debug/xds shows it too).
type OrderLevel = planner.Priority

// ExcludedOrder says why a cluster is not in the order.
type ExcludedOrder = planner.Exclusion

// DrillStatus is one live drill.
type DrillStatus struct {
	ID         string    `json:"id"`
	Cluster    string    `json:"cluster"`
	Service    string    `json:"service"` // "*" for every service
	Until      time.Time `json:"until"`
	StartedBy  string    `json:"started_by"`
	StartedAt  time.Time `json:"started_at"`
	LeaseTTL   int64     `json:"lease_ttl_seconds"` // -1 when the lease is gone
	LeaseBound bool      `json:"lease_bound"`
}

// RotationStatus is one rotations/<td> record (decoded generically when the record type
// is newer than this binary).
type RotationStatus struct {
	TrustDomain string         `json:"trust_domain"`
	ID          string         `json:"id,omitempty"`
	Phase       string         `json:"phase"`
	Active      bool           `json:"active"`
	Waiting     []string       `json:"waiting,omitempty"`
	UpdatedAt   *time.Time     `json:"updated_at,omitempty"`
	Raw         map[string]any `json:"raw,omitempty"`
}

// GetStatus gathers the status of the clusterset: one consistent read of the keyspace,
// live gateway probes from this machine, and the failover order from opts.From's point
// of view computed by the planner.
func GetStatus(ctx context.Context, st *store.Store, opts StatusOptions) (*Status, error) {
	if opts.Now.IsZero() {
		opts.Now = time.Now()
	}
	if opts.ExpiryWarning == 0 {
		opts.ExpiryWarning = DefaultExpiryWarning
	}
	snap, err := ReadSnapshot(ctx, st)
	if err != nil {
		return nil, fmt.Errorf("status: %w", err)
	}
	if opts.From != "" {
		if _, ok := snap.Clusters[opts.From]; !ok {
			return nil, &validate.FieldError{Msg: fmt.Sprintf("%s %s: not a member of the clusterset (members: %v)", Ref("From"), opts.From, orNone(snap.ClusterNames()))}
		}
	}
	s := &Status{Prefix: st.KS.Prefix(), Revision: snap.Revision, Time: opts.Now.UTC(), From: opts.From,
		Clusters: []ClusterStatus{}, Services: []ServiceStatus{}, Drills: []DrillStatus{}, Rotations: []RotationStatus{},
		Policies: []PolicyView{}, Warnings: []string{}}
	for _, b := range snap.Bad {
		s.Warnings = append(s.Warnings, "unreadable record: "+strings.ReplaceAll(b.Error(), "\n", "; "))
	}
	probes := map[string]GatewayStatus{}
	if !opts.NoProbe {
		probes = probeAll(ctx, snap, opts.ProbeTimeout)
	}
	view := snap.View()
	s.Clusters = clusterStatuses(st, snap, probes, &opts, s)
	// Roots close to expiry (and bundles that do not validate): the trust package's check.
	ws, err := expiry.CheckBundles(ctx, st, opts.Now, opts.ExpiryWarning)
	if err != nil {
		s.Warnings = append(s.Warnings, "bundle expiry check: "+err.Error())
	}
	for _, w := range ws {
		s.Warnings = append(s.Warnings, w.String()+": rotate it (meshfed trust rotate, docs/trust.md)")
	}
	s.Drills = drillStatuses(ctx, st, snap)
	s.Rotations = rotationStatuses(snap)
	for _, k := range sortedKeys(snap.Policies) {
		s.Policies = append(s.Policies, policyView(st.KS, snap.Policies[k].Value, snap.Clusters))
	}

	var in *planner.Input
	if opts.From != "" {
		s.OrderSource = OrderSource
		in = &planner.Input{Local: opts.From, View: view, Now: opts.Now}
		if !opts.NoProbe {
			in.Health = func(cluster, addr string) health.State {
				g, ok := probes[cluster+"|"+addr]
				switch {
				case !ok || !g.Probed:
					return health.Unknown
				case g.Healthy:
					return health.Up
				}
				return health.Down
			}
		}
	}
	for _, k := range sortedKeys(view.Services) {
		svc := view.Services[k]
		ss := ServiceStatus{Service: k, Type: svc.Type, Ports: []int32{}, Exporters: []ExporterStatus{}}
		for _, p := range svc.Ports {
			ss.Ports = append(ss.Ports, p.Port)
		}
		for _, ce := range svc.Clusters {
			ss.Exporters = append(ss.Exporters, ExporterStatus{Cluster: ce.Cluster, ReadyEndpoints: ce.ReadyEndpoints(),
				Endpoints: len(ce.Export.Endpoints), Stale: ce.Stale, Revision: ce.Export.Revision,
				Cordoned: cordonedNow(view, ce.Cluster, svc.Namespace, svc.Name, opts.Now)})
		}
		for _, c := range svc.Conflicts {
			ss.Conflicts = append(ss.Conflicts, fmt.Sprintf("%s %s: %s", c.Cluster, c.Field, c.Message))
		}
		if p, ok := snap.Policies[k]; ok {
			v := policyView(st.KS, p.Value, snap.Clusters)
			ss.Policy = &v
		}
		if in != nil {
			plan := planner.PlanService(in, svc)
			ss.plan = &plan
			for _, pp := range plan.Ports {
				ss.Order = append(ss.Order, PortOrder{Port: pp.Port, Levels: pp.Priorities()})
			}
			ss.Excluded = plan.Excluded
		}
		s.Services = append(s.Services, ss)
	}
	return s, nil
}

func cordonedNow(v *view.View, cluster, ns, name string, now time.Time) bool {
	for _, d := range v.Drills {
		if d.Covers(cluster, ns, name) && (d.Until.IsZero() || now.Before(d.Until)) {
			return true
		}
	}
	return false
}

// probeAll probes every gateway of every joined cluster in parallel.
func probeAll(ctx context.Context, snap *Snapshot, timeout time.Duration) map[string]GatewayStatus {
	if timeout <= 0 {
		timeout = time.Second
	}
	out := map[string]GatewayStatus{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for name, c := range snap.Clusters {
		for _, addr := range c.Value.Gateways {
			wg.Add(1)
			go func() {
				defer wg.Done()
				pctx, cancel := context.WithTimeout(ctx, timeout)
				defer cancel()
				o := healthprobe.Probe(pctx, name, addr, nil)
				g := GatewayStatus{Address: addr, Probed: true, Healthy: o.OK, Result: o.Result, RTTMs: float64(o.RTT.Microseconds()) / 1000}
				if o.Line.Word != "" {
					g.Line = o.Line.Word
					for _, k := range sortedKeys(o.Line.Fields) {
						g.Line += " " + k + "=" + o.Line.Fields[k]
					}
				}
				if o.Err != nil {
					g.Detail = o.Err.Error()
				}
				mu.Lock()
				out[name+"|"+addr] = g
				mu.Unlock()
			}()
		}
	}
	wg.Wait()
	return out
}

func clusterStatuses(st *store.Store, snap *Snapshot, probes map[string]GatewayStatus, opts *StatusOptions, s *Status) []ClusterStatus {
	names := map[string]bool{}
	for n := range snap.Clusters {
		names[n] = true
	}
	for n := range snap.Alive {
		names[n] = true
	}
	for n := range snap.Exports {
		names[n] = true
	}
	recs := map[string]*records.Cluster{}
	for n, c := range snap.Clusters {
		recs[n] = c.Value
	}
	tdProblems := records.CheckTrustDomains(recs)
	for _, n := range sortedKeys(tdProblems) {
		s.Warnings = append(s.Warnings, fmt.Sprintf("cluster %s %s (%s)", n, tdProblems[n], st.KS.Cluster(n)))
	}
	out := []ClusterStatus{}
	for _, n := range sortedKeys(names) {
		cs := ClusterStatus{Name: n, Gateways: []GatewayStatus{}, Acks: []AckStatus{}, AcksBehind: []string{}, Exports: len(snap.Exports[n])}
		if c, ok := snap.Clusters[n]; ok {
			rec := c.Value
			cs.Joined = true
			cs.Region, cs.Zone, cs.Network, cs.TrustDomain = rec.Region, rec.Zone, rec.Network, rec.TrustDomain
			cs.SharesTrustDomainWith = rec.SharesTrustDomainWith
			cs.TrustDomainSharedBy = sharersOf(snap, n)
			t := rec.JoinedAt.UTC()
			cs.JoinedAt = &t
			for _, g := range rec.Gateways {
				gs, ok := probes[n+"|"+g]
				if !ok {
					gs = GatewayStatus{Address: g}
				}
				cs.Gateways = append(cs.Gateways, gs)
			}
		} else {
			s.Warnings = append(s.Warnings, fmt.Sprintf("cluster %s publishes but has not joined (no %s): other clusters cannot route to it; run meshfed join --cluster %s ...", n, st.KS.Cluster(n), n))
		}
		if a, ok := snap.Alive[n]; ok {
			cs.Alive = true
			cs.Instance = a.Value.Instance
			if !a.Value.Since.IsZero() {
				t := a.Value.Since.UTC()
				cs.AliveSince = &t
			}
		} else {
			cs.Stale = true
			if t := snap.lastActivity(n); !t.IsZero() {
				t = t.UTC()
				cs.LastActivity = &t
			}
		}
		if cs.TrustDomain != "" {
			if b, ok := snap.Bundles[cs.TrustDomain]; ok {
				cs.Bundle = bundleStatus(b.Value, opts)
				if c, ok := snap.Clusters[n]; ok && b.Value.Owner != c.Value.BundleOwner() {
					s.Warnings = append(s.Warnings, fmt.Sprintf("cluster %s: %s is owned by %s, not by %s: that cluster's federation cannot publish it", n, st.KS.Bundle(cs.TrustDomain), b.Value.Owner, c.Value.BundleOwner()))
				}
			}
		}
		acked := map[string]uint64{}
		for _, a := range snap.Acks[n] {
			cur := false
			if b, ok := snap.Bundles[a.Value.TrustDomain]; ok {
				cur = a.Value.Sequence >= b.Value.Sequence
			}
			acked[a.Value.TrustDomain] = a.Value.Sequence
			cs.Acks = append(cs.Acks, AckStatus{TrustDomain: a.Value.TrustDomain, Sequence: a.Value.Sequence, Current: cur, AppliedAt: a.Value.AppliedAt.UTC()})
		}
		sort.Slice(cs.Acks, func(i, j int) bool { return cs.Acks[i].TrustDomain < cs.Acks[j].TrustDomain })
		for _, td := range sortedKeys(snap.Bundles) {
			if seq, ok := acked[td]; !ok || seq < snap.Bundles[td].Value.Sequence {
				cs.AcksBehind = append(cs.AcksBehind, td)
			}
		}
		for _, d := range snap.Drills {
			if d.Value.Cluster == n {
				cs.Cordoned = append(cs.Cordoned, d.Value.ID)
			}
		}
		cs.Istio = istioStatus(snap.Istio[n])
		if is := cs.Istio; is != nil {
			for _, i := range is.Istiods {
				for _, x := range i.NACKed {
					s.Warnings = append(s.Warnings, fmt.Sprintf("cluster %s: istiod %s rejects (NACKs) meshfed's %s: %s; it keeps its previous state (docs/istio.md, debugging)", n, i.Node, x.Type, x.Error))
				}
			}
			if len(is.UnknownTypes) > 0 {
				s.Warnings = append(s.Warnings, fmt.Sprintf("cluster %s: istiod asks for types meshfed does not know (%s), answered empty: istiod is newer or older than the tested one (docs/istio.md)", n, strings.Join(is.UnknownTypes, ", ")))
			}
		}
		out = append(out, cs)
	}
	return out
}

// istioStatus merges the replicas' acks/<cluster>/istio/ records (nil for none).
func istioStatus(items []*store.Item[records.IstioStatus]) *IstioStatus {
	if len(items) == 0 {
		return nil
	}
	is := &IstioStatus{Replicas: []string{}, Istiods: []IstiodView{}}
	unknown := map[string]bool{}
	for _, it := range items {
		r := it.Value
		is.Replicas = append(is.Replicas, r.Instance)
		is.Sources = append(is.Sources, r.Sources...)
		if !r.StateAt.IsZero() && (is.StateAt == nil || r.StateAt.After(*is.StateAt)) {
			t := r.StateAt.UTC()
			is.StateAt = &t
		}
		is.FromDisk = is.FromDisk || r.FromDisk
		for _, t := range r.UnknownTypes {
			unknown[t] = true
		}
		for _, n := range r.NACKs {
			is.NACKs = append(is.NACKs, IstioNACKView{Replica: r.Instance, Type: n.Type, Reason: n.Reason, Count: n.Count})
		}
		for _, c := range r.Istiods {
			v := IstiodView{Node: c.Node, Replica: r.Instance, Via: c.Via, Connected: c.Connected.UTC(), Synced: c.Synced,
				LastPush: timePtr(c.LastPush), LastAck: timePtr(c.LastAck)}
			for _, x := range c.NACKs {
				v.NACKed = append(v.NACKed, IstioTypeNACK{Type: x.Type, Error: x.Error})
			}
			if rt := c.Roots; rt != nil {
				v.Roots = &IstiodRootsView{Addr: rt.Addr, Fingerprints: append([]string{}, rt.Fingerprints...), Since: timePtr(rt.Since), Error: rt.Error}
			}
			is.Istiods = append(is.Istiods, v)
		}
	}
	is.UnknownTypes = sortedKeys(unknown)
	return is
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	u := t.UTC()
	return &u
}

func bundleStatus(b *records.Bundle, opts *StatusOptions) *BundleStatus {
	bs := &BundleStatus{TrustDomain: b.TrustDomain, Owner: b.Owner, Sequence: b.Sequence, Digest: b.Digest,
		Revoked: b.Revoked, UpdatedAt: b.UpdatedAt.UTC()}
	if b.Lock != nil {
		bs.LockedBy = b.Lock.Job + " (" + b.Lock.Holder + ")"
	}
	// The warnings come from trust/expiry (CheckBundles, in GetStatus); here only the
	// earliest expiry and whether the record validates, for the table and JSON.
	if _, err := trust.FromRecord(b, opts.Now); err != nil {
		bs.Error = err.Error()
	}
	if tb, err := trust.Parse(b.TrustDomain, b.JWKS, trust.ParseOptions{Now: opts.Now, AllowEmpty: true, DropExpired: true}); err == nil {
		if exp := tb.EarliestExpiry(); !exp.IsZero() {
			e := exp.UTC()
			bs.RootsExpire = &e
		}
	}
	return bs
}

func drillStatuses(ctx context.Context, st *store.Store, snap *Snapshot) []DrillStatus {
	out := []DrillStatus{}
	for _, d := range snap.Drills {
		ds := DrillStatus{ID: d.Value.ID, Cluster: d.Value.Cluster, Service: "*", Until: d.Value.Until.UTC(),
			StartedBy: d.Value.StartedBy, StartedAt: d.Value.StartedAt.UTC(), LeaseTTL: -1, LeaseBound: d.Lease != 0}
		if d.Value.Service != "" {
			ds.Service = view.Key(d.Value.Namespace, d.Value.Service)
		}
		if d.Lease != 0 {
			if r, err := st.Client().TimeToLive(ctx, clientv3.LeaseID(d.Lease)); err == nil {
				ds.LeaseTTL = r.TTL
			}
		}
		out = append(out, ds)
	}
	return out
}

func rotationStatuses(snap *Snapshot) []RotationStatus {
	out := []RotationStatus{}
	for _, td := range sortedKeys(snap.Rotations) {
		e := snap.Rotations[td]
		rs := RotationStatus{TrustDomain: td}
		if r := e.Rotation; r != nil {
			rs.ID, rs.Phase, rs.Active, rs.Waiting = r.ID, string(r.Phase), !r.Phase.Terminal(), r.Waiting
			if !r.UpdatedAt.IsZero() {
				t := r.UpdatedAt.UTC()
				rs.UpdatedAt = &t
			}
		} else {
			rs.Raw = e.Raw
			if ph, ok := e.Raw["phase"].(string); ok {
				rs.Phase = ph
			}
			if id, ok := e.Raw["id"].(string); ok {
				rs.ID = id
			}
			rs.Active = rs.Phase != string(records.PhaseDone) && rs.Phase != string(records.PhaseAborted)
		}
		out = append(out, rs)
	}
	return out
}
