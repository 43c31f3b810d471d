package operator

import (
	"encoding/json"
	"errors"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/meshfed/meshfed/api/validate"
	"github.com/meshfed/meshfed/keyspace/records"
	"github.com/meshfed/meshfed/keyspace/store"
)

func testBundle(td, owner string) *records.Bundle {
	return &records.Bundle{TrustDomain: td, Owner: owner, Sequence: 1, JWKS: json.RawMessage(`{"keys":[]}`),
		Digest: "sha256:" + strings.Repeat("0", 64), Revoked: true, UpdatedAt: time.Now().UTC()}
}

// TestJoinedClusterWritesOnlyItsOwnKeys: with etcd auth on, join creates one user and
// role per cluster; a cluster's credentials write its own keys and etcd itself denies
// writes to another cluster's keys (and to operator keys).
func TestJoinedClusterWritesOnlyItsOwnKeys(t *testing.T) {
	t.Parallel()
	srv, root := etcdWithAuth(t)
	ctx := tctx(t)
	eastCreds, westCreds := credsPath(t, "east"), credsPath(t, "west")
	re := joinReq(t, "east", "eu", "east.example.org")
	re.CredentialsOut = eastCreds
	plan, err := Join(ctx, root, re)
	if err != nil {
		t.Fatalf("join east: %v", err)
	}
	if !plan.EtcdAuth.Enabled || !plan.EtcdAuth.Manage || plan.EtcdAuth.User != "meshfed-cluster-east" || plan.EtcdAuth.Password != "new" {
		t.Fatalf("auth plan = %+v", plan.EtcdAuth)
	}
	rw := joinReq(t, "west", "us", "west.example.org")
	rw.CredentialsOut = westCreds
	if _, err := Join(ctx, root, rw); err != nil {
		t.Fatalf("join west: %v", err)
	}
	fi, err := os.Stat(eastCreds)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("credentials file: %v mode %v, want 0600", err, fi.Mode())
	}
	ec, err := ReadCredentials(eastCreds)
	if err != nil || ec.User != "meshfed-cluster-east" {
		t.Fatalf("credentials %+v %v", ec, err)
	}
	east := openStore(t, srv, ec.User, ec.Password)
	ks := east.KS

	// Its own keys: allowed.
	own := map[string]records.Record{
		ks.Export("east", "demo", "echo"):         testExport("east", "demo", "echo"),
		ks.Ack("east", "west.example.org"):        &records.Ack{Cluster: "east", TrustDomain: "west.example.org", Sequence: 1, AppliedAt: time.Now()},
		ks.Bundle("east.example.org"):             testBundle("east.example.org", "east"),
		ks.Alive("east"):                          &records.Alive{Cluster: "east", Instance: "test", TTL: 10, Since: time.Now()},
		ks.Cluster("east"):                        plan.Cluster,
		ks.Export("east", "other", "svc"):         testExport("east", "other", "svc"),
		ks.Ack("east", "east.example.org"):        &records.Ack{Cluster: "east", TrustDomain: "east.example.org", Sequence: 1, AppliedAt: time.Now()},
		ks.Export("east", "demo", "echo-backend"): testExport("east", "demo", "echo-backend"),
	}
	for key, rec := range own {
		if err := put(t, east, key, rec); err != nil {
			t.Errorf("east writing its own %s: %v", key, err)
		}
	}
	// Everyone else's keys: denied by etcd.
	foreign := map[string]records.Record{
		ks.Export("west", "demo", "echo"):  testExport("west", "demo", "echo"),
		ks.Cluster("west"):                 &records.Cluster{Name: "west", Network: "n", Region: "r", Zone: "z", TrustDomain: "evil.example.org", Gateways: []string{"1.2.3.4:1"}, JoinedAt: time.Now()},
		ks.Alive("west"):                   &records.Alive{Cluster: "west", Instance: "x", TTL: 10},
		ks.Bundle("west.example.org"):      testBundle("west.example.org", "east"),
		ks.Ack("west", "east.example.org"): &records.Ack{Cluster: "west", TrustDomain: "east.example.org", Sequence: 9, AppliedAt: time.Now()},
		ks.Policy("demo", "echo"):          &records.Policy{Namespace: "demo", Name: "echo", Order: []string{"east"}},
		ks.Drill("evil"):                   &records.Drill{ID: "evil", Cluster: "west", Until: time.Now().Add(time.Hour), StartedBy: "east"},
		ks.Cluster("mallory"):              &records.Cluster{Name: "mallory", Network: "n", Region: "r", Zone: "z", TrustDomain: "m.example.org", Gateways: []string{"1.2.3.4:1"}, JoinedAt: time.Now()},
	}
	for key, rec := range foreign {
		err := put(t, east, key, rec)
		if !store.IsPermissionDenied(err) {
			t.Errorf("east writing %s: err = %v, want etcd permission denied", key, err)
		}
	}
	// Deleting another cluster's exports is denied too.
	if _, err := east.Client().Delete(ctx, ks.ExportsOf("west"), clientv3.WithPrefix()); !store.IsPermissionDenied(err) {
		t.Errorf("east deleting west's exports: %v, want permission denied", err)
	}
	// Reading the whole keyspace is allowed (imports need it).
	snap, err := ReadSnapshot(ctx, east)
	if err != nil {
		t.Fatalf("east reading the keyspace: %v", err)
	}
	if snap.Clusters["west"] == nil || len(snap.Exports["east"]) != 3 {
		t.Fatalf("east's read: clusters %v, east exports %d", snap.ClusterNames(), len(snap.Exports["east"]))
	}
	// Operator-only work fails with a cluster's credentials, with a message naming the fix.
	// Named as the commands name the fields it refers to, it reads as it did when it named
	// the flags (before e699fcf), and etcd's error is still its cause.
	_, err = SetPolicy(ctx, east, PolicyRequest{Namespace: "demo", Name: "echo", Order: []string{"west"}})
	var fe *validate.FieldError
	flags := map[string]string{FieldEtcdUser: "--etcd-user", FieldJoinAdminUser: "--admin-user"}
	if !errors.As(err, &fe) || !store.IsPermissionDenied(fe.Err) ||
		!strings.HasSuffix(fe.Rename(func(f string) string { return flags[f] }).Error(), " (policies are written with operator credentials: --etcd-user root or an operator user made by `meshfed join --admin-user`)") {
		t.Errorf("policy set as east: %v", err)
	}
	// A cluster cannot create users (join as a cluster fails before changing anything).
	r3 := joinReq(t, "north", "eu", "north.example.org")
	r3.CredentialsOut = credsPath(t, "north")
	var ie *InvalidError
	if _, err := Join(ctx, east, r3); !errors.As(err, &ie) || !strings.Contains(ie.Rename(func(f string) string { return flags[f] }).Error(),
		"--etcd-user: creating the cluster's etcd user and role needs etcd's root role (etcd allows user and role management to root only): run join with --etcd-user root") {
		t.Errorf("join as east: %v, want a message asking for root", err)
	}
	if keysUnder(t, root, "clusters/north") != 0 {
		t.Error("a refused join wrote clusters/north")
	}
}

// TestJoinIdempotentConflictForce: the same join twice changes nothing (and still
// audits); a different cluster under the same name is refused without --force; --force
// overwrites and its audit record keeps the previous value.
func TestJoinIdempotentConflictForce(t *testing.T) {
	t.Parallel()
	_, root := etcdWithAuth(t)
	ctx := tctx(t)
	r := joinReq(t, "east", "eu", "east.example.org")
	r.CredentialsOut = credsPath(t, "east")
	first, err := Join(ctx, root, r)
	if err != nil {
		t.Fatal(err)
	}
	if first.Action != ActionCreate {
		t.Fatalf("first join action %s", first.Action)
	}
	rev1 := mustGet(t, root, root.KS.Cluster("east")).ModRevision

	r2 := r
	r2.CredentialsOut = "" // user exists: no new password needed
	again, err := Join(ctx, root, r2)
	if err != nil {
		t.Fatalf("repeat join: %v", err)
	}
	if again.Action != ActionUnchanged || again.EtcdAuth.Password != "unchanged" {
		t.Fatalf("repeat join: action %s password %s", again.Action, again.EtcdAuth.Password)
	}
	if rev := mustGet(t, root, root.KS.Cluster("east")).ModRevision; rev != rev1 {
		t.Fatalf("repeat join rewrote the record (rev %d -> %d)", rev1, rev)
	}

	conflict := r2
	conflict.Region = "us"
	conflict.Zone = "us-a"
	_, err = Join(ctx, root, conflict)
	if err == nil || !strings.Contains(err.Error(), "add Force to overwrite") || !strings.Contains(err.Error(), "Cluster: ") {
		t.Fatalf("conflicting join: %v, want a refusal naming Cluster and Force (cmd/meshfed: --cluster and --force)", err)
	}
	if got := mustGet(t, root, root.KS.Cluster("east")).Value.Region; got != "eu" {
		t.Fatalf("refused join changed region to %s", got)
	}

	conflict.Force = true
	forced, err := Join(ctx, root, conflict)
	if err != nil {
		t.Fatalf("forced join: %v", err)
	}
	if forced.Action != ActionOverwrite {
		t.Fatalf("forced action %s", forced.Action)
	}
	if got := mustGet(t, root, root.KS.Cluster("east")).Value.Region; got != "us" {
		t.Fatalf("forced join: region %s", got)
	}
	as := audits(t, root)
	if len(as) != 3 {
		t.Fatalf("%d audit records, want 3 (join, join, join-force)", len(as))
	}
	last := as[2]
	if last.Action != "join-force" || last.Cluster != "east" || last.Actor != "test" {
		t.Fatalf("forced join audit = %+v", last)
	}
	var d JoinAudit
	if err := json.Unmarshal([]byte(last.Detail), &d); err != nil || d.Previous == nil || d.Previous.Region != "eu" || !d.Forced {
		t.Fatalf("forced join audit detail %s (%v)", last.Detail, err)
	}
}

func mustGet(t *testing.T, st *store.Store, key string) *store.Item[records.Cluster] {
	t.Helper()
	it, err := store.Get[records.Cluster](tctx(t), st, key)
	if err != nil {
		t.Fatal(err)
	}
	return it
}

// TestJoinCollectsEveryProblem: bad flags are all reported at once; so are conflicts with
// other members (trust domain, gateway), and nothing is written.
func TestJoinCollectsEveryProblem(t *testing.T) {
	t.Parallel()
	_, st := etcdNoAuth(t)
	ctx := tctx(t)
	_, err := Join(ctx, st, JoinRequest{Cluster: "East", Region: "", Zone: "z", Network: "n", TrustDomain: "spiffe://x", Gateways: []string{"nope", "nope"}, Users: "sometimes"})
	var me *InvalidError
	if !errors.As(err, &me) {
		t.Fatalf("err %T %v, want *InvalidError", err, err)
	}
	msg := err.Error()
	for _, want := range []string{"Cluster: ", "Region: ", "TrustDomain: ", "Gateways: ", "given twice", "Users: "} {
		if !strings.Contains(msg, want) {
			t.Errorf("error does not mention %q:\n%s", want, msg)
		}
	}
	if len(me.Problems.Errors) < 6 {
		t.Errorf("%d problems, want every one:\n%s", len(me.Problems.Errors), msg)
	}

	gw := closedAddr(t)
	if _, err := Join(ctx, st, joinReq(t, "west", "us", "shared.example.org", gw)); err != nil {
		t.Fatal(err)
	}
	_, err = Join(ctx, st, joinReq(t, "east", "eu", "shared.example.org", gw))
	if !errors.As(err, &me) || len(me.Problems.Errors) != 2 {
		t.Fatalf("want 2 problems (trust domain, gateway), got %v", err)
	}
	if !strings.Contains(err.Error(), "trust domain of cluster west") || !strings.Contains(err.Error(), "gateway of cluster west") {
		t.Fatalf("problems: %v", err)
	}
	if keysUnder(t, st, "clusters/east") != 0 {
		t.Fatal("refused join wrote clusters/east")
	}
	// Bad flags and conflicts with other members come in the same report.
	bad := joinReq(t, "east", "eu", "shared.example.org")
	bad.Region = "EU"
	_, err = Join(ctx, st, bad)
	if !errors.As(err, &me) || len(me.Problems.Errors) != 2 || !strings.Contains(err.Error(), "Region: ") || !strings.Contains(err.Error(), "trust domain of cluster west") {
		t.Fatalf("bad flag plus conflict: %v", err)
	}
	// A bundle owned by another cluster claims its trust domain too.
	if err := put(t, st, st.KS.Bundle("taken.example.org"), testBundle("taken.example.org", "west")); err != nil {
		t.Fatal(err)
	}
	_, err = Join(ctx, st, joinReq(t, "east", "eu", "taken.example.org"))
	if err == nil || !strings.Contains(err.Error(), "owned by cluster west") {
		t.Fatalf("join with a trust domain whose bundle west owns: %v", err)
	}
}

// TestJoinDryRunWritesNothing: the plan lists keys, role and permissions; etcd keeps no
// key, user or role, and no credentials file appears.
func TestJoinDryRunWritesNothing(t *testing.T) {
	t.Parallel()
	_, root := etcdWithAuth(t)
	ctx := tctx(t)
	r := joinReq(t, "east", "eu", "east.example.org")
	r.CredentialsOut = credsPath(t, "east")
	r.AdminUser = "ops"
	r.AdminCredentialsOut = credsPath(t, "ops")
	r.DryRun = true
	before, _ := root.Client().Get(ctx, "\x00", clientv3.WithFromKey(), clientv3.WithCountOnly())
	plan, err := Join(ctx, root, r)
	if err != nil {
		t.Fatalf("dry run: %v", err)
	}
	if !plan.DryRun || plan.Action != ActionCreate || len(plan.EtcdAuth.Permissions) != 6 || plan.Admin == nil || len(plan.Done) != 0 {
		t.Fatalf("plan = %+v", plan)
	}
	var perms []string
	for _, p := range plan.EtcdAuth.Permissions {
		perms = append(perms, p.String())
	}
	joined := strings.Join(perms, "; ")
	for _, want := range []string{"read /meshfed/v1/*", "readwrite /meshfed/v1/exports/east/*", "readwrite /meshfed/v1/bundles/east.example.org", "readwrite /meshfed/v1/acks/east/*", "readwrite /meshfed/v1/alive/east", "readwrite /meshfed/v1/clusters/east"} {
		if !strings.Contains(joined, want) {
			t.Errorf("plan permissions %q lack %q", joined, want)
		}
	}
	after, _ := root.Client().Get(ctx, "\x00", clientv3.WithFromKey(), clientv3.WithCountOnly())
	if before.Count != after.Count || after.Header.Revision != before.Header.Revision {
		t.Fatalf("dry run changed etcd: %d keys rev %d -> %d keys rev %d", before.Count, before.Header.Revision, after.Count, after.Header.Revision)
	}
	users, err := root.Client().UserList(ctx)
	if err != nil || len(users.Users) != 1 {
		t.Fatalf("users after dry run: %v %v (want only root)", users, err)
	}
	roles, _ := root.Client().RoleList(ctx)
	if len(roles.Roles) != 1 {
		t.Fatalf("roles after dry run: %v", roles.Roles)
	}
	for _, f := range []string{r.CredentialsOut, r.AdminCredentialsOut} {
		if _, err := os.Stat(f); !os.IsNotExist(err) {
			t.Fatalf("dry run wrote %s", f)
		}
	}
	var b strings.Builder
	_ = plan.WriteTable(&b)
	if !strings.Contains(b.String(), "DRY RUN") || !strings.Contains(b.String(), "meshfed-cluster-east") {
		t.Fatalf("dry-run table:\n%s", b.String())
	}
}

// TestJoinWarnsAndRequires: an unreachable gateway is a warning; with auth on a new user
// needs --credentials-out; with auth off join says so.
func TestJoinWarnsAndRequires(t *testing.T) {
	t.Parallel()
	_, root := etcdWithAuth(t)
	ctx := tctx(t)
	r := joinReq(t, "east", "eu", "east.example.org")
	_, err := Join(ctx, root, r)
	if err == nil || !strings.Contains(err.Error(), "CredentialsOut: required") {
		t.Fatalf("join without --credentials-out: %v", err)
	}
	r.CredentialsOut = credsPath(t, "east")
	plan, err := Join(ctx, root, r)
	if err != nil {
		t.Fatal(err)
	}
	if len(plan.Gateways) != 1 || plan.Gateways[0].OK || plan.Gateways[0].Result != "refused" {
		t.Fatalf("gateway check %+v", plan.Gateways)
	}
	if !strings.Contains(strings.Join(plan.Warnings, "\n"), "does not answer its health check") {
		t.Fatalf("warnings %v", plan.Warnings)
	}
	// --rotate-password issues a new password that works; the old one stops working.
	old, _ := ReadCredentials(r.CredentialsOut)
	r.RotatePassword = true
	r.CredentialsOut = credsPath(t, "east2")
	if _, err := Join(ctx, root, r); err != nil {
		t.Fatal(err)
	}
	nw, _ := ReadCredentials(r.CredentialsOut)
	if nw.Password == old.Password {
		t.Fatal("rotated password is the old one")
	}

	_, noauth := etcdNoAuth(t)
	plan, err = Join(ctx, noauth, joinReq(t, "east", "eu", "east.example.org"))
	if err != nil {
		t.Fatal(err)
	}
	if plan.EtcdAuth.Enabled || plan.EtcdAuth.Manage || !strings.Contains(strings.Join(plan.Warnings, "\n"), "etcd auth is off") {
		t.Fatalf("no-auth plan %+v warnings %v", plan.EtcdAuth, plan.Warnings)
	}
}

// TestJoinForcedTrustDomainChangeMovesBundlePermission: the role follows the record.
func TestJoinForcedTrustDomainChangeMovesBundlePermission(t *testing.T) {
	t.Parallel()
	srv, root := etcdWithAuth(t)
	ctx := tctx(t)
	r := joinReq(t, "east", "eu", "old.example.org")
	r.CredentialsOut = credsPath(t, "east")
	if _, err := Join(ctx, root, r); err != nil {
		t.Fatal(err)
	}
	c, _ := ReadCredentials(r.CredentialsOut)
	r.TrustDomain, r.Force, r.CredentialsOut = "new.example.org", true, ""
	plan, err := Join(ctx, root, r)
	if err != nil {
		t.Fatal(err)
	}
	if len(plan.EtcdAuth.Revoke) != 1 || !strings.HasSuffix(plan.EtcdAuth.Revoke[0], "bundles/old.example.org") {
		t.Fatalf("revoke %v", plan.EtcdAuth.Revoke)
	}
	east := openStore(t, srv, c.User, c.Password)
	if err := put(t, east, east.KS.Bundle("old.example.org"), testBundle("old.example.org", "east")); !store.IsPermissionDenied(err) {
		t.Fatalf("old bundle write: %v", err)
	}
	if err := put(t, east, east.KS.Bundle("new.example.org"), testBundle("new.example.org", "east")); err != nil {
		t.Fatalf("new bundle write: %v", err)
	}
}

// TestJoinHBONEGateways: --hbone-gateway lands in the cluster record, is part of what makes
// a repeated join idempotent, and is checked like --gateway (format, one port, another
// cluster's address).
func TestJoinHBONEGateways(t *testing.T) {
	t.Parallel()
	_, st := etcdNoAuth(t)
	ctx := tctx(t)
	r := joinReq(t, "west", "us", "west.example.org")
	r.HBONEGateways = []string{"192.0.2.10:15008", "gw.west.example.org:15008"}
	if _, err := Join(ctx, st, r); err != nil {
		t.Fatal(err)
	}
	if got := mustGet(t, st, st.KS.Cluster("west")).Value; !slices.Equal(got.HBONEGateways, r.HBONEGateways) {
		t.Fatalf("record hboneGateways %v", got.HBONEGateways)
	}
	if p, err := Join(ctx, st, r); err != nil || p.Action != ActionUnchanged {
		t.Fatalf("repeat join: %v %v", p, err)
	}
	changed := r
	changed.HBONEGateways = []string{"192.0.2.10:15008"}
	if _, err := Join(ctx, st, changed); err == nil || !strings.Contains(err.Error(), "hbone-gateways=192.0.2.10:15008,gw.west.example.org:15008") {
		t.Fatalf("changed HBONE gateways without --force: %v", err)
	}
	bad := joinReq(t, "east", "eu", "east.example.org")
	bad.HBONEGateways = []string{"192.0.2.10:15008", "192.0.2.20:15009", "nope"}
	_, err := Join(ctx, st, bad)
	for _, want := range []string{"HBONEGateways[1]: port 15009 differs", "HBONEGateways[2]: ", "192.0.2.10:15008 is an HBONE gateway of cluster west"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("bad HBONE gateways: %v, want %q", err, want)
		}
	}
}

// TestJoinSharedTrustDomain: a second cluster may have a trust domain only by naming its
// owner (--share-trust-domain-with); the sharer's etcd role cannot write the bundle (etcd
// refuses), the owner's can; a chain, a non-member or another trust domain are refused; the
// owner cannot leave or change its trust domain while a sharer remains; status shows it.
func TestJoinSharedTrustDomain(t *testing.T) {
	t.Parallel()
	srv, root := etcdWithAuth(t)
	ctx := tctx(t)
	const td = "mesh.example.org"
	re := joinReq(t, "east", "eu", td)
	re.CredentialsOut = credsPath(t, "east")
	if _, err := Join(ctx, root, re); err != nil {
		t.Fatalf("join east: %v", err)
	}

	// Without the flag: refused, and the refusal teaches the flag.
	rw := joinReq(t, "west", "us", td)
	rw.CredentialsOut = credsPath(t, "west")
	if _, err := Join(ctx, root, rw); err == nil || !strings.Contains(err.Error(), "ShareTrustDomainWith east (the clusters then trust each other's workloads fully)") {
		t.Fatalf("second cluster of %s without the flag: %v", td, err)
	}
	if keysUnder(t, root, "clusters/west") != 0 {
		t.Fatal("a refused join wrote clusters/west")
	}
	rw.ShareTrustDomainWith = "east"
	plan, err := Join(ctx, root, rw)
	if err != nil {
		t.Fatalf("join west sharing east's trust domain: %v", err)
	}
	if !slices.ContainsFunc(plan.Warnings, func(w string) bool { return strings.Contains(w, "is trusted by the other as its own") }) {
		t.Errorf("no warning about full trust: %v", plan.Warnings)
	}
	for _, p := range plan.EtcdAuth.Permissions {
		if strings.Contains(p.Key, "bundles/") {
			t.Errorf("sharer's role has %s", p)
		}
	}
	if got := mustGet(t, root, root.KS.Cluster("west")).Value; got.SharesTrustDomainWith != "east" || got.TrustDomain != td {
		t.Fatalf("record %+v", got)
	}
	if p, err := Join(ctx, root, rw); err != nil || p.Action != ActionUnchanged {
		t.Fatalf("repeat sharer join: %+v %v", p, err)
	}
	if p, err := Join(ctx, root, joinReqAs(re, "")); err != nil || p.Action != ActionUnchanged {
		t.Fatalf("repeat owner join (its sharer has the same trust domain): %+v %v", p, err)
	}

	// etcd enforces it: the owner writes the bundle, the sharer cannot.
	ec, _ := ReadCredentials(re.CredentialsOut)
	wc, _ := ReadCredentials(rw.CredentialsOut)
	east, west := openStore(t, srv, ec.User, ec.Password), openStore(t, srv, wc.User, wc.Password)
	if err := put(t, west, west.KS.Bundle(td), testBundle(td, "west")); !store.IsPermissionDenied(err) {
		t.Errorf("sharer writing %s: %v, want permission denied", west.KS.Bundle(td), err)
	}
	if err := put(t, east, east.KS.Bundle(td), testBundle(td, "east")); err != nil {
		t.Errorf("owner writing its bundle: %v", err)
	}
	if err := put(t, west, west.KS.Ack("west", td), &records.Ack{Cluster: "west", TrustDomain: td, Sequence: 1, AppliedAt: time.Now()}); err != nil {
		t.Errorf("sharer acking the shared bundle: %v", err)
	}

	// Wrong shares, every problem at once per request.
	for _, tt := range []struct {
		td, with, want string
	}{
		{td, "west", "west shares the trust domain of east itself: name the owner, ShareTrustDomainWith east"},
		{td, "nobody", "nobody is not a member"},
		{"other.example.org", "east", "east has the trust domain mesh.example.org, not other.example.org"},
		{td, "north", "north is this cluster"},
	} {
		r := joinReq(t, "north", "eu", tt.td)
		r.ShareTrustDomainWith, r.Users = tt.with, UsersNever
		if _, err := Join(ctx, root, r); err == nil || !strings.Contains(err.Error(), "ShareTrustDomainWith: "+tt.want) {
			t.Errorf("share %s with %s: %v, want %q", tt.td, tt.with, err, tt.want)
		}
	}
	// The owner keeps its trust domain while shared, even with --force.
	moved := joinReqAs(re, "")
	moved.TrustDomain, moved.Force = "east.example.org", true
	if _, err := Join(ctx, root, moved); err == nil || !strings.Contains(err.Error(), "cluster west shares the trust domain mesh.example.org that east owns") {
		t.Errorf("owner changing its trust domain: %v", err)
	}

	// status and trust status show the sharing.
	s, err := GetStatus(ctx, root, StatusOptions{NoProbe: true})
	if err != nil {
		t.Fatal(err)
	}
	var tab strings.Builder
	if err := s.WriteTable(&tab); err != nil {
		t.Fatal(err)
	}
	for _, c := range s.Clusters {
		switch c.Name {
		case "east":
			if !slices.Equal(c.TrustDomainSharedBy, []string{"west"}) || c.SharesTrustDomainWith != "" {
				t.Errorf("east status %+v", c)
			}
		case "west":
			if c.SharesTrustDomainWith != "east" || c.Bundle == nil || c.Bundle.Owner != "east" {
				t.Errorf("west status %+v", c)
			}
		}
	}
	if !strings.Contains(tab.String(), " (shared with west)") || !strings.Contains(tab.String(), " (shared, owner east)") {
		t.Errorf("status table:\n%s", tab.String())
	}
	if len(s.Warnings) > 0 {
		t.Errorf("status warnings: %v", s.Warnings)
	}
	ts, err := ReadTrustStatus(ctx, root, time.Now(), time.Hour)
	if err != nil || len(ts.Bundles) != 1 || !slices.Equal(ts.Bundles[0].SharedBy, []string{"west"}) {
		t.Errorf("trust status %+v %v", ts, err)
	}

	// The owner cannot leave while shared, not even with --force; the sharer can, and its
	// leave keeps the owner's bundle; then the owner can.
	for _, force := range []bool{false, true} {
		if _, err := Leave(ctx, root, LeaveRequest{Cluster: "east", Force: force}); err == nil || !strings.Contains(err.Error(), "east owns the trust domain mesh.example.org, which west share with it") {
			t.Errorf("owner leave (force %v): %v", force, err)
		}
	}
	if keysUnder(t, root, "clusters/east") != 1 {
		t.Fatal("a refused leave removed clusters/east")
	}
	if _, err := Leave(ctx, root, LeaveRequest{Cluster: "west"}); err != nil {
		t.Fatalf("sharer leave: %v", err)
	}
	if keysUnder(t, root, "bundles/") != 1 || keysUnder(t, root, "clusters/west") != 0 {
		t.Fatal("sharer leave: the owner's bundle must stay, the sharer's record go")
	}
	if _, err := Leave(ctx, root, LeaveRequest{Cluster: "east"}); err != nil {
		t.Fatalf("owner leave after its sharer: %v", err)
	}
}

// joinReqAs is r without credentials output (a repeated join of an existing user).
func joinReqAs(r JoinRequest, creds string) JoinRequest {
	r.CredentialsOut = creds
	return r
}
