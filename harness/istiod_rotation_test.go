package harness_test

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meshfed/meshfed/harness"
	"github.com/meshfed/meshfed/internal/istiotest"
	"github.com/meshfed/meshfed/internal/kubetest"
	"github.com/meshfed/meshfed/internal/waitfor"
	"github.com/meshfed/meshfed/keyspace/records"
	"github.com/meshfed/meshfed/keyspace/store"
	"github.com/meshfed/meshfed/operator"
	"github.com/meshfed/meshfed/trust"
	"github.com/meshfed/meshfed/trust/devca"
	"github.com/meshfed/meshfed/trust/federate"
	"github.com/meshfed/meshfed/trust/rotation"
)

// TestIstiodRotationGate rotates west's root while east feeds a real istiod with the settings
// `meshfed istio config` prints. East's federation follows istiod's PCDS (--istiod-xds); the
// rotation's gates wait for it: wait-acks-both holds, with every federation acked, until
// istiod gives its proxies the new root, and wait-acks-new until it no longer gives the old
// one. pem: istiod gets the roots when the operator merges the re-generated mesh config.
// spiffe-bundle-url: east's bundle endpoint serves the new bundle at once, yet istiod fetches
// it only at start, when its list of URLs changes, or every 30 minutes — the gate keeps
// waiting (checked over a window) until istiod is restarted here. The times from each
// operator action (merge, restart) to istiod's PCDS and to the gate passing are measured.
func TestIstiodRotationGate(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a federation, kube-apiserver and istiod")
	}
	if istiotest.Binary() == "" {
		t.Skip(istiotest.SkipHint)
	}
	t.Run("pem", func(t *testing.T) { testIstiodRotationGate(t, false) })
	t.Run("spiffe-bundle-url", func(t *testing.T) { testIstiodRotationGate(t, true) })
}

func testIstiodRotationGate(t *testing.T, bundleURL bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	// istiod's xDS port is named before istiod starts: east's federation must know it.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	xdsPort := l.Addr().(*net.TCPAddr).Port
	l.Close()
	eastSpec := harness.ClusterSpec{Name: "east", IstioMCP: true, IstiodXDS: net.JoinHostPort("127.0.0.1", strconv.Itoa(xdsPort))}
	env := map[string]string{}
	if bundleURL {
		// East's bundle endpoint with a certificate of a stand-in Web PKI CA istiod trusts.
		webCA, certFile, keyFile := webPKI(t, harness.ClusterIP(0))
		eastSpec.BundleEndpoint = &federate.EndpointConfig{Addr: harness.ClusterIP(0) + ":0", CertFile: certFile, KeyFile: keyFile}
		env["SSL_CERT_FILE"] = webCA
	}
	f, err := harness.Start(ctx, harness.Options{Trust: true, Clusters: []harness.ClusterSpec{
		eastSpec,
		// An import, so east's MCP source has a plan to serve (istiod waits for one).
		{Name: "west", Exports: echoExportsN(net.JoinHostPort(harness.WorkloadIP(1, 0), "8443"))},
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	east, west := f.Cluster("east"), f.Cluster("west")
	wtd := west.Spec.TrustDomain
	waitfor.Cond(t, 30*time.Second, func() bool { return east.Agent().Istio.Ready() == nil }, "east's MCP source has a plan")

	opts := operator.IstioConfigOptions{Cluster: "east", MCPAddress: east.IstioMCPAddr}
	if bundleURL {
		waitfor.Cond(t, 20*time.Second, func() bool { return east.BundleEndpointAddr() != "" }, "east's bundle endpoint listening")
		opts.BundleURL = "https://" + east.BundleEndpointAddr()
	}
	// The mesh config `meshfed istio config` prints now (PEM: west's roots from etcd).
	meshConfig := func(wantRoots int) []byte {
		t.Helper()
		var out []byte
		waitfor.Cond(t, 30*time.Second, func() bool {
			s, _, err := operator.IstioConfig(ctx, east.Store, opts)
			if err != nil {
				t.Fatal(err)
			}
			cc := s.MeshConfig.GetCaCertificates()
			if len(cc) != 1 || (!bundleURL && strings.Count(cc[0].GetPem(), "BEGIN CERTIFICATE") != wantRoots) {
				return false
			}
			out, err = s.MeshConfigYAML()
			if err != nil {
				t.Fatal(err)
			}
			return true
		}, "west's bundle with %d root(s) in etcd", wantRoots)
		return out
	}
	settings, _, err := operator.IstioConfig(ctx, east.Store, opts)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range settings.Env {
		env[k] = v
	}
	api := kubetest.Start(t)
	ist := istiotest.Start(t, istiotest.Config{APIServer: api, ClusterID: "east", MeshConfig: meshConfig(1), Env: env, XDSPort: xdsPort, PodName: "istiod-rot"})
	defer ist.Close()

	oldRoots, err := west.CA.Roots()
	if err != nil {
		t.Fatal(err)
	}
	// istiodRoots is what east's federation published about istiod's PCDS.
	istiodRoots := func() *records.IstiodRoots {
		items, _, _, err := store.List[records.IstioStatus](ctx, east.Store, east.Store.KS.IstioAcksOf("east"))
		if err != nil || len(items) != 1 || len(items[0].Value.Istiods) != 1 {
			return nil
		}
		return items[0].Value.Istiods[0].Roots
	}
	hasExactly := func(r *records.IstiodRoots, fps ...string) bool {
		sort.Strings(fps)
		return r != nil && r.Error == "" && strings.Join(r.Fingerprints, ",") == strings.Join(fps, ",")
	}
	waitfor.Cond(t, 60*time.Second, func() bool { return hasExactly(istiodRoots(), trust.Fingerprint(oldRoots[0])) },
		"east's federation reports istiod's PCDS roots = west's root: %+v\nistiod:\n%s", istiodRoots(), ist.LogTail(20))

	nc, nk, err := devca.NewRoot(wtd, 48*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	out := &memLog{} // progress lines
	settle := time.Second
	cfg := rotation.Config{Store: east.Store, TrustDomain: wtd, DevCADir: filepath.Dir(west.CA.Dir()), NewCA: nc, NewCAKey: nk,
		SVIDLifetime: time.Second, MinValidity: time.Hour, Poll: 20 * time.Millisecond, IstiodSettle: settle, Out: out}
	done := make(chan error, 1)
	go func() { _, err := rotation.Start(ctx, cfg); done <- err }()

	job := func() *records.Rotation {
		it, err := store.Get[records.Rotation](ctx, east.Store, east.Store.KS.Rotation(wtd))
		if err != nil {
			return nil
		}
		return it.Value
	}
	newFP, oldFP := trust.Fingerprint(nc), trust.Fingerprint(oldRoots[0])
	// wait-acks-both: both clusters' federations ack the new sequence at once; istiod does
	// not have the new root until the mesh config is merged again.
	waitfor.Cond(t, 60*time.Second, func() bool {
		j := job()
		return j != nil && j.Phase == records.PhaseWaitAcksBoth &&
			strings.Contains(strings.Join(j.Waiting, "\n"), "east: waiting for istiod of cluster east: istiod ") &&
			strings.Contains(strings.Join(j.Waiting, "\n"), "does not give its proxies root(s) "+newFP[:len("sha256:")+16])
	}, "wait-acks-both waits for east's istiod:\n%s", out)
	waitfor.Cond(t, 30*time.Second, func() bool {
		for _, c := range []string{"east", "west"} {
			a, err := store.Get[records.Ack](ctx, east.Store, east.Store.KS.Ack(c, wtd))
			if err != nil || a.Value.Sequence != job().BothSequence {
				return false
			}
		}
		return true
	}, "both federations acked sequence %d", job().BothSequence)
	if j := job(); j.Phase != records.PhaseWaitAcksBoth {
		t.Fatalf("the gate passed with every federation acked but istiod without the new root: %s\n%s", j.Phase, out)
	}
	t.Logf("gate waits: %s", strings.Join(job().Waiting, "; "))

	// The operator's action. PEM: merge the new mesh config (`meshfed istio config` again);
	// istiod reloads it. spiffeBundleUrl: the URLs do not change, so istiod would fetch only
	// in up to 30 minutes; first check the gate keeps waiting although east's endpoint serves
	// the new bundle, then restart istiod (it fetches at start).
	merge := func(wantRoots int) time.Time {
		t.Helper()
		if bundleURL {
			// The gate names istiod only once east's own ack passed: east's endpoint already
			// serves the sequence.
			before := istiodRoots()
			// A negative check holds over its window: istiod's roots and the phase stay.
			for end := time.Now().Add(5 * time.Second); time.Now().Before(end); {
				if r := istiodRoots(); r == nil || before == nil || strings.Join(r.Fingerprints, ",") != strings.Join(before.Fingerprints, ",") {
					t.Fatalf("istiod's PCDS changed without a fetch: %+v -> %+v", before, r)
				}
				if p := job().Phase; (wantRoots == 2 && p != records.PhaseWaitAcksBoth) || (wantRoots == 1 && p != records.PhaseWaitAcksNew) {
					t.Fatalf("the gate passed while istiod had not fetched the bundle: %s\n%s", p, out)
				}
				select {
				case <-ctx.Done():
					t.Fatal(ctx.Err())
				case <-time.After(100 * time.Millisecond):
				}
			}
			t0 := time.Now()
			if err := ist.Restart(ctx); err != nil {
				t.Fatal(err)
			}
			t.Logf("istiod restarted in %v", time.Since(t0).Round(time.Millisecond))
			return t0
		}
		if err := os.WriteFile(filepath.Join(ist.Dir, "mesh.yaml"), meshConfig(wantRoots), 0o644); err != nil {
			t.Fatal(err)
		}
		return time.Now()
	}
	tMerge := merge(2)
	waitfor.Cond(t, 60*time.Second, func() bool { return hasExactly(istiodRoots(), oldFP, newFP) }, "istiod's PCDS has old and new roots: %+v\nistiod:\n%s", istiodRoots(), ist.LogTail(20))
	tPCDS := time.Now()
	// meshfed status (text) shows the same: istiod gives 2 roots, named by short fingerprint.
	st, err := operator.GetStatus(ctx, east.Store, operator.StatusOptions{NoProbe: true})
	if err != nil {
		t.Fatal(err)
	}
	var tb strings.Builder
	if err := st.WriteTable(&tb); err != nil {
		t.Fatal(err)
	}
	both := []string{oldFP, newFP}
	sort.Strings(both)
	if want := "2: " + both[0][7:15] + "… " + both[1][7:15] + "…"; !strings.Contains(tb.String(), want) {
		t.Errorf("meshfed status does not show istiod's roots as %q:\n%s", want, tb.String())
	}
	if _, istiods, ok := strings.Cut(tb.String(), "\nISTIOD "); ok {
		t.Logf("meshfed status:\nISTIOD %s", istiods)
	}
	waitfor.Cond(t, 60*time.Second, func() bool { j := job(); return j != nil && j.Phase != records.PhaseWaitAcksBoth }, "the gate passes:\n%s", out)
	tPass := time.Now()
	if tPass.Sub(tMerge) < settle {
		t.Fatalf("wait-acks-both passed %v after the merge, before the settle window %v", tPass.Sub(tMerge), settle)
	}
	t.Logf("wait-acks-both: operator action -> istiod's PCDS seen by the federation %v; -> gate passed %v (settle %v)",
		tPCDS.Sub(tMerge).Round(time.Millisecond), tPass.Sub(tMerge).Round(time.Millisecond), settle)

	// wait-acks-new: istiod still gives the old root until the mesh config is merged again.
	waitfor.Cond(t, 60*time.Second, func() bool {
		j := job()
		return j != nil && j.Phase == records.PhaseWaitAcksNew &&
			strings.Contains(strings.Join(j.Waiting, "\n"), "still gives its proxies root(s) "+oldFP[:len("sha256:")+16])
	}, "wait-acks-new waits for istiod to drop the old root:\n%s", out)
	tMerge = merge(1)
	waitfor.Cond(t, 60*time.Second, func() bool { return hasExactly(istiodRoots(), newFP) }, "istiod's PCDS has the new root only: %+v", istiodRoots())
	tPCDS = time.Now()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
	case <-ctx.Done():
		t.Fatalf("the job did not end:\n%s", out)
	}
	tPass = time.Now()
	if j := job(); j.Phase != records.PhaseDone {
		t.Fatalf("job ended %s\n%s", j.Phase, out)
	}
	t.Logf("wait-acks-new: operator action -> istiod's PCDS seen by the federation %v; -> job done %v (settle %v)",
		tPCDS.Sub(tMerge).Round(time.Millisecond), tPass.Sub(tMerge).Round(time.Millisecond), settle)
	t.Logf("progress:\n%s", out)
}
