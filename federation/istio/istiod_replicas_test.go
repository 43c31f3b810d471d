package istio

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/meshfed/meshfed/internal/istiotest"
	"github.com/meshfed/meshfed/internal/kubetest"
	"github.com/meshfed/meshfed/internal/waitfor"
)

// TestIstiodReplicasSameState: two real istiods of one cluster (istiod-0 and istiod-1 on
// one kube-apiserver, as two replicas of the istiod Deployment), each fed by its own
// federation replica (two MCP servers, each with its own Source given the same plans, as
// two `meshfed federation` replicas compute them from one etcd). Both replicas serve the
// same versions (content hashes) and both istiods ACK them; a sidecar of each istiod gets
// the same EDS for the imported service; a plan change reaches both, and so does the
// service's removal. TestTwoIstiodsSameState is the same property on the MCP streams
// alone (no istiod).
func TestIstiodReplicasSameState(t *testing.T) {
	if testing.Short() {
		t.Skip("starts kube-apiserver and two istiods")
	}
	if istiotest.Binary() == "" {
		t.Skip(istiotest.SkipHint)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	api := kubetest.Start(t)
	type replica struct {
		srv *Server
		src *Source
		ist *istiotest.Istiod
		sc  *istiotest.Sidecar
	}
	reps := make([]*replica, 2)
	update := func(svcs map[string]*Service) time.Time {
		for _, r := range reps {
			r.src.Update(svcs)
		}
		return time.Now()
	}
	for i := range reps {
		srv, _ := startServer(t, Options{})
		src := NewSource(srv, BuildOptions{}, nil)
		go func() { _ = src.Run(ctx) }()
		reps[i] = &replica{srv: srv, src: src}
	}
	update(map[string]*Service{"demo/echo": echoPlan(
		gw("west", "r1", "r1-b", 2, "127.0.0.21", "127.0.0.22"),
		gw("north", "r2", "r2-a", 3, "127.0.0.31"),
	)})
	for i, r := range reps {
		waitState(t, r.srv)
		mesh := fmt.Sprintf("configSources:\n- address: xds://%s\n- address: k8s://\ntrustDomain: east.example\n", r.srv.Addr())
		r.ist = istiotest.Start(t, istiotest.Config{APIServer: api, ClusterID: "east", MeshConfig: []byte(mesh), PodName: fmt.Sprintf("istiod-%d", i)})
		r.sc = eastClient(t, r.ist.XDSAddr, i)
	}

	// expect waits until both sidecars hold eps for echo and returns how long each took
	// from since.
	expect := func(what string, since time.Time, eps ...istiotest.Endpoint) {
		t.Helper()
		var took []string
		for i, r := range reps {
			snap, _, err := r.sc.WaitFor(60*time.Second, echoEDSIs(eps...))
			if err != nil {
				t.Fatalf("%s: istiod-%d's sidecar: %v\ngot %v\nwant %v\nistiod-%d: %s", what, i, err,
					istiotest.Flatten(snap.Endpoints[echoCluster]), eps, i, r.ist.LogTail(20))
			}
			if !since.IsZero() {
				took = append(took, fmt.Sprintf("istiod-%d %v after the update", i, snap.At.Sub(since).Round(time.Millisecond)))
			}
		}
		a, b := reps[0].sc.Snapshot(), reps[1].sc.Snapshot()
		if fa, fb := istiotest.Flatten(a.Endpoints[echoCluster]), istiotest.Flatten(b.Endpoints[echoCluster]); fmt.Sprint(fa) != fmt.Sprint(fb) {
			t.Fatalf("%s: the two istiods' sidecars differ:\n%v\n%v", what, fa, fb)
		}
		t.Logf("%s: both sidecars equal %v %s", what, istiotest.Flatten(a.Endpoints[echoCluster]), strings.Join(took, ", "))
	}
	// versions is the per-type version each istiod ACKed, as its replica reports it.
	versions := func(r *replica) (string, bool) {
		st := r.srv.Report().Istiods
		if len(st) != 1 {
			return fmt.Sprintf("%d istiods", len(st)), false
		}
		var out []string
		for _, ty := range st[0].Types {
			out = append(out, ty.Type+"@"+ty.AckedVersion)
		}
		sort.Strings(out)
		return strings.Join(out, " "), st[0].Synced
	}
	sameVersions := func(what string) {
		t.Helper()
		var va, vb string
		if !waitfor.Poll(30*time.Second, func() bool {
			a, okA := versions(reps[0])
			b, okB := versions(reps[1])
			va, vb = a, b
			return okA && okB && a == b
		}) {
			t.Fatalf("%s: the istiods are not both synced at the same versions:\nreplica 0: %s\nreplica 1: %s", what, va, vb)
		}
		t.Logf("%s: both istiods ACKed %d types at the same versions", what, strings.Count(va, "@"))
	}

	west1 := istiotest.Endpoint{Priority: 0, Locality: "r1/r1-b/west", Address: "127.0.0.21:15443", Weight: 2}
	west2 := istiotest.Endpoint{Priority: 0, Locality: "r1/r1-b/west", Address: "127.0.0.22:15443", Weight: 2}
	north := istiotest.Endpoint{Priority: 1, Locality: "r2/r2-a/north", Address: "127.0.0.31:15443", Weight: 3}
	expect("first EDS", time.Time{}, west1, west2, north)
	sameVersions("first state")
	if a, b := reps[0].srv.State(), reps[1].srv.State(); a.Type(TypeServiceEntry).Version != b.Type(TypeServiceEntry).Version {
		t.Errorf("the replicas serve different ServiceEntry versions: %s vs %s", a.Type(TypeServiceEntry).Version, b.Type(TypeServiceEntry).Version)
	}

	// The plan changes (north first, west loses a gateway): both follow.
	at := update(map[string]*Service{"demo/echo": echoPlan(
		gw("north", "r2", "r2-a", 3, "127.0.0.31"),
		gw("west", "r1", "r1-b", 1, "127.0.0.21"),
	)})
	north.Priority, west1.Priority, west1.Weight = 0, 1, 1
	expect("plan change", at, north, west1)
	sameVersions("after the change")

	// The import goes: both drop the cluster.
	at = update(map[string]*Service{"demo/echo": nil})
	for i, r := range reps {
		snap, _, err := r.sc.WaitFor(30*time.Second, func(s istiotest.Snapshot) bool { return s.Clusters[echoCluster] == nil })
		if err != nil {
			t.Fatalf("unimport: istiod-%d's sidecar still has %s", i, echoCluster)
		}
		t.Logf("unimport: istiod-%d's sidecar without the cluster %v after the update", i, snap.At.Sub(at).Round(time.Millisecond))
	}
	sameVersions("after the unimport")
}
