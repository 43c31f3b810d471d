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
	"github.com/meshfed/meshfed/trust/rotation"
)

// TestIstiodRotationGate rotates west's root while east feeds a real istiod (PEM
// caCertificates, as `meshfed istio config` prints them). East's federation follows istiod's
// PCDS (--istiod-xds); the rotation's gates wait for it: wait-acks-both holds until istiod
// gives its proxies the new root (after the operator re-merges the mesh config), and
// wait-acks-new until it no longer gives the old one. The times from each merge to istiod's
// PCDS and to the gate passing are measured.
func TestIstiodRotationGate(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a federation, kube-apiserver and istiod")
	}
	if istiotest.Binary() == "" {
		t.Skip(istiotest.SkipHint)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	// istiod's xDS port is named before istiod starts: east's federation must know it.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	xdsPort := l.Addr().(*net.TCPAddr).Port
	l.Close()
	f, err := harness.Start(ctx, harness.Options{Trust: true, Clusters: []harness.ClusterSpec{
		{Name: "east", IstioMCP: true, IstiodXDS: net.JoinHostPort("127.0.0.1", strconv.Itoa(xdsPort))},
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

	// The mesh config `meshfed istio config` prints now (PEM roots of west from etcd).
	meshConfig := func(wantRoots int) []byte {
		t.Helper()
		var out []byte
		waitfor.Cond(t, 30*time.Second, func() bool {
			s, _, err := operator.IstioConfig(ctx, east.Store, operator.IstioConfigOptions{Cluster: "east", MCPAddress: east.IstioMCPAddr})
			if err != nil {
				t.Fatal(err)
			}
			cc := s.MeshConfig.GetCaCertificates()
			if len(cc) != 1 || strings.Count(cc[0].GetPem(), "BEGIN CERTIFICATE") != wantRoots {
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
	settings, _, err := operator.IstioConfig(ctx, east.Store, operator.IstioConfigOptions{Cluster: "east", MCPAddress: east.IstioMCPAddr})
	if err != nil {
		t.Fatal(err)
	}
	api := kubetest.Start(t)
	ist := istiotest.Start(t, istiotest.Config{APIServer: api, ClusterID: "east", MeshConfig: meshConfig(1), Env: settings.Env, XDSPort: xdsPort, PodName: "istiod-rot"})
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

	// The operator merges the new mesh config (`meshfed istio config` again): istiod reloads it.
	merge := func(wantRoots int) time.Time {
		t.Helper()
		if err := os.WriteFile(filepath.Join(ist.Dir, "mesh.yaml"), meshConfig(wantRoots), 0o644); err != nil {
			t.Fatal(err)
		}
		return time.Now()
	}
	tMerge := merge(2)
	waitfor.Cond(t, 60*time.Second, func() bool { return hasExactly(istiodRoots(), oldFP, newFP) }, "istiod's PCDS has old and new roots: %+v\nistiod:\n%s", istiodRoots(), ist.LogTail(20))
	tPCDS := time.Now()
	waitfor.Cond(t, 60*time.Second, func() bool { j := job(); return j != nil && j.Phase != records.PhaseWaitAcksBoth }, "the gate passes:\n%s", out)
	tPass := time.Now()
	if tPass.Sub(tMerge) < settle {
		t.Fatalf("wait-acks-both passed %v after the merge, before the settle window %v", tPass.Sub(tMerge), settle)
	}
	t.Logf("wait-acks-both: merge -> istiod's PCDS seen by the federation %v; merge -> gate passed %v (settle %v)",
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
	t.Logf("wait-acks-new: merge -> istiod's PCDS seen by the federation %v; merge -> job done %v (settle %v)",
		tPCDS.Sub(tMerge).Round(time.Millisecond), tPass.Sub(tMerge).Round(time.Millisecond), settle)
	t.Logf("progress:\n%s", out)
}
