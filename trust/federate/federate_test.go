package federate_test

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshfed/meshfed/internal/atomicfile"
	"github.com/meshfed/meshfed/internal/waitfor"
	"github.com/meshfed/meshfed/keyspace/records"
	"github.com/meshfed/meshfed/keyspace/store"
	"github.com/meshfed/meshfed/trust"
	"github.com/meshfed/meshfed/trust/devca"
	"github.com/meshfed/meshfed/trust/federate"
	"github.com/meshfed/meshfed/trust/internal/trusttest"
	"github.com/meshfed/meshfed/trust/source"
)

// TestTwoTrustDomainsMTLS: workloads of two trust domains, each with its own root, do
// mTLS through the bundles federated by etcd (no shared root); a workload of a trust
// domain nobody federates is refused.
func TestTwoTrustDomainsMTLS(t *testing.T) {
	env := trusttest.NewEnv(t)
	a := env.StartCluster("a", "a.example", trusttest.ClusterOptions{})
	b := env.StartCluster("b", "b.example", trusttest.ClusterOptions{})
	waitfor.Cond(t, 20*time.Second, func() bool {
		return a.Svc.Set().Len() == 2 && b.Svc.Set().Len() == 2 && a.Svc.Ready() == nil && b.Svc.Ready() == nil
	}, "both clusters see both trust domains")

	wa := trusttest.StartWorkload(t, a.CA(t), "spiffe://a.example/ns/default/sa/server")
	wb := trusttest.StartWorkload(t, b.CA(t), "spiffe://b.example/ns/default/sa/client")
	srv := trusttest.Serve(t, wa, a.Bundles(), "b.example")
	if err := trusttest.Call(wb, b.Bundles(), srv.Addr, "a.example"); err != nil {
		t.Fatalf("mTLS through federated bundles: %v", err)
	}
	// The roots really differ: nothing is shared.
	ra, _ := a.Svc.Set().Get("a.example")
	rb, _ := a.Svc.Set().Get("b.example")
	if ra.X509Roots[0].Equal(rb.X509Roots[0]) {
		t.Fatal("the trust domains share a root")
	}
	// A stranger (its own dev CA, never federated) is refused by the server.
	strangerCA, err := devca.Init(t.TempDir(), "c.example", devca.Options{})
	if err != nil {
		t.Fatal(err)
	}
	wc := trusttest.StartWorkload(t, strangerCA, "spiffe://c.example/x")
	strangerSrv := trusttest.Serve(t, wa, a.Bundles(), "c.example")
	if err := trusttest.Call(wc, b.Bundles(), strangerSrv.Addr, "a.example"); err == nil {
		t.Fatal("a workload of an unfederated trust domain got through")
	}

	// Files: a PEM per trust domain and the bundle map, and acks of both sequences.
	for _, c := range []*trusttest.Cluster{a, b} {
		for _, td := range []string{"a.example", "b.example"} {
			pemBytes, err := os.ReadFile(filepath.Join(c.BundleDir, td+".pem"))
			if err != nil || !strings.Contains(string(pemBytes), "BEGIN CERTIFICATE") {
				t.Fatalf("%s: %s.pem: %v", c.Name, td, err)
			}
			waitfor.Cond(t, 10*time.Second, func() bool {
				ack, err := store.Get[records.Ack](context.Background(), env.St, env.St.KS.Ack(c.Name, td))
				return err == nil && ack.Value.Sequence == 1
			}, "%s acks %s", c.Name, td)
		}
		var bm struct {
			TrustDomains map[string]json.RawMessage `json:"trust_domains"`
		}
		data, _ := os.ReadFile(filepath.Join(c.BundleDir, federate.BundleMapFile))
		if err := json.Unmarshal(data, &bm); err != nil || len(bm.TrustDomains) != 2 || bm.TrustDomains["a.example"] == nil {
			t.Fatalf("%s: bundle map %s: %v", c.Name, data, err)
		}
	}
}

func putRaw(t *testing.T, env *trusttest.Env, key string, v []byte) {
	t.Helper()
	if _, err := env.Cli.Put(context.Background(), key, string(v)); err != nil {
		t.Fatal(err)
	}
}

// TestBadRecordsKeepLastGood writes broken bundles/<td> records behind the services' backs:
// each is rejected and the last good bundle stays in force (set, files).
func TestBadRecordsKeepLastGood(t *testing.T) {
	env := trusttest.NewEnv(t)
	a := env.StartCluster("a", "a.example", trusttest.ClusterOptions{})
	// b.example is published by hand here (no service owns it).
	good, _, _ := devca.NewRoot("b.example", 24*time.Hour)
	gb, err := trust.Parse("b.example", trust.CertsPEM([]*x509.Certificate{good}), trust.ParseOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rec, _ := gb.WithMeta(5, 0).Record("b", time.Now())
	goodBytes, _ := records.Encode(rec)
	key := env.St.KS.Bundle("b.example")
	putRaw(t, env, key, goodBytes)
	waitfor.Cond(t, 10*time.Second, func() bool { return a.Has("b.example", 5) }, "good bundle mirrored")
	pemPath := filepath.Join(a.BundleDir, "b.example.pem")
	waitfor.Cond(t, 10*time.Second, func() bool { _, err := os.Stat(pemPath); return err == nil }, "pem written")
	goodPEM, _ := os.ReadFile(pemPath)

	expired, _, _ := devca.NewRootAt("b.example", time.Now().Add(-48*time.Hour), time.Hour)
	leafCA, _ := devca.Init(t.TempDir(), "b.example", devca.Options{})
	leafSVID, _ := leafCA.Issue(devca.IssueRequest{ID: "spiffe://b.example/x"})
	bad := map[string][]byte{}
	mk := func(name string, pemCerts []*x509.Certificate, seq uint64) {
		r := *rec
		r.Sequence = seq
		r.JWKS = json.RawMessage(`{"keys":[{"use":"x509-svid","kty":"EC","crv":"P-256","x5c":["` + b64(pemCerts[0].Raw) + `"]}],"spiffe_sequence":` + itoa(seq) + `}`)
		bb, _ := json.Marshal(&r)
		bad[name] = bb
	}
	mk("expired root", []*x509.Certificate{expired}, 6)
	mk("non-CA cert", leafSVID.Chain, 6)
	emptyRec := *rec
	emptyRec.Sequence, emptyRec.JWKS = 6, json.RawMessage(`{"keys":[],"spiffe_sequence":6}`)
	bad["empty keys"], _ = json.Marshal(&emptyRec)
	bad["garbage"] = []byte("not json at all")
	regress := *rec
	regress.Sequence, regress.JWKS = 4, mustJWKS(t, gb.WithMeta(4, 0))
	bad["sequence regression"], _ = json.Marshal(&regress)
	digestLie := *rec
	digestLie.Sequence, digestLie.JWKS = 6, mustJWKS(t, gb.WithMeta(6, 0))
	digestLie.Digest = "sha256:" + strings.Repeat("0", 64)
	bad["digest mismatch"], _ = json.Marshal(&digestLie)
	over := *rec
	over.Sequence, over.JWKS = 6, json.RawMessage(`{"keys":[],"pad":"`+strings.Repeat("a", trust.MaxBundleBytes)+`"}`)
	bad["oversize"], _ = json.Marshal(&over)

	for name, v := range bad {
		putRaw(t, env, key, v)
		// The rejection is observable as the counter; the set and file must not move.
		waitfor.Cond(t, 10*time.Second, func() bool {
			st := env.St
			r, err := st.Client().Get(context.Background(), key)
			return err == nil && string(r.Kvs[0].Value) == string(v)
		}, "%s written", name)
		b, _ := a.Svc.Set().Get("b.example")
		if b == nil || b.Sequence != 5 || b.Digest() != gb.Digest() {
			t.Fatalf("%s: last good bundle replaced: %+v", name, b)
		}
	}
	// Wait for the services to have processed the last write (a later good record shows
	// up, so everything before it was seen and rejected), then check the file never moved.
	rec2, _ := gb.WithMeta(7, 0).Record("b", time.Now())
	good2, _ := records.Encode(rec2)
	curPEM, _ := os.ReadFile(pemPath)
	if string(curPEM) != string(goodPEM) {
		t.Fatal("the PEM file changed on a bad record")
	}
	putRaw(t, env, key, good2)
	waitfor.Cond(t, 10*time.Second, func() bool { return a.Has("b.example", 7) }, "a later good record is taken")
}

func b64(der []byte) string {
	return base64Std(der)
}

func itoa(n uint64) string { return strconvU(n) }

func mustJWKS(t *testing.T, b *trust.Bundle) json.RawMessage {
	j, err := b.MarshalJWKS()
	if err != nil {
		t.Fatal(err)
	}
	return j
}

// TestFileSourceLockAndUndo: the file source publishes (sequence +1 per change); while a
// rotation lock is held it cannot overwrite; after a finished rotation a file that lacks
// the new root is refused and reported, and accepted again once it has it.
func TestFileSourceLockAndUndo(t *testing.T) {
	env := trusttest.NewEnv(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "bundle.pem")
	r1, _, _ := devca.NewRoot("a.example", 24*time.Hour)
	r2, _, _ := devca.NewRoot("a.example", 24*time.Hour)
	write := func(certs ...*x509.Certificate) {
		if err := atomicfile.Write(path, trust.CertsPEM(certs), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(r1)
	src := source.NewFile("a.example", path, source.Options{Log: trusttest.Quiet(), Poll: 10 * time.Millisecond})
	a := env.StartCluster("a", "a.example", trusttest.ClusterOptions{Source: src})
	ctx := context.Background()
	get := func() *records.Bundle {
		it, err := store.Get[records.Bundle](ctx, env.St, env.St.KS.Bundle("a.example"))
		if err != nil {
			return nil
		}
		return it.Value
	}
	waitfor.Cond(t, 10*time.Second, func() bool { b := get(); return b != nil && b.Sequence == 1 }, "first publish at sequence 1")

	write(r1, r2)
	waitfor.Cond(t, 10*time.Second, func() bool { b := get(); return b != nil && b.Sequence == 2 }, "a change publishes sequence 2")

	// Garbage in the file: the source keeps the last good bundle, nothing is published.
	if err := os.WriteFile(path, []byte("garbage"), 0o644); err != nil {
		t.Fatal(err)
	}
	waitfor.Cond(t, 10*time.Second, func() bool { return src.Status().LastError != nil }, "source reports the bad file")
	if get().Sequence != 2 {
		t.Fatal("a bad file was published")
	}

	// A rotation job holds the lock: the source cannot overwrite.
	_, err := store.Modify[records.Bundle](ctx, env.St, env.St.KS.Bundle("a.example"), func(cur *records.Bundle) (*records.Bundle, error) {
		cur.Lock = &records.Lock{Job: "rot-x", Holder: "test", Since: time.Now()}
		return cur, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	write(r2)
	waitfor.Cond(t, 10*time.Second, func() bool {
		return strings.Contains(a.Svc.PublishStatus().Refused, "rotation job holds the bundle")
	}, "the locked bundle is refused to the source")
	if get().Sequence != 2 {
		t.Fatal("the source overwrote a locked bundle")
	}

	// The job ends having moved to r3 (new only, sequence 3); the file still has only r2.
	r3, _, _ := devca.NewRoot("a.example", 24*time.Hour)
	b3, _ := trust.Parse("a.example", trust.CertsPEM([]*x509.Certificate{r3}), trust.ParseOptions{})
	rec3, _ := b3.WithMeta(3, 0).Record("a", time.Now())
	rot := &records.Rotation{TrustDomain: "a.example", ID: "rot-x", Phase: records.PhaseDone, OldRoots: string(trust.CertsPEM([]*x509.Certificate{r1, r2})),
		NewRoot: string(trust.CertsPEM([]*x509.Certificate{r3})), NewRootFingerprint: trust.Fingerprint(r3), Issuer: records.IssuerExternal,
		BaseSequence: 1, BothSequence: 2, NewSequence: 3, Holder: "test", StartedBy: "test", StartedAt: time.Now()}
	if _, err := env.St.Create(ctx, env.St.KS.Rotation("a.example"), rot); err != nil {
		t.Fatal(err)
	}
	it, _ := store.Get[records.Bundle](ctx, env.St, env.St.KS.Bundle("a.example"))
	if _, err := env.St.Update(ctx, it.Key, rec3, it.ModRevision); err != nil {
		t.Fatal(err)
	}
	waitfor.Cond(t, 10*time.Second, func() bool {
		return strings.Contains(a.Svc.PublishStatus().Refused, "would undo the rotation")
	}, "a source lacking the rotated-in root is refused and reported: %q", a.Svc.PublishStatus().Refused)
	if b := get(); b.Sequence != 3 || b.Digest != b3.Digest() {
		t.Fatal("the source undid the rotation")
	}
	// The operator fixes the file: accepted again (same content as published: no new sequence).
	write(r3)
	waitfor.Cond(t, 10*time.Second, func() bool { return a.Svc.PublishStatus().Refused == "" }, "accepted again")
	if get().Sequence != 3 {
		t.Fatal("identical content must not take a new sequence")
	}
}

// TestExpiredRootLeftOut: a root that expires after its record was written is left out of
// what a (re)starting cluster writes out; the other root of the trust domain stays trusted
// and the cluster still acks the record as published.
func TestExpiredRootLeftOut(t *testing.T) {
	env := trusttest.NewEnv(t)
	short, _, _ := devca.NewRootAt("b.example", time.Now().Add(-time.Hour), time.Hour+1500*time.Millisecond)
	long, _, _ := devca.NewRoot("b.example", 24*time.Hour)
	b, err := trust.Parse("b.example", trust.CertsPEM([]*x509.Certificate{short, long}), trust.ParseOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rec, _ := b.WithMeta(3, 0).Record("b", time.Now())
	if _, err := env.St.Create(context.Background(), env.St.KS.Bundle("b.example"), rec); err != nil {
		t.Fatal(err)
	}
	// Wait for the root's own expiry (time itself is what this test is about).
	waitfor.Cond(t, 10*time.Second, func() bool { return time.Now().After(short.NotAfter) }, "short root expired")
	a := env.StartCluster("a", "a.example", trusttest.ClusterOptions{})
	waitfor.Cond(t, 20*time.Second, func() bool { return a.Has("b.example", 3) }, "b.example mirrored despite its expired root")
	got, _ := a.Svc.Set().Get("b.example")
	if len(got.X509Roots) != 1 || !got.X509Roots[0].Equal(long) {
		t.Fatalf("roots in force: %d", len(got.X509Roots))
	}
	waitfor.Cond(t, 10*time.Second, func() bool {
		ack, err := store.Get[records.Ack](context.Background(), env.St, env.St.KS.Ack("a", "b.example"))
		return err == nil && ack.Value.Sequence == 3 && ack.Value.Digest == rec.Digest
	}, "acked with the record's digest")
}
