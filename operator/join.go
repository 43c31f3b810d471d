package operator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/meshfed/meshfed/api/validate"
	"github.com/meshfed/meshfed/internal/actor"
	"github.com/meshfed/meshfed/internal/atomicfile"
	"github.com/meshfed/meshfed/internal/healthprobe"
	"github.com/meshfed/meshfed/keyspace/records"
	"github.com/meshfed/meshfed/keyspace/store"
	"github.com/meshfed/meshfed/operator/internal/problems"
)

// When join creates etcd users and roles.
const (
	// UsersAuto creates them when etcd auth is enabled (the default).
	UsersAuto = "auto"
	// UsersAlways creates them even while auth is off, to prepare before enabling it.
	UsersAlways = "always"
	// UsersNever never touches etcd users and roles.
	UsersNever = "never"
)

// JoinRequest is what `meshfed join` asks for.
type JoinRequest struct {
	Cluster     string
	Region      string
	Zone        string
	Network     string
	TrustDomain string
	Gateways    []string
	// HBONEGateways are the gateway's HBONE listener addresses (Istio ambient), optional.
	HBONEGateways []string
	// ShareTrustDomainWith, when set, names the member that owns TrustDomain: this cluster
	// shares that trust domain and its root (one Istio mesh on several networks) instead of
	// owning one. The owner alone publishes and rotates bundles/<TrustDomain>; this
	// cluster's etcd role gets no write on it. The clusters of one trust domain trust each
	// other's workloads fully.
	ShareTrustDomainWith string
	// Force overwrites a different record of the same name (audited).
	Force  bool
	DryRun bool
	// Users is UsersAuto, UsersAlways or UsersNever.
	Users string
	// CredentialsOut receives the new cluster user's {"user","password"} (mode 0600).
	CredentialsOut string
	// RotatePassword gives an existing cluster user a new password (into CredentialsOut).
	RotatePassword bool
	// CertAuth creates the cluster user without a password: it authenticates with a client
	// certificate whose CN is the user name (etcd --client-cert-auth).
	CertAuth bool
	// AdminUser, when set, gets the operator role (readwrite on the whole keyspace);
	// AdminCredentialsOut receives its password when it is created.
	AdminUser           string
	AdminCredentialsOut string
	// EmitManifests renders DeployDir/kustomize into this directory.
	EmitManifests string
	DeployDir     string
	// ManifestExtra adds placeholder values (e.g. MESHFED_VERSION).
	ManifestExtra ManifestValues
	// EtcdEndpoints is what the manifests tell the federation service to dial, as the
	// operator gave it (with https:// when TLS); default the endpoints join dialled.
	EtcdEndpoints string
	// ProbeTimeout bounds the gateway reachability check (default 2s).
	ProbeTimeout time.Duration
	Actor        string
	Now          time.Time
}

// Join actions on the cluster record.
const (
	ActionCreate    = "create"
	ActionUnchanged = "unchanged"
	ActionOverwrite = "overwrite"
)

// JoinPlan is what join does (or, with --dry-run, would do).
type JoinPlan struct {
	DryRun   bool             `json:"dry_run"`
	Key      string           `json:"key"`
	Action   string           `json:"action"`
	Cluster  *records.Cluster `json:"cluster"`
	Previous *records.Cluster `json:"previous,omitempty"`
	AuditKey string           `json:"audit_key"`
	Gateways []GatewayCheck   `json:"gateway_checks"`
	// HBONEGateways are the HBONE listener addresses probed (healthprobe.ProbeHBONE): reachable,
	// TLS 1.3 with h2, an SVID of the cluster's trust domain, a client certificate required.
	HBONEGateways []GatewayCheck `json:"hbone_gateway_checks,omitempty"`
	EtcdAuth      AuthPlan       `json:"etcd_auth"`
	Admin         *AdminPlan     `json:"admin,omitempty"`
	Manifest      *ManifestPlan  `json:"manifests,omitempty"`
	Warnings      []string       `json:"warnings,omitempty"`
	// Done lists what was changed (empty for a dry run).
	Done []string `json:"done,omitempty"`

	// ownerKey and ownerRev are the record of the member whose trust domain this cluster
	// shares, as the plan read it: the write compares it, so the owner cannot leave between.
	ownerKey string
	ownerRev int64
}

// GatewayCheck is one gateway address probed through its health name.
type GatewayCheck struct {
	Address string `json:"address"`
	OK      bool   `json:"ok"`
	Result  string `json:"result"`
	Detail  string `json:"detail,omitempty"`
}

// AuthPlan is the cluster's etcd user and role.
type AuthPlan struct {
	// Enabled is whether etcd auth is on; Manage whether join manages the user and role.
	Enabled     bool         `json:"enabled"`
	Manage      bool         `json:"manage"`
	User        string       `json:"user,omitempty"`
	Role        string       `json:"role,omitempty"`
	UserExists  bool         `json:"user_exists"`
	RoleExists  bool         `json:"role_exists"`
	Password    string       `json:"password,omitempty"` // what happens to it: new, unchanged, rotated, client-certificate
	Permissions []Permission `json:"permissions,omitempty"`
	Grant       []string     `json:"grant,omitempty"`
	Revoke      []string     `json:"revoke,omitempty"`
	Credentials string       `json:"credentials_out,omitempty"`
}

// AdminPlan is the operator user join creates with --admin-user.
type AdminPlan struct {
	User        string       `json:"user"`
	Role        string       `json:"role"`
	UserExists  bool         `json:"user_exists"`
	Permissions []Permission `json:"permissions"`
	Credentials string       `json:"credentials_out,omitempty"`
}

// Credentials is the file --credentials-out writes.
type Credentials struct {
	User     string `json:"user"`
	Password string `json:"password"`
}

func (r *JoinRequest) record() *records.Cluster {
	return &records.Cluster{Name: r.Cluster, Network: r.Network, Region: r.Region, Zone: r.Zone,
		TrustDomain: r.TrustDomain, Gateways: append([]string(nil), r.Gateways...),
		HBONEGateways: append([]string(nil), r.HBONEGateways...), SharesTrustDomainWith: r.ShareTrustDomainWith,
		JoinedAt: r.Now.UTC()}
}

// validateFields checks the request's own fields, naming each (problems name JoinRequest
// fields; the caller names its flags).
func (r *JoinRequest) validateFields(p *problems.List) {
	label := func(field, v, example string) {
		if err := validate.DNSLabel(v); err != nil {
			p.Add(field, "%v (e.g. %s %s)", err, problems.Ref(field), example)
		}
	}
	label("Cluster", r.Cluster, "east")
	label("Region", r.Region, "eu-west-1")
	label("Zone", r.Zone, "eu-west-1a")
	label("Network", r.Network, "net-east")
	if strings.HasPrefix(r.TrustDomain, "spiffe://") {
		p.Add("TrustDomain", "%q: give the bare trust domain without spiffe://", r.TrustDomain)
	} else if err := validate.DNSSubdomain(r.TrustDomain); err != nil {
		p.Add("TrustDomain", "%v (e.g. %s east.example.org)", err, problems.Ref("TrustDomain"))
	}
	if r.ShareTrustDomainWith != "" {
		if err := validate.DNSLabel(r.ShareTrustDomainWith); err != nil {
			p.Add("ShareTrustDomainWith", "%v: name the member cluster that owns the trust domain (e.g. %s east)", err, problems.Ref("ShareTrustDomainWith"))
		} else if r.ShareTrustDomainWith == r.Cluster {
			p.Add("ShareTrustDomainWith", "%s is this cluster: name the member that owns the trust domain, or leave the %s out to own it", r.Cluster, problems.Ref(FieldNoun))
		}
	}
	if len(r.Gateways) == 0 {
		p.Add("Gateways", "at least one east-west gateway address is required (e.g. %s 203.0.113.10:15443; repeat for more)", problems.Ref("Gateways"))
	}
	seen := map[string]bool{}
	for _, g := range r.Gateways {
		if err := validate.HostPort(g); err != nil {
			p.Add("Gateways", "%v", err)
		}
		if seen[g] {
			p.Add("Gateways", "%s is given twice", g)
		}
		seen[g] = true
	}
	if len(r.HBONEGateways) > 0 {
		var errs validate.Errors
		records.ValidateHBONEGateways(&errs, problems.Ref("HBONEGateways"), r.HBONEGateways)
		if err := errs.Err(); err != nil {
			// The fields stay references in the text (HBONEGateways[1]: the caller's name).
			p.Add("HBONEGateways", "%v (e.g. %s 203.0.113.10:15008; repeat for more)", validate.RefText(err), problems.Ref("HBONEGateways"))
		}
	}
	switch r.Users {
	case "", UsersAuto, UsersAlways, UsersNever:
	default:
		p.Add("Users", "%q: use auto, always or never", r.Users)
	}
	if r.RotatePassword && r.CertAuth {
		p.Add("RotatePassword", "a client-certificate user has no password: leave out %s or %s", problems.Ref("RotatePassword"), problems.Ref("CertAuth"))
	}
	if r.AdminUser != "" {
		if err := validate.DNSLabel(r.AdminUser); err != nil {
			p.Add("AdminUser", "%v (e.g. %s meshfed-admin)", err, problems.Ref("AdminUser"))
		}
	}
	for _, f := range []struct{ field, path string }{{"CredentialsOut", r.CredentialsOut}, {"AdminCredentialsOut", r.AdminCredentialsOut}} {
		if f.path == "" {
			continue
		}
		if st, err := os.Stat(filepath.Dir(f.path)); err != nil || !st.IsDir() {
			p.Add(f.field, "directory %s does not exist: create it first", filepath.Dir(f.path))
		}
	}
	if r.CredentialsOut != "" && r.CredentialsOut == r.AdminCredentialsOut {
		p.Add("AdminCredentialsOut", "must differ from %s", problems.Ref("CredentialsOut"))
	}
}

// PlanJoin validates everything a join needs and says what it would do, without changing
// anything. Every problem is collected and returned at once (an *InvalidError);
// gateways that do not answer are warnings, not errors (the gateway may start later).
func PlanJoin(ctx context.Context, st *store.Store, r JoinRequest) (*JoinPlan, error) {
	if r.Now.IsZero() {
		r.Now = time.Now()
	}
	if r.Users == "" {
		r.Users = UsersAuto
	}
	p := problems.New("join " + r.Cluster)
	r.validateFields(p)
	plan := &JoinPlan{DryRun: r.DryRun, Key: st.KS.Cluster(r.Cluster), Cluster: r.record()}
	fieldsOK := p.Len() == 0
	// Conflicts with other members are checked even when a field is bad, so that every
	// problem shows at once.
	snap, err := ReadSnapshot(ctx, st)
	if err != nil {
		return plan, fmt.Errorf("join %s: %w", r.Cluster, err)
	}
	checkMembership(st, snap, &r, plan, p)
	if !fieldsOK {
		// Keys, users and probes would be meaningless with a bad name or address.
		return plan, p.Err()
	}
	plan.AuditKey = st.KS.Audit(r.Now, "join-"+r.Cluster)
	plan.Gateways = probeGateways(ctx, r.Gateways, r.ProbeTimeout, func(ctx context.Context, a string) healthprobe.Outcome {
		return healthprobe.Probe(ctx, r.Cluster, a, nil)
	})
	// HBONE listeners have no health name; their probe checks what a caller without an SVID
	// can. A failure is reported (the caller names its field), not fatal: the gateway is often
	// deployed after join, from its manifests.
	plan.HBONEGateways = probeGateways(ctx, r.HBONEGateways, r.ProbeTimeout, func(ctx context.Context, a string) healthprobe.Outcome {
		return healthprobe.ProbeHBONE(ctx, a, r.TrustDomain)
	})
	for _, g := range plan.Gateways {
		if !g.OK {
			plan.Warnings = append(plan.Warnings, fmt.Sprintf("gateway %s does not answer its health check (%s: %s); join goes on, but other clusters will not route to %s until it does", g.Address, g.Result, g.Detail, r.Cluster))
		}
	}

	if err := planAuth(ctx, st, &r, plan, p); err != nil {
		return plan, fmt.Errorf("join %s: %w", r.Cluster, err)
	}

	if r.EmitManifests != "" {
		mp, err := planManifests(r.DeployDir, r.EmitManifests, r.manifestValues(st, plan))
		if err != nil {
			p.Add("EmitManifests", "%v", err)
		}
		plan.Manifest = mp
	}
	return plan, p.Err()
}

// checkMembership compares the request with the keyspace: same name, trust domain,
// gateways.
func checkMembership(st *store.Store, snap *Snapshot, r *JoinRequest, plan *JoinPlan, p *problems.List) {
	plan.Action = ActionCreate
	if prev, ok := snap.Clusters[r.Cluster]; ok {
		plan.Previous = prev.Value
		if prev.Value.SameMember(plan.Cluster) {
			plan.Action = ActionUnchanged
			plan.Cluster.JoinedAt = prev.Value.JoinedAt // idempotent: nothing to rewrite
		} else if r.Force {
			plan.Action = ActionOverwrite
			plan.Warnings = append(plan.Warnings, fmt.Sprintf("--force: overwriting %s (%s); an audit record keeps the previous value", plan.Key, describeCluster(prev.Value)))
		} else {
			p.Add("Cluster", "%q is already a member with different settings (%s; you asked for %s): pick another name, run `meshfed leave %s %s` first, or add %s to overwrite (audited)",
				r.Cluster, describeCluster(prev.Value), describeCluster(plan.Cluster), problems.Ref("Cluster"), r.Cluster, problems.Ref("Force"))
		}
	}
	for _, name := range snap.ClusterNames() {
		if name == r.Cluster {
			continue
		}
		c := snap.Clusters[name].Value
		if c.TrustDomain == r.TrustDomain && r.ShareTrustDomainWith == "" && c.SharesTrustDomainWith != r.Cluster {
			owner := c.BundleOwner()
			p.Add("TrustDomain", "%s is the trust domain of cluster %s (%s): a cluster owns its own trust domain; pick another, or, when these clusters are one mesh with one shared root (Istio multi-network), add %s %s (the clusters then trust each other's workloads fully)", r.TrustDomain, name, st.KS.Cluster(name), problems.Ref("ShareTrustDomainWith"), owner)
		}
		if c.SharesTrustDomainWith == r.Cluster && (c.TrustDomain != r.TrustDomain || r.ShareTrustDomainWith != "") {
			p.Add("TrustDomain", "cluster %s shares the trust domain %s that %s owns: %s must keep owning it while %s is a member (have %s leave first)", name, c.TrustDomain, r.Cluster, r.Cluster, name, name)
		}
		for _, g := range r.Gateways {
			for _, og := range c.Gateways {
				if g == og {
					p.Add("Gateways", "%s is a gateway of cluster %s already: a gateway serves one cluster; check the address", g, name)
				}
			}
		}
		for _, g := range r.HBONEGateways {
			if slices.Contains(c.HBONEGateways, g) {
				p.Add("HBONEGateways", "%s is an HBONE gateway of cluster %s already: a gateway serves one cluster; check the address", g, name)
			}
		}
	}
	owner := plan.Cluster.BundleOwner()
	if b, ok := snap.Bundles[r.TrustDomain]; ok && b.Value.Owner != owner {
		p.Add("TrustDomain", "the bundle of %s (%s) is owned by cluster %s: pick another trust domain, or have %s leave first", r.TrustDomain, st.KS.Bundle(r.TrustDomain), b.Value.Owner, b.Value.Owner)
	}
	if r.ShareTrustDomainWith != "" && r.ShareTrustDomainWith != r.Cluster {
		checkShare(st, snap, r, plan, p)
	}
}

// checkShare checks a join that shares the trust domain of another member: that member
// must own it (have it, and share no one's).
func checkShare(st *store.Store, snap *Snapshot, r *JoinRequest, plan *JoinPlan, p *problems.List) {
	with := r.ShareTrustDomainWith
	o, ok := snap.Clusters[with]
	switch {
	case !ok:
		p.Add("ShareTrustDomainWith", "%s is not a member (no %s): join the cluster that owns %s first, without this %s", with, st.KS.Cluster(with), r.TrustDomain, problems.Ref(FieldNoun))
		return
	case o.Value.SharesTrustDomainWith != "":
		p.Add("ShareTrustDomainWith", "%s shares the trust domain of %s itself: name the owner, %s %s", with, o.Value.SharesTrustDomainWith, problems.Ref("ShareTrustDomainWith"), o.Value.SharesTrustDomainWith)
		return
	case o.Value.TrustDomain != r.TrustDomain:
		p.Add("ShareTrustDomainWith", "%s has the trust domain %s, not %s: a cluster shares the trust domain of the member that owns it (give %s %s)", with, o.Value.TrustDomain, r.TrustDomain, problems.Ref("TrustDomain"), o.Value.TrustDomain)
		return
	}
	plan.ownerKey, plan.ownerRev = o.Key, o.ModRevision
	plan.Warnings = append(plan.Warnings, fmt.Sprintf("%s shares the trust domain %s of %s: every workload of either cluster (any SVID of %s) is trusted by the other as its own; %s alone publishes and rotates %s, and %s only reads it",
		r.Cluster, r.TrustDomain, with, r.TrustDomain, with, st.KS.Bundle(r.TrustDomain), r.Cluster))
}

func describeCluster(c *records.Cluster) string {
	d := fmt.Sprintf("region=%s zone=%s network=%s trust-domain=%s gateways=%s", c.Region, c.Zone, c.Network, c.TrustDomain, strings.Join(c.Gateways, ","))
	if len(c.HBONEGateways) > 0 {
		d += " hbone-gateways=" + strings.Join(c.HBONEGateways, ",")
	}
	if c.SharesTrustDomainWith != "" {
		d += " shares-trust-domain-with=" + c.SharesTrustDomainWith
	}
	return d
}

// probeGateways checks each address with probe (the gateway's TLS health name, or its HBONE
// listener), in parallel, bounded by timeout each.
func probeGateways(ctx context.Context, addrs []string, timeout time.Duration, probe func(context.Context, string) healthprobe.Outcome) []GatewayCheck {
	if timeout <= 0 {
		timeout = 2 * time.Second
	}
	out := make([]GatewayCheck, len(addrs))
	var wg sync.WaitGroup
	for i, a := range addrs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			o := probe(pctx, a)
			gc := GatewayCheck{Address: a, OK: o.OK, Result: o.Result}
			if o.Err != nil {
				gc.Detail = o.Err.Error()
			}
			out[i] = gc
		}()
	}
	wg.Wait()
	return out
}

// planAuth decides what happens to the etcd user and role. Errors returned are etcd
// failures; problems go to p.
func planAuth(ctx context.Context, st *store.Store, r *JoinRequest, plan *JoinPlan, p *problems.List) error {
	cli := st.Client()
	enabled, err := AuthEnabled(ctx, cli)
	if err != nil {
		return err
	}
	a := &plan.EtcdAuth
	a.Enabled = enabled
	a.Manage = r.Users == UsersAlways || (r.Users == UsersAuto && enabled)
	if !a.Manage {
		if !enabled && r.Users != UsersNever {
			plan.Warnings = append(plan.Warnings, "etcd auth is off: every cluster can write every key. For production enable it (docs/operations.md, \"etcd auth\"); then run join again for each cluster to create its etcd user")
		}
		if r.CredentialsOut != "" || r.AdminUser != "" {
			plan.Warnings = append(plan.Warnings, "no etcd user is created (etcd auth is off or --etcd-users=never): --credentials-out and --admin-user are ignored")
		}
		return nil
	}
	a.User = ClusterUserName(st.KS, r.Cluster)
	a.Role = a.User
	a.Permissions = ClusterPermissions(st.KS, plan.Cluster)
	exists, _, err := userState(ctx, cli, a.User)
	if store.IsPermissionDenied(err) {
		p.Add(FieldEtcdUser, "creating the cluster's etcd user and role needs etcd's root role (etcd allows user and role management to root only): run join with %s root", Ref(FieldEtcdUser))
		return nil
	}
	if err != nil {
		return err
	}
	a.UserExists = exists
	d, err := diffRole(ctx, cli, a.Role, a.Permissions)
	if err != nil {
		return err
	}
	a.RoleExists = !d.create
	for _, g := range d.grant {
		a.Grant = append(a.Grant, g.String())
	}
	for _, h := range d.revoke {
		k := string(h.Key)
		if len(h.RangeEnd) > 0 {
			k += "*"
		}
		a.Revoke = append(a.Revoke, k)
	}
	switch {
	case r.CertAuth && !exists:
		a.Password = "client-certificate"
	case !exists:
		a.Password = "new"
		if r.CredentialsOut == "" {
			p.Add("CredentialsOut", "required: join creates etcd user %s with a new password and writes it only to this file (mode 0600), e.g. %s %s-etcd.json", a.User, problems.Ref("CredentialsOut"), r.Cluster)
		}
	case r.RotatePassword:
		a.Password = "rotated"
		if r.CredentialsOut == "" {
			p.Add("CredentialsOut", "required with %s: the new password is written only to this file", problems.Ref("RotatePassword"))
		}
	default:
		a.Password = "unchanged"
		if r.CredentialsOut != "" {
			plan.Warnings = append(plan.Warnings, fmt.Sprintf("etcd user %s exists; its password is unchanged and --credentials-out is not written (add --rotate-password for a new one)", a.User))
		}
	}
	if a.Password == "new" || a.Password == "rotated" {
		a.Credentials = r.CredentialsOut
	}
	if r.AdminUser != "" {
		ap := &AdminPlan{User: r.AdminUser, Role: OperatorRoleName(st.KS), Permissions: OperatorPermissions(st.KS)}
		ex, _, err := userState(ctx, cli, r.AdminUser)
		if err != nil {
			return err
		}
		ap.UserExists = ex
		if !ex {
			if r.AdminCredentialsOut == "" {
				p.Add("AdminCredentialsOut", "required: join creates etcd user %s with a new password and writes it only to this file (mode 0600)", r.AdminUser)
			}
			ap.Credentials = r.AdminCredentialsOut
		}
		plan.Admin = ap
	}
	return nil
}

func (r *JoinRequest) manifestValues(st *store.Store, plan *JoinPlan) ManifestValues {
	v := ManifestValues{
		"MESHFED_CLUSTER":      r.Cluster,
		"MESHFED_REGION":       r.Region,
		"MESHFED_ZONE":         r.Zone,
		"MESHFED_NETWORK":      r.Network,
		"MESHFED_TRUST_DOMAIN": r.TrustDomain,
		"MESHFED_GATEWAYS":     strings.Join(r.Gateways, ","),
		"MESHFED_GATEWAY":      "",
		"MESHFED_PREFIX":       st.KS.Prefix(),
		"MESHFED_ETCD_USER":    plan.EtcdAuth.User,
	}
	if len(r.Gateways) > 0 {
		v["MESHFED_GATEWAY"] = r.Gateways[0]
	}
	v["MESHFED_ETCD_ENDPOINTS"] = r.EtcdEndpoints
	if r.EtcdEndpoints == "" {
		v["MESHFED_ETCD_ENDPOINTS"] = strings.Join(st.Client().Endpoints(), ",")
	}
	for k, x := range r.ManifestExtra {
		v[k] = x
	}
	return v
}

// Join validates (PlanJoin) and, unless DryRun, applies the plan: the etcd role and user
// first (so the cluster can write the moment its record exists), then the cluster record
// and the audit record in one transaction, then the operator user and the manifests.
// Errors name what was already done, so a re-run (idempotent) finishes the job.
func Join(ctx context.Context, st *store.Store, r JoinRequest) (*JoinPlan, error) {
	if r.Now.IsZero() {
		r.Now = time.Now()
	}
	if r.Users == "" {
		r.Users = UsersAuto
	}
	plan, err := PlanJoin(ctx, st, r)
	if err != nil || r.DryRun {
		return plan, err
	}
	cli := st.Client()
	fail := func(err error) (*JoinPlan, error) {
		if len(plan.Done) > 0 {
			return plan, fmt.Errorf("join %s: %w (already done: %s; fix the cause and run join again: it is idempotent)", r.Cluster, err, strings.Join(plan.Done, "; "))
		}
		return plan, fmt.Errorf("join %s: %w", r.Cluster, err)
	}

	a := plan.EtcdAuth
	if a.Manage {
		if err := ensureRole(ctx, cli, a.Role, a.Permissions); err != nil {
			return fail(err)
		}
		if !a.RoleExists || len(a.Grant)+len(a.Revoke) > 0 {
			plan.Done = append(plan.Done, "etcd role "+a.Role+" set ("+joinPerms(a.Permissions)+")")
		}
		switch a.Password {
		case "new", "rotated":
			pw, err := NewPassword()
			if err != nil {
				return fail(err)
			}
			// The file first: a password etcd holds but nobody wrote down is useless.
			if err := writeCredentials(r.CredentialsOut, Credentials{User: a.User, Password: pw}); err != nil {
				return fail(&validate.FieldError{Field: "CredentialsOut", Msg: err.Error(), Err: err})
			}
			if a.Password == "new" {
				if _, err := ensureUser(ctx, cli, a.User, pw, false, a.Role); err != nil {
					_ = os.Remove(r.CredentialsOut)
					return fail(err)
				}
				plan.Done = append(plan.Done, "etcd user "+a.User+" created; credentials in "+r.CredentialsOut)
			} else {
				if _, err := cli.UserChangePassword(ctx, a.User, pw); err != nil {
					_ = os.Remove(r.CredentialsOut)
					return fail(fmt.Errorf("change password of etcd user %s: %w", a.User, err))
				}
				if _, err := ensureUser(ctx, cli, a.User, "", false, a.Role); err != nil {
					return fail(err)
				}
				plan.Done = append(plan.Done, "etcd user "+a.User+" has a new password in "+r.CredentialsOut)
			}
		default:
			created, err := ensureUser(ctx, cli, a.User, "", r.CertAuth, a.Role)
			if err != nil {
				return fail(err)
			}
			if created {
				plan.Done = append(plan.Done, "etcd user "+a.User+" created for client-certificate auth (CN="+a.User+")")
			}
		}
	}

	if err := writeJoin(ctx, st, &r, plan); err != nil {
		return fail(err)
	}

	if plan.Admin != nil {
		ad := plan.Admin
		if err := ensureRole(ctx, cli, ad.Role, ad.Permissions); err != nil {
			return fail(err)
		}
		if !ad.UserExists {
			pw, err := NewPassword()
			if err != nil {
				return fail(err)
			}
			if err := writeCredentials(r.AdminCredentialsOut, Credentials{User: ad.User, Password: pw}); err != nil {
				return fail(&validate.FieldError{Field: "AdminCredentialsOut", Msg: err.Error(), Err: err})
			}
			if _, err := ensureUser(ctx, cli, ad.User, pw, false, ad.Role); err != nil {
				_ = os.Remove(r.AdminCredentialsOut)
				return fail(err)
			}
			plan.Done = append(plan.Done, "operator user "+ad.User+" created (role "+ad.Role+"); credentials in "+r.AdminCredentialsOut)
		} else {
			if _, err := ensureUser(ctx, cli, ad.User, "", false, ad.Role); err != nil {
				return fail(err)
			}
			plan.Done = append(plan.Done, "operator user "+ad.User+" has role "+ad.Role)
		}
	}

	if plan.Manifest != nil {
		if err := renderManifests(plan.Manifest, r.manifestValues(st, plan)); err != nil {
			return fail(err)
		}
		plan.Done = append(plan.Done, fmt.Sprintf("%d manifest files written to %s", len(plan.Manifest.Files), plan.Manifest.Out))
	}
	return plan, nil
}

func joinPerms(ps []Permission) string {
	s := make([]string, 0, len(ps))
	for _, p := range sortedPerms(ps) {
		s = append(s, p.String())
	}
	return strings.Join(s, ", ")
}

// JoinAudit is the detail of a join audit record.
type JoinAudit struct {
	Action   string           `json:"action"`
	Cluster  *records.Cluster `json:"cluster"`
	Previous *records.Cluster `json:"previous,omitempty"`
	Forced   bool             `json:"forced,omitempty"`
	EtcdUser string           `json:"etcdUser,omitempty"`
}

// writeJoin writes the cluster record and the audit record in one transaction that
// compares the record's revision with what the plan read.
func writeJoin(ctx context.Context, st *store.Store, r *JoinRequest, plan *JoinPlan) error {
	key := plan.Key
	cmp := clientv3.Compare(clientv3.CreateRevision(key), "=", 0)
	var ops []clientv3.Op
	action := "join"
	switch plan.Action {
	case ActionUnchanged, ActionOverwrite:
		it, err := store.Get[records.Cluster](ctx, st, key)
		if err != nil {
			return err
		}
		if plan.Action == ActionUnchanged && !it.Value.SameMember(plan.Cluster) || plan.Action == ActionOverwrite && plan.Previous != nil && !it.Value.SameMember(plan.Previous) {
			return fmt.Errorf("%s changed while joining: %w; run join again", key, store.ErrConflict)
		}
		cmp = clientv3.Compare(clientv3.ModRevision(key), "=", it.ModRevision)
		if plan.Action == ActionOverwrite {
			action = "join-force"
		}
	}
	cmps := []clientv3.Cmp{cmp}
	if plan.ownerKey != "" {
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(plan.ownerKey), "=", plan.ownerRev))
	}
	if plan.Action != ActionUnchanged {
		b, err := records.Encode(plan.Cluster)
		if err != nil {
			return err
		}
		ops = append(ops, clientv3.OpPut(key, string(b)))
	}
	detail, _ := json.Marshal(JoinAudit{Action: plan.Action, Cluster: plan.Cluster, Previous: plan.Previous, Forced: plan.Action == ActionOverwrite, EtcdUser: plan.EtcdAuth.User})
	audit := &records.Audit{Time: r.Now.UTC(), Actor: actorOr(r.Actor), Action: action, Cluster: r.Cluster, Detail: string(detail)}
	ab, err := records.Encode(audit)
	if err != nil {
		return err
	}
	ops = append(ops, clientv3.OpPut(plan.AuditKey, string(ab)))
	resp, err := st.Client().Txn(ctx).If(cmps...).Then(ops...).Commit()
	if err != nil {
		if store.IsPermissionDenied(err) {
			return fmt.Errorf("write %s: %w", key, needsOperator(err, "join writes", false))
		}
		return fmt.Errorf("write %s: %w", key, err)
	}
	if !resp.Succeeded {
		return fmt.Errorf("%s changed while joining: %w; run join again", key, store.ErrConflict)
	}
	switch plan.Action {
	case ActionCreate:
		plan.Done = append(plan.Done, "wrote "+key)
	case ActionOverwrite:
		plan.Done = append(plan.Done, "overwrote "+key+" (--force)")
	default:
		plan.Done = append(plan.Done, key+" unchanged (already a member with these settings)")
	}
	plan.Done = append(plan.Done, "audit record "+plan.AuditKey)
	return nil
}

func actorOr(a string) string {
	if a == "" {
		return actor.Of("")
	}
	return a
}

// writeCredentials writes c as JSON, mode 0600, atomically (temp file, fsync, rename).
func writeCredentials(path string, c Credentials) error {
	if path == "" {
		return errors.New("no file given")
	}
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.Write(path, append(b, '\n'), 0o600)
}

// ReadCredentials reads a file written by --credentials-out.
func ReadCredentials(path string) (Credentials, error) {
	var c Credentials
	b, err := os.ReadFile(path)
	if err != nil {
		return c, err
	}
	if err := json.Unmarshal(b, &c); err != nil {
		return c, fmt.Errorf("%s: %w", path, err)
	}
	if c.User == "" || c.Password == "" {
		return c, fmt.Errorf("%s: want {\"user\": ..., \"password\": ...}", path)
	}
	return c, nil
}

// sortStrings returns s sorted (a copy).
func sortStrings(s []string) []string {
	out := append([]string(nil), s...)
	sort.Strings(out)
	return out
}
