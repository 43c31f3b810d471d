package operator

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/meshfed/meshfed/api/validate"
	"github.com/meshfed/meshfed/keyspace/records"
	"github.com/meshfed/meshfed/keyspace/store"
	"github.com/meshfed/meshfed/operator/internal/problems"
)

// LeaveRequest is what `meshfed leave` asks for.
type LeaveRequest struct {
	Cluster string
	// Force leaves even while the cluster's federation service is running or a rotation
	// of its trust domain is in progress.
	Force bool
	// KeepBundle keeps bundles/<td> (other clusters go on trusting the domain).
	KeepBundle bool
	DryRun     bool
	Actor      string
	Now        time.Time
}

// LeavePlan is what leave removes (or, with --dry-run, would remove).
type LeavePlan struct {
	DryRun   bool             `json:"dry_run"`
	Cluster  string           `json:"cluster"`
	Record   *records.Cluster `json:"record,omitempty"`
	Delete   []KeyCount       `json:"delete"`
	EtcdAuth LeaveAuth        `json:"etcd_auth"`
	AuditKey string           `json:"audit_key,omitempty"`
	Warnings []string         `json:"warnings,omitempty"`
	Done     []string         `json:"done,omitempty"`
}

// KeyCount is a key or prefix and how many keys it holds now.
type KeyCount struct {
	Key    string `json:"key"`
	Prefix bool   `json:"prefix"`
	Count  int    `json:"count"`
	What   string `json:"what"`
}

// LeaveAuth is the cluster's etcd user and role on the way out.
type LeaveAuth struct {
	Enabled bool   `json:"enabled"`
	User    string `json:"user"`
	Role    string `json:"role"`
	// CanManage is false when the caller lacks etcd's root role (an operator user): the
	// user and role are then left for root to remove, and the plan says how.
	CanManage bool `json:"can_manage"`
	Exists    bool `json:"exists"`
}

// LeaveAudit is the detail of a leave audit record.
type LeaveAudit struct {
	Record  *records.Cluster `json:"record,omitempty"`
	Deleted []KeyCount       `json:"deleted"`
	Forced  bool             `json:"forced,omitempty"`
	// EtcdUserRemoved is false when the etcd user and role were left in place.
	EtcdUserRemoved bool `json:"etcdUserRemoved"`
}

// PlanLeave checks a leave and lists what it removes; nothing changes.
func PlanLeave(ctx context.Context, st *store.Store, r LeaveRequest) (*LeavePlan, *Snapshot, error) {
	if r.Now.IsZero() {
		r.Now = time.Now()
	}
	p := problems.New("leave " + r.Cluster)
	if err := validate.DNSLabel(r.Cluster); err != nil {
		p.Add("Cluster", "%v (e.g. %s east)", err, problems.Ref("Cluster"))
		return nil, nil, p.Err()
	}
	plan := &LeavePlan{DryRun: r.DryRun, Cluster: r.Cluster}
	snap, err := ReadSnapshot(ctx, st)
	if err != nil {
		return nil, nil, fmt.Errorf("leave %s: %w", r.Cluster, err)
	}
	ks := st.KS
	var td string
	if c, ok := snap.Clusters[r.Cluster]; ok {
		plan.Record = c.Value
		td = c.Value.TrustDomain
	}
	add := func(key string, prefix bool, n int, what string) {
		plan.Delete = append(plan.Delete, KeyCount{Key: key, Prefix: prefix, Count: n, What: what})
	}
	add(ks.ExportsOf(r.Cluster), true, len(snap.Exports[r.Cluster]), "its exports (withdrawn from every cluster's imports)")
	add(ks.AcksOf(r.Cluster), true, len(snap.Acks[r.Cluster]), "its bundle acks")
	_, alive := snap.Alive[r.Cluster]
	add(ks.Alive(r.Cluster), false, b2i(alive), "its heartbeat")
	add(ks.Cluster(r.Cluster), false, b2i(plan.Record != nil), "its cluster record")
	if td != "" && !r.KeepBundle {
		if b, ok := snap.Bundles[td]; ok && b.Value.Owner == r.Cluster {
			add(ks.Bundle(td), false, 1, "the bundle of its trust domain "+td+" (other clusters stop trusting it)")
		}
	}
	if plan.Record != nil {
		if sharers := sharersOf(snap, r.Cluster); len(sharers) > 0 {
			// Not even forced: the sharers would be left with a bundle nobody may publish
			// or rotate. Ownership is not handed over (docs/operations.md).
			p.Add("Cluster", "%s owns the trust domain %s, which %s share with it (they read %s, which %s alone publishes and rotates): have them leave first (meshfed leave %s %s); ownership is not handed over",
				r.Cluster, td, strings.Join(sharers, ", "), ks.Bundle(td), r.Cluster, problems.Ref("Cluster"), sharers[0])
		}
	}
	if alive && !r.Force {
		a := snap.Alive[r.Cluster].Value
		p.Add("Cluster", "the federation service of %s is still running (%s held by %s since %s): it would publish its exports again; stop it first, or add %s",
			r.Cluster, ks.Alive(r.Cluster), a.Instance, a.Since.UTC().Format(time.RFC3339), problems.Ref("Force"))
	}
	if td != "" {
		if rot, ok := snap.Rotations[td]; ok && rot.Rotation != nil && !rot.Rotation.Phase.Terminal() {
			if r.Force {
				plan.Warnings = append(plan.Warnings, fmt.Sprintf("rotation %s of %s is in phase %s: --force leaves anyway", rot.Rotation.ID, td, rot.Rotation.Phase))
			} else {
				p.Add("Cluster", "a root rotation of %s (%s, phase %s) is in progress: finish or abort it first (meshfed trust rotate), or add %s", td, ks.Rotation(td), rot.Rotation.Phase, problems.Ref("Force"))
			}
		}
	}
	for _, k := range sortedKeys(snap.Policies) {
		for _, c := range snap.Policies[k].Value.Order {
			if c == r.Cluster {
				plan.Warnings = append(plan.Warnings, fmt.Sprintf("policy %s lists %s in its order; it is ignored there from now on (meshfed policy set %s --order ... to tidy up)", k, r.Cluster, k))
			}
		}
	}
	for _, d := range snap.Drills {
		if d.Value.Cluster == r.Cluster {
			plan.Warnings = append(plan.Warnings, fmt.Sprintf("drill %s cordons %s; it ends by itself when its process stops", d.Value.ID, r.Cluster))
		}
	}

	cli := st.Client()
	enabled, err := AuthEnabled(ctx, cli)
	if err != nil {
		return nil, nil, fmt.Errorf("leave %s: %w", r.Cluster, err)
	}
	la := &plan.EtcdAuth
	la.Enabled = enabled
	la.User = ClusterUserName(ks, r.Cluster)
	la.Role = la.User
	_, roleFound, err := rolePerms(ctx, cli, la.Role)
	switch {
	case store.IsPermissionDenied(err):
		la.CanManage = false
		la.Exists = true // unknown; assume it is there so that the plan says how to remove it
		plan.Warnings = append(plan.Warnings, fmt.Sprintf("these credentials cannot manage etcd users (that needs etcd's root role): etcd user and role %s stay; remove them with `meshfed leave --cluster %s --etcd-user root` (safe to run again) or `etcdctl user delete %s && etcdctl role delete %s`. Until then the cluster can still write its own keys.",
			la.User, r.Cluster, la.User, la.Role))
	case err != nil:
		return nil, nil, fmt.Errorf("leave %s: %w", r.Cluster, err)
	default:
		la.CanManage = true
		userFound, _, err := userState(ctx, cli, la.User)
		if err != nil {
			return nil, nil, fmt.Errorf("leave %s: %w", r.Cluster, err)
		}
		la.Exists = roleFound || userFound
	}

	hasKeys := plan.Record != nil
	for _, d := range plan.Delete {
		if d.Count > 0 {
			hasKeys = true
		}
	}
	if !hasKeys && !(la.Exists && la.CanManage) {
		plan.Warnings = append(plan.Warnings, fmt.Sprintf("%s is not a member: nothing to remove", r.Cluster))
		plan.Delete = nil
	} else {
		plan.AuditKey = ks.Audit(r.Now, "leave-"+r.Cluster)
	}
	return plan, snap, p.Err()
}

// sharersOf lists (sorted) the members that share the trust domain owned by cluster.
func sharersOf(snap *Snapshot, cluster string) []string {
	var out []string
	for _, name := range snap.ClusterNames() {
		if c := snap.Clusters[name].Value; c.SharesTrustDomainWith == cluster {
			out = append(out, name)
		}
	}
	return out
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// Leave removes a cluster from the clusterset: its etcd user and role first (so it cannot
// write again), then its exports, acks, heartbeat, record and (unless KeepBundle) its
// bundle in one transaction with an audit record. Operator credentials remove the keys;
// removing the etcd user and role needs root (the plan says so when it cannot).
func Leave(ctx context.Context, st *store.Store, r LeaveRequest) (*LeavePlan, error) {
	if r.Now.IsZero() {
		r.Now = time.Now()
	}
	plan, snap, err := PlanLeave(ctx, st, r)
	if err != nil || r.DryRun || plan.AuditKey == "" {
		return plan, err
	}
	cli := st.Client()
	removed := false
	if plan.EtcdAuth.CanManage && plan.EtcdAuth.Exists {
		done, err := deleteUserAndRole(ctx, cli, plan.EtcdAuth.User, plan.EtcdAuth.Role)
		plan.Done = append(plan.Done, done...)
		if err != nil {
			return plan, fmt.Errorf("leave %s: %w", r.Cluster, err)
		}
		removed = true
	}
	var cmps []clientv3.Cmp
	var ops []clientv3.Op
	var deleted []KeyCount
	for _, d := range plan.Delete {
		if d.Count == 0 {
			continue
		}
		deleted = append(deleted, d)
		if d.Prefix {
			ops = append(ops, clientv3.OpDelete(d.Key, clientv3.WithPrefix()))
		} else {
			ops = append(ops, clientv3.OpDelete(d.Key))
		}
	}
	// The record and bundle must be the ones we planned on (a concurrent re-join wins).
	if c, ok := snap.Clusters[r.Cluster]; ok {
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(c.Key), "=", c.ModRevision))
		// No cluster record changed since the plan read them: a cluster that joined
		// meanwhile sharing this one's trust domain would be left without its owner.
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(st.KS.Family(records.KindCluster)), "<", snap.Revision+1).WithPrefix())
	} else {
		cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(st.KS.Cluster(r.Cluster)), "=", 0))
	}
	detail, _ := json.Marshal(LeaveAudit{Record: plan.Record, Deleted: deleted, Forced: r.Force, EtcdUserRemoved: removed})
	audit := &records.Audit{Time: r.Now.UTC(), Actor: actorOr(r.Actor), Action: "leave", Cluster: r.Cluster, Detail: string(detail)}
	ab, err := records.Encode(audit)
	if err != nil {
		return plan, err
	}
	ops = append(ops, clientv3.OpPut(plan.AuditKey, string(ab)))
	resp, err := cli.Txn(ctx).If(cmps...).Then(ops...).Commit()
	if err != nil {
		return plan, fmt.Errorf("leave %s: %w", r.Cluster, err)
	}
	if !resp.Succeeded {
		return plan, fmt.Errorf("leave %s: %s changed meanwhile (%w): run leave again", r.Cluster, st.KS.Cluster(r.Cluster), store.ErrConflict)
	}
	for _, d := range deleted {
		k := d.Key
		if d.Prefix {
			k += "*"
		}
		plan.Done = append(plan.Done, fmt.Sprintf("deleted %s (%d)", k, d.Count))
	}
	plan.Done = append(plan.Done, "audit record "+plan.AuditKey)
	return plan, nil
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return sortStrings(out)
}

// describeDelete is "exports/east/* (3)".
func describeDelete(d KeyCount) string {
	k := d.Key
	if d.Prefix {
		k += "*"
	}
	return fmt.Sprintf("%s (%d key%s): %s", k, d.Count, plural(d.Count), d.What)
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}
