package rotation_test

import (
	"context"
	"crypto/x509"
	"strings"
	"testing"
	"time"

	"github.com/meshfed/meshfed/internal/waitfor"
	"github.com/meshfed/meshfed/keyspace/records"
	"github.com/meshfed/meshfed/keyspace/store"
	"github.com/meshfed/meshfed/trust"
	"github.com/meshfed/meshfed/trust/rotation"
)

// setIstiods writes acks/b/istio/fed-0 as b's federation replica would: the istiods it
// feeds and the roots each gives its proxies (nil roots: no probe).
func (f *fixture) setIstiods(t *testing.T, istiods ...records.IstiodStatus) {
	t.Helper()
	key := f.env.St.KS.IstioAck("b", "fed-0")
	rec := &records.IstioStatus{Cluster: "b", Instance: "fed-0", UpdatedAt: time.Now().UTC(), Istiods: append([]records.IstiodStatus{}, istiods...)}
	if _, err := store.Modify[records.IstioStatus](context.Background(), f.env.St, key, func(*records.IstioStatus) (*records.IstioStatus, error) { return rec, nil }); err != nil {
		t.Fatal(err)
	}
}

func istiodWith(node string, roots ...*x509.Certificate) records.IstiodStatus {
	r := &records.IstiodRoots{Addr: "10.0.0.1:15010", Fingerprints: []string{}, Since: time.Now().UTC()}
	for _, c := range roots {
		r.Fingerprints = append(r.Fingerprints, trust.Fingerprint(c))
	}
	return records.IstiodStatus{Node: node, Connected: time.Now().UTC(), Roots: r}
}

// TestGateWaitsForIstiod: cluster b feeds istiod. Each gate of a rotation of a.example waits
// for b's istiods, naming what it waits for — no istiod connected, an istiod whose roots are
// not observed, an istiod without the new root, then one still holding the removed root —
// and passes once every istiod gives its proxies exactly the roots of the sequence and the
// settle window has passed.
func TestGateWaitsForIstiod(t *testing.T) {
	f := newFixture(t, quickSVIDTTL)
	oldRoots, err := f.a.CA(t).Roots()
	if err != nil {
		t.Fatal(err)
	}
	f.setIstiods(t, istiodWith("istiod-0", oldRoots...))

	out := &syncBuf{}
	nc, nk := newRoot(t)
	cfg := f.cfg(out)
	cfg.NewCA, cfg.NewCAKey, cfg.IstiodSettle = nc, nk, 300*time.Millisecond
	done := make(chan error, 1)
	var rot *records.Rotation
	go func() {
		var err error
		rot, err = rotation.Start(context.Background(), cfg)
		done <- err
	}()
	waitingHas := func(what string) func() bool {
		return func() bool {
			it, err := store.Get[records.Rotation](context.Background(), f.env.St, f.env.St.KS.Rotation("a.example"))
			return err == nil && strings.Contains(strings.Join(it.Value.Waiting, "\n"), what) && strings.Contains(out.String(), what)
		}
	}
	newFP := trust.Fingerprint(nc)[:len("sha256:")+16]
	waitfor.Cond(t, 20*time.Second, waitingHas("b: waiting for istiod of cluster b: istiod istiod-0 does not give its proxies root(s) "+newFP),
		"wait-acks-both waits for b's istiod to have the new root:\n%s", out)

	f.setIstiods(t)
	waitfor.Cond(t, 20*time.Second, waitingHas("b: waiting for istiod of cluster b: no istiod is connected to its MCP source"), "no istiod: the gate waits:\n%s", out)

	f.setIstiods(t, records.IstiodStatus{Node: "istiod-0", Connected: time.Now().UTC()})
	waitfor.Cond(t, 20*time.Second, waitingHas("istiod istiod-0: its roots are not observed"), "roots not observed: the gate waits:\n%s", out)

	// A failed probe: the gate names the address and the error, and the hint is the probe's
	// (reach istiod's plaintext xDS), not the mesh config's.
	f.setIstiods(t, records.IstiodStatus{Node: "istiod-0", Connected: time.Now().UTC(),
		Roots: &records.IstiodRoots{Addr: "10.1.0.9:15012", Fingerprints: []string{}, Error: "connection error"}})
	waitfor.Cond(t, 20*time.Second, waitingHas("istiod istiod-0: roots probe at 10.1.0.9:15012: connection error (the prober"), "probe error: the gate waits:\n%s", out)
	if it, err := store.Get[records.Rotation](context.Background(), f.env.St, f.env.St.KS.Rotation("a.example")); err != nil || strings.Contains(strings.Join(it.Value.Waiting, "\n"), "mesh config") {
		t.Fatalf("a failed probe is not fixed in the mesh config: %v %+v", err, it)
	}

	both := append(append([]*x509.Certificate{}, oldRoots...), nc)
	f.setIstiods(t, istiodWith("istiod-0", both...))
	t0 := time.Now()
	waitfor.Cond(t, 20*time.Second, func() bool { return strings.Contains(out.String(), "wait-acks-both → switch-issuer") },
		"the gate passes once istiod has old and new roots:\n%s", out)
	if took := time.Since(t0); took < cfg.IstiodSettle {
		t.Fatalf("the gate passed %v after istiod had the roots, before the settle window %v", took, cfg.IstiodSettle)
	}
	if !strings.Contains(out.String(), "settling until") {
		t.Errorf("the settle window is not named:\n%s", out)
	}

	waitfor.Cond(t, 20*time.Second, waitingHas("istiod istiod-0 still gives its proxies root(s) "+trust.Fingerprint(oldRoots[0])[:len("sha256:")+16]),
		"wait-acks-new waits for b's istiod to drop the old root:\n%s", out)
	f.setIstiods(t, istiodWith("istiod-0", nc))
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("the job did not finish after istiod dropped the old root:\n%s", out)
	}
	if rot.Phase != records.PhaseDone {
		t.Fatalf("job ended %s", rot.Phase)
	}
}

// TestGateIgnoresIstiodOfOwnTrustDomain: istiod's proxies get their own trust domain's roots
// from their CA, not from meshfed, so a rotation of a cluster's own trust domain does not
// wait for that cluster's istiods (a's istiod lists no root at all here).
func TestGateIgnoresIstiodOfOwnTrustDomain(t *testing.T) {
	f := newFixture(t, quickSVIDTTL)
	key := f.env.St.KS.IstioAck("a", "fed-0")
	rec := &records.IstioStatus{Cluster: "a", Instance: "fed-0", UpdatedAt: time.Now().UTC(), Istiods: []records.IstiodStatus{
		{Node: "istiod-0", Connected: time.Now().UTC(), Roots: &records.IstiodRoots{Addr: "10.0.0.1:15010", Fingerprints: []string{}}}}}
	if _, err := f.env.St.Create(context.Background(), key, rec); err != nil {
		t.Fatal(err)
	}
	out := &syncBuf{}
	nc, nk := newRoot(t)
	cfg := f.cfg(out)
	cfg.NewCA, cfg.NewCAKey = nc, nk
	if _, err := rotation.Start(context.Background(), cfg); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
}
