package operator

import (
	"errors"
	"strings"
	"testing"

	"github.com/meshfed/meshfed/keyspace/records"
	"github.com/meshfed/meshfed/keyspace/store"
)

func TestPolicyValidationAndCAS(t *testing.T) {
	t.Parallel()
	_, st := etcdNoAuth(t)
	ctx := tctx(t)
	for _, n := range []string{"east", "west", "north"} {
		if _, err := Join(ctx, st, joinReq(t, n, "eu", n+".example.org")); err != nil {
			t.Fatal(err)
		}
	}
	// Every problem at once: unknown cluster, duplicate, bad label.
	_, err := SetPolicy(ctx, st, PolicyRequest{Namespace: "demo", Name: "echo", Order: []string{"west", "south", "west", "Bad"}})
	var me *InvalidError
	if !errors.As(err, &me) || len(me.Problems.Errors) != 3 {
		t.Fatalf("want 3 problems, got %v", err)
	}
	for _, want := range []string{"south is not a member", "west is listed twice", "entry 4"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q: %v", want, err)
		}
	}
	if _, err := SetPolicy(ctx, st, PolicyRequest{Namespace: "demo", Name: "echo"}); err == nil || !strings.Contains(err.Error(), "nothing to set") {
		t.Fatalf("empty policy: %v", err)
	}
	if keysUnder(t, st, "policy/") != 0 {
		t.Fatal("refused policy was written")
	}

	res, err := SetPolicy(ctx, st, PolicyRequest{Namespace: "demo", Name: "echo", Order: []string{"west", "north"}, NoLocalFirst: true, Actor: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	if res.Change != "created" || res.Policy.LocalFirst || res.Policy.UpdatedBy != "alice" || strings.Join(res.Policy.Order, ",") != "west,north" {
		t.Fatalf("set result %+v", res)
	}
	if !strings.Contains(strings.Join(res.Warnings, ""), "no cluster exports demo/echo") {
		t.Errorf("warnings %v", res.Warnings)
	}
	it, err := store.Get[records.Policy](ctx, st, st.KS.Policy("demo", "echo"))
	if err != nil || it.Value.IsLocalFirst() || it.Value.UpdatedBy != "alice" {
		t.Fatalf("stored policy %+v %v", it, err)
	}
	rev := it.ModRevision
	res, err = SetPolicy(ctx, st, PolicyRequest{Namespace: "demo", Name: "echo", Order: []string{"west", "north"}, NoLocalFirst: true, Actor: "bob"})
	if err != nil || res.Change != "unchanged" || res.Policy.UpdatedBy != "alice" {
		t.Fatalf("same policy again: %+v %v", res, err)
	}
	if it, _ := store.Get[records.Policy](ctx, st, st.KS.Policy("demo", "echo")); it.ModRevision != rev {
		t.Fatal("unchanged policy was rewritten")
	}
	res, err = SetPolicy(ctx, st, PolicyRequest{Namespace: "demo", Name: "echo", Order: []string{"north"}, Actor: "bob"})
	if err != nil || res.Change != "updated" || !res.Policy.LocalFirst || res.Policy.UpdatedBy != "bob" {
		t.Fatalf("update: %+v %v", res, err)
	}
	if _, err := SetPolicy(ctx, st, PolicyRequest{Namespace: "demo", Name: "api", Order: []string{"east"}}); err != nil {
		t.Fatal(err)
	}

	got, err := GetPolicy(ctx, st, "demo", "echo")
	if err != nil || strings.Join(got.Order, ",") != "north" {
		t.Fatalf("get %+v %v", got, err)
	}
	list, err := ListPolicies(ctx, st)
	if err != nil || len(list.Policies) != 2 || list.Policies[0].Service != "demo/api" {
		t.Fatalf("list %+v %v", list, err)
	}
	var b strings.Builder
	if err := list.WriteTable(&b); err != nil || !strings.Contains(b.String(), "demo/echo") {
		t.Fatalf("table %q %v", b.String(), err)
	}
	// A member that left shows up as unknown in the policy.
	if _, err := Leave(ctx, st, LeaveRequest{Cluster: "north"}); err != nil {
		t.Fatal(err)
	}
	got, _ = GetPolicy(ctx, st, "demo", "echo")
	if len(got.Unknown) != 1 || got.Unknown[0] != "north" {
		t.Fatalf("unknown clusters %v", got.Unknown)
	}

	if err := DeletePolicy(ctx, st, "demo", "echo"); err != nil {
		t.Fatal(err)
	}
	if err := DeletePolicy(ctx, st, "demo", "echo"); !errors.Is(err, ErrNoPolicy) {
		t.Fatalf("second delete: %v", err)
	}
	if _, err := GetPolicy(ctx, st, "demo", "echo"); !errors.Is(err, ErrNoPolicy) {
		t.Fatalf("get deleted: %v", err)
	}
}

func TestParseServiceRef(t *testing.T) {
	t.Parallel()
	if ns, n, err := ParseServiceRef("x", "demo/echo"); err != nil || ns != "demo" || n != "echo" {
		t.Fatalf("%s %s %v", ns, n, err)
	}
	for _, bad := range []string{"echo", "demo/echo/x", "/echo", "Demo/echo", "demo/"} {
		if _, _, err := ParseServiceRef("NS/NAME", bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func FuzzParseServiceRef(f *testing.F) {
	for _, s := range []string{"demo/echo", "a/b", "", "/", "x/y/z", "DEMO/echo", "a-b/c-d"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ns, n, err := ParseServiceRef("ref", s)
		if err != nil {
			return
		}
		if ns+"/"+n != s {
			t.Fatalf("%q parsed as %q/%q", s, ns, n)
		}
	})
}
