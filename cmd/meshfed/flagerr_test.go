package main

import (
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-multierror"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"

	"github.com/meshfed/meshfed/api/validate"
	"github.com/meshfed/meshfed/federation/health"
	"github.com/meshfed/meshfed/federation/istio"
	"github.com/meshfed/meshfed/federation/xds"
	"github.com/meshfed/meshfed/internal/testetcd"
	"github.com/meshfed/meshfed/internal/testpki"
	"github.com/meshfed/meshfed/keyspace/view"
	"github.com/meshfed/meshfed/operator"
	"github.com/meshfed/meshfed/trust"
	"github.com/meshfed/meshfed/trust/devca"
	"github.com/meshfed/meshfed/trust/rotation"
)

func TestFlagErr(t *testing.T) {
	var errs validate.Errors
	errs.Add("endpoints", "no endpoint")
	errs.Add("other", "left as it is")
	got := flagErr(errs.Err(), map[string]string{"endpoints": "--etcd-endpoints"})
	if s := got.Error(); !strings.Contains(s, "--etcd-endpoints: no endpoint") || !strings.Contains(s, "other: left as it is") {
		t.Fatalf("joined: %v", got)
	}
	plain := errors.New("plain")
	if flagErr(plain, map[string]string{"plain": "--x"}) != plain || flagErr(nil, nil) != nil {
		t.Fatal("an error without a field must pass unchanged")
	}
}

// TestEtcdErrorsNameFlags: keyspace/store describes the bad field; the commands name the
// flag (moved here from keyspace/store's TLS test, which now checks the field).
func TestEtcdErrorsNameFlags(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "nope.pem")
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"status", "--etcd-endpoints", "no-port"}, "--etcd-endpoints:"},
		{[]string{"status", "--etcd-endpoints", "127.0.0.1:2379", "--etcd-cacert", missing}, "--etcd-cacert:"},
		{[]string{"status", "--etcd-endpoints", "127.0.0.1:2379", "--etcd-cert", missing}, "--etcd-cert/--etcd-key:"},
		{[]string{"status", "--etcd-endpoints", "127.0.0.1:2379", "--etcd-user", "u"}, "--etcd-user/--etcd-password:"},
		{[]string{"status", "--etcd-endpoints", "127.0.0.1:2379", "--prefix", "no-slash"}, "--prefix:"},
	} {
		_, err := runCLI(t, c.args...)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: want an error naming %s, got %v", c.args, c.want, err)
		}
	}
}

// TestTrustErrorsNameFlags: trust/source and trust/federate describe the bad field; the
// federation command names the flag.
func TestTrustErrorsNameFlags(t *testing.T) {
	for _, c := range []struct {
		f    trustFlags
		want string
	}{
		{trustFlags{trustDomain: "east.example", bundleSource: "file:", poll: time.Second}, `--bundle-source: "file:": give file:PATH`},
		{trustFlags{trustDomain: "east.example", bundleSource: "nope", poll: time.Second}, "--bundle-source: "},
		{trustFlags{trustDomain: "east.example", bundleSource: "dev", poll: time.Second}, "--dev-ca-dir: "},
		{trustFlags{trustDomain: "east.example", bundleDir: t.TempDir(), configMap: "no-slash", poll: time.Second}, `--bundle-configmap: "no-slash": give NAMESPACE/NAME`},
	} {
		_, err := c.f.build("east", nil, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: want an error with %q, got %v", c.f, c.want, err)
		}
	}
}

// TestFlagErrProblems: an operator.InvalidError gets flags for its fields and for the
// fields its messages refer to, wrapped or not; a wrapped field error too.
func TestFlagErrProblems(t *testing.T) {
	flags := map[string]string{"Force": "--force", "Cluster": "--cluster", "From": "--from", "Target": "--target"}
	ie := &operator.InvalidError{What: "join east", Problems: multierror.Append(nil,
		operator.Problem{Field: "Cluster", Msg: "taken: add " + operator.Ref("Force")},
		operator.Problem{Field: "From/Target", Msg: "give both"},
		operator.Problem{Field: "Other", Msg: "left " + operator.Ref("Unknown")},
	)}
	want := "join east: 3 problems:\n  - --cluster: taken: add --force\n  - --from/--target: give both\n  - Other: left Unknown"
	if got := flagErr(ie, flags).Error(); got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	if got := ie.Error(); !strings.Contains(got, "Cluster: taken: add Force") {
		t.Errorf("unmapped: %q", got)
	}
	wrapped := fmt.Errorf("outer: %w", ie)
	got := flagErr(wrapped, flags)
	if !strings.HasPrefix(got.Error(), "outer: join east: 3 problems:") || !strings.Contains(got.Error(), "--cluster: taken: add --force") || !errors.Is(got, wrapped) {
		t.Errorf("wrapped: %v", got)
	}
	fe := fmt.Errorf("join east: %w", &validate.FieldError{Field: "From", Msg: "bad"})
	if got := flagErr(fe, flags); got.Error() != "join east: --from: bad" || !errors.Is(got, fe) {
		t.Errorf("wrapped field error: %v", got)
	}
}

// TestOperatorFlagOfFields: every field a mapping knows is a field of its request (or, for
// trust rotate, an entry point: Resume, Abort), and every flag is the command's
// (commonFlagOf names the etcd user and the like).
func TestOperatorFlagOfFields(t *testing.T) {
	for _, c := range []struct {
		req   any
		cmd   *cobra.Command
		flags map[string]string
	}{
		{operator.JoinRequest{}, newJoinCmd(), joinFlagOf},
		{operator.LeaveRequest{}, newLeaveCmd(), leaveFlagOf},
		{operator.PolicyRequest{}, newPolicySetCmd(), policyFlagOf},
		{rotation.Config{}, newRotateCmd(), rotateFlagOf},
	} {
		rt := reflect.TypeOf(c.req)
		for field, flag := range c.flags {
			if _, ok := rt.FieldByName(field); !ok && !(rt.Name() == "Config" && (field == "Resume" || field == "Abort")) {
				t.Errorf("%s has no field %s", rt.Name(), field)
			}
			if c.cmd.Flags().Lookup(strings.TrimPrefix(flag, "--")) == nil {
				t.Errorf("meshfed %s has no flag %s", c.cmd.Name(), flag)
			}
		}
	}
}

// TestOperatorErrorsNameFlags: operator describes the bad JoinRequest (LeaveRequest,
// PolicyRequest, StatusOptions, IstioConfigOptions) field; the commands name the flag, in
// the problem's prefix and in the fix it suggests (moved here from operator's tests, which
// now check the field).
func TestOperatorErrorsNameFlags(t *testing.T) {
	srv := testetcd.Start(t)
	ep := "--etcd-endpoints=" + srv.Clients[0]
	join := func(name, region string, extra ...string) []string {
		return append([]string{"join", ep, "--cluster", name, "--region", region, "--zone", region + "-a",
			"--network", "net-" + name, "--trust-domain", name + ".example.org", "--gateway", freeAddr(t), "--probe-timeout", "200ms"}, extra...)
	}
	if _, err := runCLI(t, join("east", "eu")...); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		args []string
		want []string
	}{
		{[]string{"join", ep, "--cluster", "East", "--zone", "z", "--network", "n", "--trust-domain", "spiffe://x", "--gateway", "nope,nope", "--etcd-users", "sometimes"},
			[]string{"--cluster: ", "--region: ", "--trust-domain: ", "--gateway: ", "given twice", "--etcd-users: "}},
		{join("east", "us"), []string{`--cluster: "east" is already a member`, "add --force to overwrite"}},
		{join("west", "eu", "--rotate-password", "--cert-auth"), []string{"--rotate-password: a client-certificate user has no password: leave out --rotate-password or --cert-auth"}},
		{join("west", "eu", "--hbone-gateway", "127.0.0.1:15008,127.0.0.1:15009"), []string{"--hbone-gateway: --hbone-gateway[1]: port 15009 differs"}},
		{join("west", "eu", "--share-trust-domain-with", "nobody"), []string{"--share-trust-domain-with: nobody is not a member", "without this flag"}},
		{join("west", "eu", "--emit-manifests", t.TempDir(), "--deploy-dir", t.TempDir()), []string{"--emit-manifests: ", "give --deploy-dir pointing at", "leave out --emit-manifests"}},
		{[]string{"leave", ep, "--cluster", "East"}, []string{"--cluster: "}},
		{[]string{"policy", "set", ep, "demo/echo"}, []string{"--order: nothing to set", "and/or --no-local-first"}},
		{[]string{"policy", "set", ep, "demo/echo", "--order", "west"}, []string{"--order: west is not a member"}},
		{[]string{"status", ep, "--from", "nowhere"}, []string{"--from nowhere: not a member"}},
		{[]string{"istio", "config", ep, "--cluster", "east", "--mcp-address", "127.0.0.1:15011", "--bundle-dir", filepath.Join(t.TempDir(), "none")}, []string{"(the directory `meshfed federation --bundle-dir` writes)"}},
	} {
		_, err := runCLI(t, c.args...)
		for _, w := range c.want {
			if err == nil || !strings.Contains(err.Error(), w) {
				t.Errorf("%v: want an error with %q, got %v", c.args[:2], w, err)
			}
		}
	}
}

// TestRotateErrorsNameFlags: trust/rotation describes the bad Config field (the new root,
// its key, the dev CA directory); trust rotate names the flag.
func TestRotateErrorsNameFlags(t *testing.T) {
	e := testetcd.Start(t)
	dir := t.TempDir()
	base := rotateOtherKey(t, "--etcd-endpoints="+e.Clients[0], dir)
	for _, c := range []struct {
		args []string
		want string
	}{
		{append(base, "--dev-ca-dir", ""), "--new-ca-key is for the dev CA: give --dev-ca-dir too"},
		{append(base, "--dev-ca-dir", dir), "--new-ca-key is not the key of --new-ca: give the key"},
	} {
		_, err := runCLI(t, c.args...)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: want an error with %q, got %v", c.args[len(c.args)-2:], c.want, err)
		}
	}
}

// rotateOtherKey is `meshfed trust rotate` of a.example (etcd at ep) to a new root (a file
// in dir) with --new-ca-key a key that is not the root's.
func rotateOtherKey(t *testing.T, ep, dir string) []string {
	t.Helper()
	nc, _, err := devca.NewRoot("a.example", 90*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	_, otherKey, err := devca.NewRoot("a.example", 90*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	certPath, keyPath := filepath.Join(dir, "new.pem"), filepath.Join(dir, "other-key.pem")
	testpki.Write(t, certPath, trust.CertsPEM([]*x509.Certificate{nc}))
	if err := devca.WriteKey(keyPath, otherKey); err != nil {
		t.Fatal(err)
	}
	return []string{"trust", "rotate", ep, "--trust-domain", "a.example", "--new-ca", certPath, "--new-ca-key", keyPath}
}

// TestListenErrorsNameFlags: federation/xds and federation/istio name the listener that
// could not bind; meshfed federation and meshfed istio source name the flag.
func TestListenErrorsNameFlags(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	addr := busy.Addr().String()
	hc, err := health.New(health.Options{}, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatal(err)
	}
	xs, err := xds.New("east", make(chan *view.View), hc, slog.New(slog.DiscardHandler), prometheus.NewRegistry(), xds.Options{Listen: addr})
	if err != nil {
		t.Fatal(err)
	}
	if got := flagErr(fmt.Errorf("xds: %w", xs.Listen()), federationListenFlagOf); got == nil || !strings.Contains(got.Error(), "xds: xds listen "+addr+" (--xds-listen): ") {
		t.Errorf("xds: %v", got)
	}
	is, err := istio.NewServer(slog.New(slog.DiscardHandler), prometheus.NewRegistry(), istio.Options{Listen: addr})
	if err != nil {
		t.Fatal(err)
	}
	if got := flagErr(is.Listen(), federationListenFlagOf); got == nil || !strings.HasPrefix(got.Error(), "istio mcp listen "+addr+" (--istio-mcp-listen): ") {
		t.Errorf("istio: %v", got)
	}
	if _, err := runCLI(t, "istio", "source", "--listen", addr, "--upstream", "127.0.0.1:1", "--admin", "127.0.0.1:0", "--state-file", filepath.Join(t.TempDir(), "state.json")); err == nil || !strings.Contains(err.Error(), "istio mcp listen "+addr+" (--listen): ") {
		t.Errorf("istio source: %v", err)
	}
}

// TestDevCAErrorsNameFlags: trust/devca describes the bad field (InitAll, IssueFiles,
// NewRootFiles); the dev-ca commands name the flag.
func TestDevCAErrorsNameFlags(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		args []string
		want []string
	}{
		{[]string{"trust", "dev-ca", "init", "--dir", dir, "--svid-ttl", "10ms", "--root-validity", "1h"},
			[]string{"--trust-domain: give at least one trust domain", "--svid-ttl: 10ms: at least 1s", "--root-validity: 1h0m0s: at least 24h"}},
		{[]string{"trust", "dev-ca", "issue", "--dir", dir}, []string{"--trust-domain: required", "--spiffe-id: required", "--cert/--key: give both output files"}},
		{[]string{"trust", "dev-ca", "new-root", "--trust-domain", "east.example", "--cert", filepath.Join(dir, "c.pem")}, []string{"--cert/--key: give both output files"}},
	} {
		_, err := runCLI(t, c.args...)
		for _, w := range c.want {
			if err == nil || !strings.Contains(err.Error(), w) {
				t.Errorf("%v: want an error with %q, got %v", c.args[:3], w, err)
			}
		}
	}
}
