package drill

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/meshfed/meshfed/api/fault"
	"github.com/meshfed/meshfed/api/names"
	"github.com/meshfed/meshfed/api/validate"
	"github.com/meshfed/meshfed/federation/planner"
	"github.com/meshfed/meshfed/internal/actor"
	"github.com/meshfed/meshfed/internal/ctxtime"
	"github.com/meshfed/meshfed/internal/peerchain"
	"github.com/meshfed/meshfed/keyspace/records"
	"github.com/meshfed/meshfed/keyspace/store"
	"github.com/meshfed/meshfed/keyspace/view"
	"github.com/meshfed/meshfed/operator"
	"github.com/meshfed/meshfed/operator/internal/problems"
	"github.com/meshfed/meshfed/trust"
	"github.com/meshfed/meshfed/trust/clientid"
)

// Drill defaults.
const (
	DefaultDuration        = 60 * time.Second
	DefaultLeaseTTL        = 10 * time.Second
	DefaultRate            = 20
	DefaultRequestTimeout  = time.Second
	DefaultWarmup          = 3 * time.Second
	DefaultRecoveryTimeout = 30 * time.Second
)

// Request is what `meshfed drill` asks for.
type Request struct {
	// ID names the drill (drills/<id>); default "<cluster>-<time>".
	ID string
	// Fail is the cluster to fail; Namespace/Service narrow it to one service.
	Fail string
	// Fault is what the drill does to it (api/fault text form; empty: cordon). A cordon
	// tells the planners the cluster is down; every other kind is carried out by the
	// cluster's own gateways, and the other clusters must find it by health checks.
	Fault     string
	Namespace string
	Service   string
	Duration  time.Duration
	// LeaseTTL of the cordon's own lease: how long the cordon outlives a dead drill process.
	LeaseTTL time.Duration
	// From and Target drive traffic during the drill, as cluster From's clients would.
	From   string
	Target string
	// TargetSNI overrides the TLS server name sent to a direct Target.
	TargetSNI string
	// XDS, when set, is the xDS server of cluster From's federation service: a service
	// Target then follows the EDS it serves (the real client path) instead of a plan
	// computed from etcd by the drill itself.
	XDS  string
	Rate int
	// RequestTimeout bounds one request; Warmup is traffic before the cordon;
	// RecoveryTimeout how long to wait for traffic to come back after it.
	RequestTimeout  time.Duration
	Warmup          time.Duration
	RecoveryTimeout time.Duration
	// MinReassign is the planner's damping of the drill's own router (default
	// planner.DefaultMinReassign, as the federation services use): a cluster coming back
	// is re-added at most this long after the last reassignment.
	MinReassign time.Duration
	// TLS of the load generator: CAFile verifies the workload (without it the certificate
	// is not verified: the drill measures routing, not authentication); CertFile/KeyFile
	// present a client certificate (mTLS).
	CAFile, CertFile, KeyFile string
	// SPIFFESocket is a SPIFFE Workload API address giving the client identity.
	SPIFFESocket string
	// DevCADir is a development CA directory: without files or a socket, an SVID of the
	// From cluster's trust domain is minted from it when it holds that CA.
	DevCADir string
	DryRun   bool
	Actor    string
	// Progress receives a line per ProgressInterval (default 1s) while the drill runs.
	Progress         io.Writer
	ProgressInterval time.Duration
	Now              time.Time
}

// Target is what the drill's traffic calls (Request.Target, parsed): a service of the
// clusterset, or (Direct) a fixed address that does the failover itself.
type Target struct {
	Direct bool
	// Addr is the HOST:PORT of a direct target.
	Addr string
	// Namespace, Name and Port name a service target.
	Namespace string
	Name      string
	Port      uint32
}

// ParseTarget reads a target: a service (NAMESPACE/NAME:PORT, the xDS listener name
// NAME.NAMESPACE.svc.clusterset.local:PORT, or the xDS cluster name
// outbound|PORT||NAME.NAMESPACE.svc.clusterset.local) or a direct HOST:PORT.
func ParseTarget(s string) (Target, error) {
	if strings.HasPrefix(s, "outbound|") {
		sp, err := names.ParseClusterName(s)
		if err != nil {
			return Target{}, err
		}
		return Target{Namespace: sp.Namespace, Name: sp.Name, Port: sp.Port}, nil
	}
	if host, _, err := net.SplitHostPort(s); err == nil && strings.HasSuffix(host, "."+names.ClustersetDomain) {
		sp, err := names.ParseListenerName(s)
		if err != nil {
			return Target{}, err
		}
		return Target{Namespace: sp.Namespace, Name: sp.Name, Port: sp.Port}, nil
	}
	if ref, portStr, ok := strings.Cut(s, ":"); ok && strings.Contains(ref, "/") {
		ns, n, err := operator.ParseServiceRef("target", ref)
		if err != nil {
			return Target{}, err
		}
		p, err := strconv.ParseUint(portStr, 10, 16)
		if err != nil || p == 0 {
			return Target{}, fmt.Errorf("port %q: use 1-65535", portStr)
		}
		return Target{Namespace: ns, Name: n, Port: uint32(p)}, nil
	}
	if err := validate.HostPort(s); err != nil {
		return Target{}, fmt.Errorf("%v; or name a service: NAMESPACE/NAME:PORT, NAME.NAMESPACE.svc.clusterset.local:PORT or outbound|PORT||NAME.NAMESPACE.svc.clusterset.local", err)
	}
	return Target{Direct: true, Addr: s}, nil
}

// Plan is what the drill cordons and whom it affects.
type Plan struct {
	DryRun bool   `json:"dry_run"`
	ID     string `json:"id"`
	Key    string `json:"key"`
	Fail   string `json:"fail"`
	// Fault is the fault kind (cordon, blackhole, reset, delay=D, error=F).
	Fault    string        `json:"fault"`
	Service  string        `json:"service"` // "*" for every service
	Duration time.Duration `json:"duration_ns"`
	LeaseTTL time.Duration `json:"lease_ttl_ns"`
	// MinReassign is the damping the traffic's router applies (see Request).
	MinReassign time.Duration     `json:"min_reassign_ns"`
	Affected    []AffectedService `json:"affected"`
	Traffic     *TrafficPlan      `json:"traffic,omitempty"`
	Warnings    []string          `json:"warnings,omitempty"`
}

// AffectedService is one service the cordon touches, and how each client cluster's
// order changes (gateway health not considered: the order as if every gateway is up).
type AffectedService struct {
	Service string         `json:"service"`
	Clients []ClientImpact `json:"clients"`
}

// ClientImpact is one client cluster and port.
type ClientImpact struct {
	Cluster string   `json:"cluster"`
	Port    uint32   `json:"port"`
	Before  []string `json:"before"`
	After   []string `json:"after"`
	// Impact: "moves" (the failed cluster was priority 0), "backup" (it was a lower
	// priority), "outage" (nothing is left).
	Impact string `json:"impact"`
}

// TrafficPlan says how the load generator routes.
type TrafficPlan struct {
	From   string `json:"from"`
	Target string `json:"target"`
	Rate   int    `json:"rate"`
	Route  string `json:"route"`
}

func (r *Request) defaults() {
	if r.Now.IsZero() {
		r.Now = time.Now()
	}
	if r.Duration == 0 {
		r.Duration = DefaultDuration
	}
	if r.LeaseTTL == 0 {
		r.LeaseTTL = DefaultLeaseTTL
	}
	if r.Rate == 0 {
		r.Rate = DefaultRate
	}
	if r.RequestTimeout == 0 {
		r.RequestTimeout = DefaultRequestTimeout
	}
	if r.Warmup == 0 {
		r.Warmup = DefaultWarmup
	}
	if r.RecoveryTimeout == 0 {
		r.RecoveryTimeout = DefaultRecoveryTimeout
	}
	if r.MinReassign == 0 {
		r.MinReassign = planner.DefaultMinReassign
	}
	if r.ProgressInterval == 0 {
		r.ProgressInterval = time.Second
	}
	if r.ID == "" && r.Fail != "" {
		r.ID = r.Fail + "-" + strings.ToLower(r.Now.UTC().Format("20060102t150405"))
		if len(r.ID) > 63 {
			r.ID = strings.Trim(r.ID[len(r.ID)-63:], "-")
		}
	}
}

// Validate checks what can be checked without etcd. Its error is an *InvalidError naming
// Request fields.
func (r Request) Validate() error {
	r.defaults()
	p := problems.New("drill")
	r.validate(p)
	return p.Err()
}

// validate adds the problems of r (defaults applied) that need no etcd; it returns the
// parsed fault and target (nil without one).
func (r *Request) validate(p *problems.List) (fault.Spec, *Target) {
	if err := validate.DNSLabel(r.Fail); err != nil {
		p.Add("Fail", "%v (the cluster to fail, e.g. west)", err)
	}
	if err := records.ValidateID(r.ID); err != nil {
		p.Add("ID", "%v", err)
	}
	if r.Duration < time.Second {
		p.Add("Duration", "%v: at least 1s (e.g. 60s)", r.Duration)
	}
	if r.LeaseTTL < 2*time.Second || r.LeaseTTL > time.Minute {
		p.Add("LeaseTTL", "%v: use 2s-60s (default 10s): the cordon outlives a killed drill by up to this long", r.LeaseTTL)
	}
	if (r.From == "") != (r.Target == "") {
		p.Add("From/Target", "give both (traffic from one cluster's point of view to a target) or neither")
	}
	if r.Rate < 1 || r.Rate > 1000 {
		p.Add("Rate", "%d: use 1-1000 requests per second", r.Rate)
	}
	if r.XDS != "" {
		if err := validate.HostPort(r.XDS); err != nil {
			p.Add("XDS", "%v (the xDS address of the traffic's source cluster's federation service, e.g. 127.0.0.1:15010)", err)
		}
		if r.Target == "" {
			p.Add("XDS", "routing by xDS needs traffic: a source cluster and a service target")
		}
	}
	if (r.CertFile == "") != (r.KeyFile == "") {
		p.Add("CertFile/KeyFile", "give both the client certificate and its key, or neither")
	}
	if r.CertFile != "" && r.SPIFFESocket != "" {
		p.Add("SPIFFESocket", "give either client certificate files or the Workload API socket, not both")
	}
	spec, err := fault.Parse(r.Fault)
	if err != nil {
		p.Add("Fault", "%v", err)
	}
	var tgt *Target
	if r.Target != "" {
		t, err := ParseTarget(r.Target)
		if err != nil {
			p.Add("Target", "%v", err)
		} else {
			tgt = &t
		}
	}
	return spec, tgt
}

// NewPlan validates a drill and works out whom it affects; nothing changes. The target is
// r.Target parsed (nil without one). A drill that cannot run is an *InvalidError.
func NewPlan(ctx context.Context, st *store.Store, r Request) (*Plan, *Target, error) {
	r.defaults()
	p := problems.New("drill")
	spec, tgt := r.validate(p)
	if p.Len() > 0 {
		return nil, nil, p.Err()
	}
	snap, err := operator.ReadSnapshot(ctx, st)
	if err != nil {
		return nil, nil, fmt.Errorf("drill: %w", err)
	}
	plan := &Plan{DryRun: r.DryRun, ID: r.ID, Key: st.KS.Drill(r.ID), Fail: r.Fail, Fault: spec.String(), Service: "*",
		Duration: r.Duration, LeaseTTL: r.LeaseTTL, MinReassign: r.MinReassign, Affected: []AffectedService{}}
	if r.Service != "" {
		plan.Service = view.Key(r.Namespace, r.Service)
	}
	if _, ok := snap.Clusters[r.Fail]; !ok {
		if len(snap.Exports[r.Fail]) == 0 {
			p.Add("Fail", "%s is not a member and exports nothing (members: %s)", r.Fail, strings.Join(orNone(snap.ClusterNames()), ", "))
		}
	}
	if r.From != "" {
		if _, ok := snap.Clusters[r.From]; !ok {
			p.Add("From", "%s is not a member (members: %s)", r.From, strings.Join(orNone(snap.ClusterNames()), ", "))
		}
		if r.From == r.Fail {
			p.Add("From", "%s is the failed cluster: its own traffic stays local (local first); pick another cluster's point of view", r.From)
		}
	}
	if r.Service != "" {
		found := false
		for _, e := range snap.Exports[r.Fail] {
			if e.Value.Namespace == r.Namespace && e.Value.Name == r.Service {
				found = true
			}
		}
		if !found {
			p.Add("Service", "%s does not export %s/%s: nothing to fail", r.Fail, r.Namespace, r.Service)
		}
	}
	if _, err := st.Client().Get(ctx, plan.Key, clientv3.WithCountOnly()); err == nil {
		if it, _ := store.Get[records.Drill](ctx, st, plan.Key); it != nil {
			p.Add("ID", "drill %s is already running (%s, started by %s): pick another id or wait for it", r.ID, plan.Key, it.Value.StartedBy)
		}
	}
	for _, d := range snap.Drills {
		if d.Value.Cluster == r.Fail && d.Value.ID != r.ID {
			plan.Warnings = append(plan.Warnings, fmt.Sprintf("drill %s already cordons %s (service %s)", d.Value.ID, r.Fail, orStar(d.Value.Namespace, d.Value.Service)))
		}
	}

	// Impact: every joined cluster is a potential client of every service.
	iv := snap.View()
	cordoned := cloneViewWithDrill(iv, &records.Drill{ID: r.ID, Cluster: r.Fail, Namespace: r.Namespace, Service: r.Service, Until: r.Now.Add(r.Duration)})
	for _, k := range slices.Sorted(maps.Keys(iv.Services)) {
		svc := iv.Services[k]
		if svc.Exporter(r.Fail) == nil || (r.Service != "" && k != plan.Service) {
			continue
		}
		as := AffectedService{Service: k, Clients: []ClientImpact{}}
		for _, client := range snap.ClusterNames() {
			if client == r.Fail {
				continue
			}
			before := planner.PlanService(&planner.Input{Local: client, View: iv, Now: r.Now}, svc)
			after := planner.PlanService(&planner.Input{Local: client, View: cordoned, Now: r.Now}, svc)
			for _, pp := range before.Ports {
				b := levelNames(pp.Levels)
				idx := indexOf(b, r.Fail)
				if idx < 0 {
					continue
				}
				var a []string
				if ap := after.Port(pp.Port); ap != nil {
					a = levelNames(ap.Levels)
				}
				ci := ClientImpact{Cluster: client, Port: pp.Port, Before: b, After: orEmpty(a), Impact: "backup"}
				switch {
				case len(a) == 0:
					ci.Impact = "outage"
					plan.Warnings = append(plan.Warnings, fmt.Sprintf("%s's clients of %s port %d have no other cluster: their requests fail during the drill", client, k, pp.Port))
				case idx == 0:
					ci.Impact = "moves"
				}
				as.Clients = append(as.Clients, ci)
			}
		}
		plan.Affected = append(plan.Affected, as)
	}
	if len(plan.Affected) == 0 {
		plan.Warnings = append(plan.Warnings, fmt.Sprintf("%s exports nothing that matches: the %s changes no plan", r.Fail, spec.Kind))
	}
	if spec.AtGateway() && len(snap.Exports[r.Fail]) == 0 {
		// The fault travels in the metadata of the gateway's inbound clusters: none, no fault.
		p.Add("Fault", "%s exports nothing: its gateways get no service to carry the %s fault on", r.Fail, spec.Kind)
	}
	if tgt != nil {
		tp := &TrafficPlan{From: r.From, Target: r.Target, Rate: r.Rate}
		if tgt.Direct {
			tp.Route = "every request to " + tgt.Addr + " (the proxy or load balancer there does the failover; the serving cluster is read from each response)"
		} else if r.XDS != "" {
			tp.Route = fmt.Sprintf("as %s's clients: EDS %s from the xDS server at %s (lowest priority with a healthy endpoint), TLS with SNI %s",
				r.From, names.ClusterName(tgt.Namespace, tgt.Name, tgt.Port), r.XDS, names.ServiceSNI(tgt.Namespace, tgt.Name, tgt.Port))
		} else {
			tp.Route = fmt.Sprintf("as %s's clients: failover plan of %s/%s port %d from etcd (federation/planner + stabilizer, gateways health-checked from here), TLS with SNI %s to priority 0",
				r.From, tgt.Namespace, tgt.Name, tgt.Port, names.ServiceSNI(tgt.Namespace, tgt.Name, tgt.Port))
			if s := iv.Services[view.Key(tgt.Namespace, tgt.Name)]; s == nil {
				p.Add("Target", "no cluster exports %s/%s", tgt.Namespace, tgt.Name)
			} else if !s.HasPort(int32(tgt.Port)) {
				p.Add("Target", "%s/%s has no port %d (ports: %v)", tgt.Namespace, tgt.Name, tgt.Port, portsOf(s))
			}
		}
		plan.Traffic = tp
	}
	return plan, tgt, p.Err()
}

func orActor(a string) string {
	if a == "" {
		return actor.Of("")
	}
	return a
}

func orNone(s []string) []string {
	if len(s) == 0 {
		return []string{"none yet"}
	}
	return s
}

func portsOf(s *view.Service) []int32 {
	var out []int32
	for _, p := range s.Ports {
		out = append(out, p.Port)
	}
	return out
}

func orStar(ns, name string) string {
	if name == "" {
		return "*"
	}
	return ns + "/" + name
}

func orEmpty(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func levelNames(ls []planner.Level) []string {
	out := make([]string, 0, len(ls))
	for _, l := range ls {
		out = append(out, l.Cluster)
	}
	return out
}

func indexOf(s []string, v string) int {
	for i, x := range s {
		if x == v {
			return i
		}
	}
	return -1
}

func cloneViewWithDrill(v *view.View, d *records.Drill) *view.View {
	c := *v
	c.Drills = append(append([]*records.Drill(nil), v.Drills...), d)
	return &c
}

// Run runs a drill: validate, (with From/Target) start traffic, cordon for Duration,
// lift, wait for traffic to come back, and report. With DryRun it returns the plan only.
// If ctx ends early (Ctrl-C) the cordon is lifted and the report covers what happened.
func Run(ctx context.Context, st *store.Store, r Request) (*Report, error) {
	r.defaults()
	plan, tgt, err := NewPlan(ctx, st, r)
	if err != nil {
		return nil, err
	}
	rep := &Report{Plan: plan}
	if r.DryRun {
		return rep, nil
	}
	prog := r.Progress
	if prog == nil {
		prog = io.Discard
	}
	// Every federation's health view of the failed cluster, followed from before the fault
	// until the end (it outlives an interrupted ctx: the report still gets what was seen).
	fw := newFedWatch(st, r.Fail, prog)
	wctx, wcancel := context.WithCancel(context.WithoutCancel(ctx))
	defer wcancel()
	go fw.run(wctx)
	sctx, scancel := context.WithTimeout(ctx, 10*time.Second)
	watching := fw.waitSynced(sctx)
	scancel()
	var tr *traffic
	if tgt != nil {
		snap, err := operator.ReadSnapshot(ctx, st)
		if err != nil {
			return nil, fmt.Errorf("drill: %w", err)
		}
		cl, err := newClient(ctx, snap, &r, tgt)
		if err != nil {
			return nil, err
		}
		defer cl.id.Close()
		fmt.Fprintf(prog, "%s\n", cl.says)
		tr, err = startTraffic(ctx, st, &r, tgt, cl, prog)
		if err != nil {
			return nil, err
		}
		defer tr.stop()
		fmt.Fprintf(prog, "warming up: %d req/s from %s to %s for %v\n", r.Rate, r.From, r.Target, r.Warmup)
		if !ctxtime.Sleep(ctx, r.Warmup) {
			return tr.finish(rep, r.Fail, true), ctx.Err()
		}
	}

	// Until is a backstop, not the schedule: the drill lifts the cordon itself after
	// Duration (revoking the lease); Until only bounds a cordon whose process hangs but
	// keeps its lease alive. It leaves room for a slow etcd write, so that the planner never
	// ends the cordon before the lift.
	now := time.Now()
	spec, _ := fault.Parse(r.Fault) // validated by NewPlan
	d := &records.Drill{ID: r.ID, Cluster: r.Fail, Namespace: r.Namespace, Service: r.Service,
		Until: now.Add(r.Duration + r.LeaseTTL).UTC(), StartedBy: orActor(r.Actor), StartedAt: now.UTC()}
	what := "cordoned " + r.Fail
	if spec.AtGateway() {
		// The gateways end the fault at this deadline by their own clocks, whatever becomes
		// of this process, the federation services or etcd.
		d.Fault, d.FaultDeadline = spec.String(), now.Add(r.Duration).UTC()
		what = fmt.Sprintf("fault %s at %s's gateways", spec, r.Fail)
	}
	c, err := operator.StartCordon(ctx, st, d, r.LeaseTTL)
	if err != nil {
		if tr != nil {
			tr.finish(rep, r.Fail, true)
		}
		return rep, fmt.Errorf("drill %s: %w", r.ID, err)
	}
	rep.CordonAt = time.Now()
	var at func(time.Time) string
	if tr != nil {
		at = func(t time.Time) string { return fmt.Sprintf("[%6.1fs]", t.Sub(tr.start).Seconds()) }
	}
	fw.setMoments(rep.CordonAt, time.Time{}, at)
	if tr != nil {
		if spec.AtGateway() {
			tr.mark(rep.CordonAt, spec.String()+" "+r.Fail)
		} else {
			tr.mark(rep.CordonAt, "cordon "+r.Fail)
		}
	}
	if spec.AtGateway() {
		fmt.Fprintf(prog, "%s for %s (%s, lease TTL %v; the gateways end it at %s by their own clocks in any case); lifting in %v\n",
			what, plan.Service, c.Key, r.LeaseTTL, d.FaultDeadline.Format(time.RFC3339), r.Duration)
	} else {
		fmt.Fprintf(prog, "%s for %s (%s, lease TTL %v: if this process dies the cordon ends within that); lifting in %v\n",
			what, plan.Service, c.Key, r.LeaseTTL, r.Duration)
	}

	interrupted := false
	var lostErr error
	timer := time.NewTimer(r.Duration)
	select {
	case <-timer.C:
	case <-ctx.Done():
		interrupted = true
		fmt.Fprintln(prog, "interrupted: lifting the cordon")
	case <-c.Lost():
		lostErr = fmt.Errorf("drill %s: the cordon's lease was lost (etcd unreachable for longer than %v?): the cordon has ended", r.ID, r.LeaseTTL)
	}
	timer.Stop()
	// The lift starts now: the key may be gone any moment after the revoke is sent, so
	// requests from here on count as after the cordon.
	rep.LiftAt = time.Now()
	liftErr := c.Lift(ctx)
	if tr != nil {
		tr.mark(rep.LiftAt, "lift")
	}
	fmt.Fprintf(prog, "%s lifted after %v\n", plan.event(), rep.LiftAt.Sub(rep.CordonAt).Round(10*time.Millisecond))
	fw.setMoments(rep.CordonAt, rep.LiftAt, at)
	if tr != nil && !interrupted && lostErr == nil {
		tr.waitBack(ctx, r.Fail, rep.LiftAt, r.RecoveryTimeout, prog)
	}
	if !interrupted && lostErr == nil {
		fw.waitUp(ctx, rep.LiftAt.Add(r.RecoveryTimeout), prog)
	}
	if tr != nil {
		tr.finish(rep, r.Fail, interrupted)
	}
	wcancel()
	if watching {
		rep.Federations = fw.marks(rep.CordonAt, rep.LiftAt)
	} else {
		rep.Notes = append(rep.Notes, "the federations' health records (acks/<cluster>/health/) could not be read: when each marked "+r.Fail+" down and up is unknown")
	}
	rep.addFederationMarks()
	rep.Interrupted = interrupted
	rep.Ended = time.Now()
	return rep, errors.Join(lostErr, liftErr)
}

// client is how the traffic's requests authenticate and check whom they reached.
type client struct {
	tls      *tls.Config
	identify func(tls.ConnectionState) (string, error)
	grpc     bool
	id       *clientid.Identity
	// says is what to print about the identity.
	says string
}

// newClient finds the traffic's client identity (files, the Workload API, or an SVID of
// the From cluster minted from a development CA), and how each answer names its cluster:
// the workload's SPIFFE ID, whose trust domain is a member's (checked against that
// trust domain's bundle from etcd, or against CAFile when given).
func newClient(ctx context.Context, snap *operator.Snapshot, r *Request, tgt *Target) (*client, error) {
	tdCluster := trustDomainClusters(snap)
	fromTD := ""
	if c, ok := snap.Clusters[r.From]; ok {
		fromTD = c.Value.TrustDomain
	}
	roots := map[string]*x509.CertPool{}
	for td, b := range snap.Bundles {
		if tb, err := trust.FromRecord(b.Value, time.Now()); err == nil && !tb.Empty() {
			roots[td] = tb.Pool()
		}
	}
	id, err := clientid.Load(ctx, clientid.Options{CertFile: r.CertFile, KeyFile: r.KeyFile, WorkloadAPI: r.SPIFFESocket,
		DevCADir: r.DevCADir, TrustDomain: fromTD, Roots: roots})
	if err != nil {
		return nil, fmt.Errorf("drill: client identity: %w", err)
	}
	c := &client{id: id, tls: id.ClientTLS()}
	if id.HasCert() {
		c.says = fmt.Sprintf("client identity %s (%s)", orDash(id.ID), id.Source)
	} else {
		c.says = fmt.Sprintf("no client identity (no certificate files, no Workload API socket, no development CA of %s in %s): workloads that demand mTLS will refuse the requests", orDash(fromTD), orDash(r.DevCADir))
	}
	var caPool *x509.CertPool
	if r.CAFile != "" {
		b, err := os.ReadFile(r.CAFile)
		if err != nil {
			return nil, fmt.Errorf("drill: CA file: %w", err)
		}
		caPool = x509.NewCertPool()
		if !caPool.AppendCertsFromPEM(b) {
			return nil, fmt.Errorf("drill: CA file %s: no PEM certificate", r.CAFile)
		}
	}
	// Workload certificates are SPIFFE SVIDs (URI SAN) and the SNI is a routing name: the
	// chain is checked here, not a host name. A certificate without a SPIFFE ID is checked
	// only against CAFile (without it, it is not verified: the drill measures routing).
	c.tls.VerifyConnection = func(cs tls.ConnectionState) error {
		if caPool != nil {
			return peerchain.Verify(caPool)(rawCerts(cs), nil)
		}
		if _, ok := clientid.PeerID(cs); ok {
			return id.VerifyPeer(cs)
		}
		return nil
	}
	c.identify = func(cs tls.ConnectionState) (string, error) {
		pid, ok := clientid.PeerID(cs)
		if !ok {
			return "", nil
		}
		name, ok := tdCluster[pid.TrustDomain().Name()]
		if !ok {
			return "", fmt.Errorf("the workload's SPIFFE ID %s is of no member's trust domain", pid)
		}
		// "" for a trust domain several clusters share: the certificate does not say
		// which one served, the workload's answer does.
		return name, nil
	}
	if tgt != nil && !tgt.Direct {
		c.grpc = isGRPC(snap, tgt)
	}
	return c, nil
}

// trustDomainClusters maps each member's trust domain to the cluster it names: the one
// cluster that has it, or "" for a trust domain several clusters share (join
// --share-trust-domain-with), whose SVIDs do not tell the clusters apart.
func trustDomainClusters(snap *operator.Snapshot) map[string]string {
	out := map[string]string{}
	for name, c := range snap.Clusters {
		td := c.Value.TrustDomain
		if _, seen := out[td]; seen {
			out[td] = ""
		} else {
			out[td] = name
		}
	}
	return out
}

func rawCerts(cs tls.ConnectionState) [][]byte {
	out := make([][]byte, 0, len(cs.PeerCertificates))
	for _, c := range cs.PeerCertificates {
		out = append(out, c.Raw)
	}
	return out
}

// isGRPC reports whether the target port is gRPC in some export (appProtocol grpc, or a
// port named grpc): requests are then gRPC health checks.
func isGRPC(snap *operator.Snapshot, tgt *Target) bool {
	for _, exps := range snap.Exports {
		for _, e := range exps {
			if e.Value.Namespace != tgt.Namespace || e.Value.Name != tgt.Name {
				continue
			}
			for _, p := range e.Value.Ports {
				if uint32(p.Port) == tgt.Port && (strings.EqualFold(p.AppProtocol, "grpc") || strings.HasPrefix(strings.ToLower(p.Name), "grpc")) {
					return true
				}
			}
		}
	}
	return false
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
