package operator

import (
	"crypto/x509"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/meshfed/meshfed/internal/waitfor"
	"github.com/meshfed/meshfed/keyspace/records"
	"github.com/meshfed/meshfed/trust"
	"github.com/meshfed/meshfed/trust/devca"
)

// TestStatus: liveness, live gateway probes, exports, bundle sequence, acks and root
// expiry, drills, rotations (decoded generically when unknown), and the failover order
// from a cluster's point of view; the JSON shape is the documented one.
func TestStatus(t *testing.T) {
	t.Parallel()
	ctx := tctx(t)
	f, _ := startFederation(t, ctx)
	st := harnessStore(t, f)
	waitfor.Cond(t, 15*time.Second, func() bool {
		s, err := ReadSnapshot(ctx, st)
		return err == nil && len(s.Exports["west"]) == 1 && len(s.Exports["north"]) == 1 && len(s.Alive) == 3
	}, "exports and heartbeats of every cluster")

	// west's bundle: a real root expiring in 10 days; east acked it, north did not.
	root, _, err := devca.NewRoot("west.meshfed.test", 10*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	b, err := trust.Parse("west.meshfed.test", trust.CertsPEM([]*x509.Certificate{root}), trust.ParseOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rec, err := b.WithMeta(3, 0).Record("west", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Create(ctx, st.KS.Bundle("west.meshfed.test"), rec); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Create(ctx, st.KS.Ack("east", "west.meshfed.test"), &records.Ack{Cluster: "east", TrustDomain: "west.meshfed.test", Sequence: 3, AppliedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Create(ctx, st.KS.Ack("north", "west.meshfed.test"), &records.Ack{Cluster: "north", TrustDomain: "west.meshfed.test", Sequence: 2, AppliedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	// A rotation record this binary cannot decode: shown generically.
	if _, err := st.Client().Put(ctx, st.KS.Rotation("north.meshfed.test"), `{"version":1,"id":"rot-1","phase":"some-future-phase","trustDomain":"north.meshfed.test"}`); err != nil {
		t.Fatal(err)
	}
	c, err := StartCordon(ctx, st, &records.Drill{ID: "d1", Cluster: "north", Until: time.Now().Add(time.Minute), StartedBy: "test", StartedAt: time.Now()}, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Lift(ctx)
	if err := f.Cluster("north").StopGateway(); err != nil {
		t.Fatal(err)
	}

	s, err := GetStatus(ctx, st, StatusOptions{From: "east", ProbeTimeout: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]ClusterStatus{}
	for _, c := range s.Clusters {
		byName[c.Name] = c
	}
	if len(byName) != 3 || !byName["west"].Alive || byName["west"].Exports != 1 || !byName["west"].Gateways[0].Healthy {
		t.Fatalf("west %+v", byName["west"])
	}
	if g := byName["north"].Gateways[0]; g.Healthy || g.Result != "refused" {
		t.Fatalf("north's stopped gateway %+v", g)
	}
	if bs := byName["west"].Bundle; bs == nil || bs.Sequence != 3 || bs.RootsExpire == nil {
		t.Fatalf("west bundle %+v", bs)
	}
	if len(byName["east"].AcksBehind) != 0 || strings.Join(byName["north"].AcksBehind, ",") != "west.meshfed.test" {
		t.Fatalf("acks behind: east %v north %v", byName["east"].AcksBehind, byName["north"].AcksBehind)
	}
	if w := strings.Join(s.Warnings, "\n"); !strings.Contains(w, "root of west.meshfed.test") || !strings.Contains(w, "expires in 9 days") {
		t.Fatalf("warnings %v", s.Warnings)
	}
	if len(s.Drills) != 1 || s.Drills[0].Cluster != "north" || s.Drills[0].LeaseTTL <= 0 || s.Drills[0].Service != "*" {
		t.Fatalf("drills %+v", s.Drills)
	}
	if len(s.Rotations) != 1 || s.Rotations[0].Phase != "some-future-phase" || s.Rotations[0].Raw == nil || !s.Rotations[0].Active {
		t.Fatalf("rotations %+v", s.Rotations)
	}
	if len(s.Services) != 1 {
		t.Fatalf("services %+v", s.Services)
	}
	svc := s.Services[0]
	if svc.Service != "demo/echo" || len(svc.Exporters) != 2 || len(svc.Order) != 1 {
		t.Fatalf("service %+v", svc)
	}
	lv := svc.Order[0].Levels
	if len(lv) != 1 || lv[0].Cluster != "west" || lv[0].Priority != 0 || lv[0].Weight != 1 {
		t.Fatalf("order from east %+v (north is cordoned and down)", lv)
	}

	// The JSON contract.
	raw, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"prefix", "revision", "time", "from", "order_source", "clusters", "services", "drills", "rotations", "policies", "warnings"} {
		if _, ok := m[k]; !ok {
			t.Errorf("status JSON lacks %q", k)
		}
	}
	cl := m["clusters"].([]any)[2].(map[string]any)
	for _, k := range []string{"name", "joined", "region", "zone", "network", "trust_domain", "alive", "stale", "gateways", "exports", "bundle", "acks", "acks_behind"} {
		if _, ok := cl[k]; !ok {
			t.Errorf("cluster JSON lacks %q: %v", k, cl)
		}
	}
	gw := cl["gateways"].([]any)[0].(map[string]any)
	for _, k := range []string{"address", "probed", "healthy", "result"} {
		if _, ok := gw[k]; !ok {
			t.Errorf("gateway JSON lacks %q", k)
		}
	}
	sv := m["services"].([]any)[0].(map[string]any)
	for _, k := range []string{"service", "type", "ports", "exporters", "order", "excluded"} {
		if _, ok := sv[k]; !ok {
			t.Errorf("service JSON lacks %q", k)
		}
	}
	ex := sv["exporters"].([]any)[0].(map[string]any)
	for _, k := range []string{"cluster", "ready_endpoints", "endpoints", "stale", "cordoned"} {
		if _, ok := ex[k]; !ok {
			t.Errorf("exporter JSON lacks %q", k)
		}
	}
	var tb strings.Builder
	if err := s.WriteTable(&tb); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"CLUSTERS", "west", "DOWN (refused)", "demo/echo", "LIVE DRILLS", "ROTATIONS", "warning: root of west.meshfed.test"} {
		if !strings.Contains(tb.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, tb.String())
		}
	}

	// A cluster whose federation stops goes stale.
	if err := f.Cluster("west").StopFederation(); err != nil {
		t.Fatal(err)
	}
	waitfor.Cond(t, 10*time.Second, func() bool {
		s, err := GetStatus(ctx, st, StatusOptions{NoProbe: true})
		if err != nil {
			return false
		}
		for _, c := range s.Clusters {
			if c.Name == "west" {
				return c.Stale && !c.Alive && c.LastActivity != nil
			}
		}
		return false
	}, "west stale after its heartbeat lease expired")

	if _, err := GetStatus(ctx, st, StatusOptions{From: "nowhere"}); err == nil || !strings.Contains(err.Error(), "From nowhere: not a member") {
		t.Fatalf("unknown --from: %v", err)
	}
}
