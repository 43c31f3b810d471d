package operator

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/meshfed/meshfed/keyspace/records"
	"github.com/meshfed/meshfed/keyspace/store"
)

// TestLeaveRemovesEverythingKeepsAudit: leave deletes the cluster's etcd user and role,
// its exports, acks, heartbeat, record and bundle, keeps audit records (the join's and
// its own), and leaves other clusters alone.
func TestLeaveRemovesEverythingKeepsAudit(t *testing.T) {
	t.Parallel()
	srv, root := etcdWithAuth(t)
	ctx := tctx(t)
	ks := root.KS
	creds := map[string]Credentials{}
	for _, n := range []string{"east", "west"} {
		r := joinReq(t, n, "eu", n+".example.org")
		r.CredentialsOut = credsPath(t, n)
		if _, err := Join(ctx, root, r); err != nil {
			t.Fatal(err)
		}
		creds[n], _ = ReadCredentials(r.CredentialsOut)
	}
	// Both clusters publish as their federation services would, with their own credentials.
	for _, n := range []string{"east", "west"} {
		st := openStore(t, srv, creds[n].User, creds[n].Password)
		for _, svc := range []string{"echo", "api"} {
			if err := put(t, st, ks.Export(n, "demo", svc), testExport(n, "demo", svc)); err != nil {
				t.Fatal(err)
			}
		}
		if err := put(t, st, ks.Ack(n, "east.example.org"), &records.Ack{Cluster: n, TrustDomain: "east.example.org", Sequence: 1, AppliedAt: time.Now()}); err != nil {
			t.Fatal(err)
		}
		if err := put(t, st, ks.Bundle(n+".example.org"), testBundle(n+".example.org", n)); err != nil {
			t.Fatal(err)
		}
		if err := put(t, st, ks.Alive(n), &records.Alive{Cluster: n, Instance: n + "-1", TTL: 10, Since: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := SetPolicy(ctx, root, PolicyRequest{Namespace: "demo", Name: "echo", Order: []string{"east", "west"}}); err != nil {
		t.Fatal(err)
	}

	// Still running: refused, nothing removed.
	_, err := Leave(ctx, root, LeaveRequest{Cluster: "east"})
	if err == nil || !strings.Contains(err.Error(), "still running") || !strings.Contains(err.Error(), "or add Force") {
		t.Fatalf("leave of a running cluster: %v", err)
	}
	if keysUnder(t, root, "exports/east/") != 2 {
		t.Fatal("refused leave removed exports")
	}
	// Dry run: the plan, nothing removed.
	plan, err := Leave(ctx, root, LeaveRequest{Cluster: "east", Force: true, DryRun: true})
	if err != nil || !plan.DryRun || plan.AuditKey == "" || !plan.EtcdAuth.CanManage {
		t.Fatalf("dry run %+v %v", plan, err)
	}
	if keysUnder(t, root, "exports/east/") != 2 || keysUnder(t, root, "audit/") != 2 {
		t.Fatal("dry-run leave changed etcd")
	}

	plan, err = Leave(ctx, root, LeaveRequest{Cluster: "east", Force: true, Actor: "test"})
	if err != nil {
		t.Fatalf("leave: %v", err)
	}
	if !strings.Contains(strings.Join(plan.Warnings, "\n"), "policy demo/echo lists east") {
		t.Errorf("warnings %v", plan.Warnings)
	}
	for _, sub := range []string{"exports/east/", "acks/east/", "alive/east", "clusters/east", "bundles/east.example.org"} {
		if n := keysUnder(t, root, sub); n != 0 {
			t.Errorf("%s: %d keys left", sub, n)
		}
	}
	for _, sub := range []string{"exports/west/", "acks/west/", "alive/west", "clusters/west", "bundles/west.example.org", "policy/"} {
		if keysUnder(t, root, sub) == 0 {
			t.Errorf("leave of east removed %s", sub)
		}
	}
	if ok, _, _ := userState(ctx, root.Client(), "meshfed-cluster-east"); ok {
		t.Error("etcd user of east still exists")
	}
	if _, found, _ := rolePerms(ctx, root.Client(), "meshfed-cluster-east"); found {
		t.Error("etcd role of east still exists")
	}
	if ok, _, _ := userState(ctx, root.Client(), "meshfed-cluster-west"); !ok {
		t.Error("etcd user of west was removed")
	}
	if _, err := dialStore(srv, creds["east"].User, creds["east"].Password); err == nil {
		t.Error("east's credentials still authenticate")
	}
	as := audits(t, root)
	if len(as) != 3 || as[0].Action != "join" || as[2].Action != "leave" || as[2].Cluster != "east" {
		t.Fatalf("audit records %+v", as)
	}
	var d LeaveAudit
	if err := json.Unmarshal([]byte(as[2].Detail), &d); err != nil || d.Record == nil || d.Record.Name != "east" || !d.EtcdUserRemoved || !d.Forced || len(d.Deleted) != 5 {
		t.Fatalf("leave audit detail %s (%v)", as[2].Detail, err)
	}

	// Again: nothing to do, no new audit.
	plan, err = Leave(ctx, root, LeaveRequest{Cluster: "east"})
	if err != nil || plan.AuditKey != "" || !strings.Contains(strings.Join(plan.Warnings, ""), "not a member") {
		t.Fatalf("second leave %+v %v", plan, err)
	}
	if len(audits(t, root)) != 3 {
		t.Fatal("no-op leave wrote an audit record")
	}
}

// TestLeaveWithOperatorCredentials: an operator user (join --admin-user) removes the
// keys; etcd lets only root manage users, so the plan says what is left and a later leave
// as root finishes the job.
func TestLeaveWithOperatorCredentials(t *testing.T) {
	t.Parallel()
	srv, root := etcdWithAuth(t)
	ctx := tctx(t)
	r := joinReq(t, "east", "eu", "east.example.org")
	r.CredentialsOut = credsPath(t, "east")
	r.AdminUser = "ops"
	r.AdminCredentialsOut = credsPath(t, "ops")
	plan, err := Join(ctx, root, r)
	if err != nil {
		t.Fatal(err)
	}
	if plan.Admin == nil || plan.Admin.Role != "meshfed-operator" {
		t.Fatalf("admin plan %+v", plan.Admin)
	}
	oc, err := ReadCredentials(r.AdminCredentialsOut)
	if err != nil {
		t.Fatal(err)
	}
	ops := openStore(t, srv, oc.User, oc.Password)
	// The operator writes operator keys (policy, drill) ...
	if _, err := SetPolicy(ctx, ops, PolicyRequest{Namespace: "demo", Name: "echo", Order: []string{"east"}}); err != nil {
		t.Fatalf("policy as operator: %v", err)
	}
	// ... but nothing outside the prefix.
	if _, err := ops.Client().Put(ctx, "/other/key", "x"); !store.IsPermissionDenied(err) {
		t.Fatalf("operator writing outside the prefix: %v", err)
	}
	if err := put(t, ops, ops.KS.Export("east", "demo", "echo"), testExport("east", "demo", "echo")); err != nil {
		t.Fatal(err)
	}

	plan2, err := Leave(ctx, ops, LeaveRequest{Cluster: "east"})
	if err != nil {
		t.Fatalf("leave as operator: %v", err)
	}
	if plan2.EtcdAuth.CanManage || !strings.Contains(strings.Join(plan2.Warnings, "\n"), "--etcd-user root") {
		t.Fatalf("operator leave plan %+v", plan2)
	}
	if keysUnder(t, root, "exports/east/") != 0 || keysUnder(t, root, "clusters/east") != 0 {
		t.Fatal("operator leave left keys")
	}
	if ok, _, _ := userState(ctx, root.Client(), "meshfed-cluster-east"); !ok {
		t.Fatal("operator leave removed the user (etcd should not allow it)")
	}
	// Root finishes: user and role go, a second audit record says so.
	plan3, err := Leave(ctx, root, LeaveRequest{Cluster: "east"})
	if err != nil || plan3.AuditKey == "" {
		t.Fatalf("root leave: %+v %v", plan3, err)
	}
	if ok, _, _ := userState(ctx, root.Client(), "meshfed-cluster-east"); ok {
		t.Fatal("root leave kept the user")
	}
	as := audits(t, root)
	if len(as) != 3 || as[1].Action != "leave" || as[2].Action != "leave" {
		t.Fatalf("audits %+v", as)
	}
	r2, _ := root.Client().Get(ctx, root.KS.Family(records.KindAudit), clientv3.WithPrefix(), clientv3.WithCountOnly())
	if r2.Count != 3 {
		t.Fatalf("audit count %d", r2.Count)
	}
}
