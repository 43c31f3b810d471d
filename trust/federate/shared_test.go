package federate_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/meshfed/meshfed/internal/waitfor"
	"github.com/meshfed/meshfed/keyspace/records"
	"github.com/meshfed/meshfed/keyspace/store"
	"github.com/meshfed/meshfed/trust/internal/trusttest"
)

// TestSharedTrustDomainOwnerAlonePublishes: clusters sharing one trust domain
// (clusters/<c>.sharesTrustDomainWith): a sharer never writes bundles/<td> — not even to
// create it before its owner runs, not with a source of another root — and reads the
// owner's bundle like any federated one (set, files, ack); workloads of the two clusters,
// issued under the one root, do mTLS with the sharer's bundles. A sharer whose source has
// another root says so in its status.
func TestSharedTrustDomainOwnerAlonePublishes(t *testing.T) {
	env := trusttest.NewEnv(t)
	ctx := context.Background()
	const td = "mesh.example"
	key := env.St.KS.Bundle(td)
	// The owner's record first (as join requires), its service later.
	env.StartCluster("east", td, trusttest.ClusterOptions{NoService: true})
	// A misconfigured sharer: its own dev CA, another root. It must not publish it.
	rogue := env.StartCluster("rogue", td, trusttest.ClusterOptions{ShareTrustDomainWith: "east"})
	waitfor.Cond(t, 10*time.Second, func() bool { return rogue.Svc.PublishStatus().Owner == "east" }, "the sharer has checked its record")
	if _, err := store.Get[records.Bundle](ctx, env.St, key); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("%s before the owner runs: %v, want none (a sharer must not create it)", key, err)
	}

	// Now the owner runs (its record is there already: re-register only its service).
	east := env.StartCluster("east", td, trusttest.ClusterOptions{})
	west := env.StartCluster("west", td, trusttest.ClusterOptions{ShareTrustDomainWith: "east", DevCADir: east.DevDir})
	waitfor.Cond(t, 20*time.Second, func() bool {
		return east.Has(td, 1) && west.Has(td, 1) && rogue.Has(td, 1) && west.Svc.Ready() == nil
	}, "every cluster has the owner's bundle")
	it, err := store.Get[records.Bundle](ctx, env.St, key)
	if err != nil || it.Value.Owner != "east" || it.Value.Sequence != 1 {
		t.Fatalf("%s: %+v %v, want owner east at sequence 1", key, it, err)
	}
	eb, _ := east.Svc.Set().Get(td)
	roots, err := east.CA(t).Roots()
	if err != nil {
		t.Fatal(err)
	}
	if wb, _ := west.Svc.Set().Get(td); !wb.X509Roots[0].Equal(eb.X509Roots[0]) || !wb.X509Roots[0].Equal(roots[0]) {
		t.Fatal("the sharer's set does not hold the owner's root")
	}
	waitfor.Cond(t, 10*time.Second, func() bool {
		ack, err := store.Get[records.Ack](ctx, env.St, env.St.KS.Ack("west", td))
		return err == nil && ack.Value.Sequence == 1 && ack.Value.Digest == it.Value.Digest
	}, "the sharer acks the owner's bundle")
	waitfor.Cond(t, 10*time.Second, func() bool {
		ws, rs := west.Svc.PublishStatus(), rogue.Svc.PublishStatus()
		return ws.Owner == "east" && ws.Sequence == 1 && !ws.SourceDiffers && rs.Sequence == 1 && rs.SourceDiffers
	}, "statuses: west follows east with the same root, rogue's source differs")
	if st := rogue.Svc.PublishStatus(); st.Refused != "" || st.LastError != nil {
		t.Errorf("rogue status %+v", st)
	}
	// Still the owner's, at the same sequence, after the sharers had their chance.
	if it2, err := store.Get[records.Bundle](ctx, env.St, key); err != nil || it2.ModRevision != it.ModRevision {
		t.Fatalf("%s was rewritten: %+v %v", key, it2, err)
	}

	// Workloads of both clusters, under the one root, do mTLS through the federated set
	// each cluster holds.
	ca := east.CA(t)
	srv := trusttest.Serve(t, trusttest.StartWorkload(t, ca, "spiffe://mesh.example/ns/demo/sa/server"), east.Bundles(), td)
	if err := trusttest.Call(trusttest.StartWorkload(t, ca, "spiffe://mesh.example/ns/demo/sa/client"), west.Bundles(), srv.Addr, td); err != nil {
		t.Fatalf("mTLS within the shared trust domain: %v", err)
	}
}
