package drill

import (
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/meshfed/meshfed/harness"
	"github.com/meshfed/meshfed/internal/waitfor"
	"github.com/meshfed/meshfed/keyspace/records"
	"github.com/meshfed/meshfed/keyspace/store"
	"github.com/meshfed/meshfed/operator"
	"github.com/meshfed/meshfed/operator/internal/optest"
)

// TestDrillReportsEveryFederation: a reset fault at west's gateway (taken there from
// west's federation over xDS). east's and north's federation services each check west's
// gateway with their own health checker and publish what they see
// (acks/<cluster>/health/<instance>); the drill, without traffic, reports for each when it
// marked west down after the fault began and up after the lift. A cordon drill leaves
// every health check up, and the report says why.
func TestDrillReportsEveryFederation(t *testing.T) {
	t.Parallel()
	ctx := optest.Ctx(t)
	f, err := harness.Start(ctx, harness.Options{GatewayRoutesFromXDS: true, Log: slog.New(slog.DiscardHandler), Clusters: []harness.ClusterSpec{
		{Name: "east"},
		{Name: "west", Exports: optest.EchoExports(optest.ClosedAddr(t))},
		{Name: "north", Region: "region-2", Exports: optest.EchoExports(optest.ClosedAddr(t))},
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Close)
	st := optest.HarnessStore(t, f)
	// Every federation has published its view, with west's gateway up.
	waitfor.Cond(t, 30*time.Second, func() bool {
		items, _, _, err := store.List[records.GatewayHealth](ctx, st, st.KS.Family(records.KindAck))
		if err != nil {
			return false
		}
		up := 0
		for _, it := range items {
			if p := it.Value.Peer("west"); p != nil && !p.Down && len(p.Gateways) == 1 && p.Gateways[0].State == "up" {
				up++
			}
		}
		return up == 2
	}, "east's and north's health records with west up")
	if s, err := operator.ReadSnapshot(ctx, st); err != nil || len(s.Bad) > 0 {
		t.Fatalf("the snapshot reads the health records: %v %v", err, s.Bad)
	}

	prog := &optest.SyncWriter{}
	rep, err := Run(ctx, st, Request{Fail: "west", Fault: "reset", Duration: 3 * time.Second, LeaseTTL: 5 * time.Second,
		RecoveryTimeout: 15 * time.Second, Progress: prog, Actor: "test"})
	if err != nil {
		t.Fatalf("drill: %v\n%s", err, prog)
	}
	var sum strings.Builder
	_ = rep.WriteTable(&sum)
	t.Logf("progress:\n%s\nsummary:\n%s", prog, sum.String())
	got := map[string]FederationMark{}
	for _, m := range rep.Federations {
		got[m.Federation] = m
	}
	if len(got) != 2 {
		t.Fatalf("federations %+v, want east and north (west does not check itself)", rep.Federations)
	}
	for _, c := range []string{"east", "north"} {
		m, ok := got[c]
		if !ok {
			t.Fatalf("no mark of %s: %+v", c, rep.Federations)
		}
		// A reset cuts the health stream: hard-down at once, once the fault has reached
		// west's gateway (etcd → west's federation → xDS).
		if m.DownAfterMs == nil || *m.DownAfterMs < 0 || *m.DownAfterMs > 2500 {
			t.Errorf("%s marked west down after %s ms, want within 2.5 s of the fault", c, ptrStr(m.DownAfterMs))
		}
		// Up after two good answers of the stream (rise threshold), within seconds.
		if m.UpAfterMs == nil || *m.UpAfterMs > 10000 {
			t.Errorf("%s marked west up %s ms after the lift, want within 10 s", c, ptrStr(m.UpAfterMs))
		}
		if !strings.HasPrefix(m.Source, "health "+st.KS.AcksOf(c)+"health/") {
			t.Errorf("%s: source %q", c, m.Source)
		}
		if !strings.Contains(sum.String(), c+"'s federation (its health checks): marked west down ") {
			t.Errorf("the summary lacks %s's marks", c)
		}
	}
	html := rep.chart()
	facts := map[string]string{}
	for _, fct := range html.Facts {
		facts[fct[0]] = fct[1]
	}
	if facts["fault"] != "reset" || !strings.HasPrefix(facts["east's federation"], "down ") {
		t.Errorf("timeline facts %v", facts)
	}

	// A cordon: nobody's health checks mark west down, and the summary says why.
	rep, err = Run(ctx, st, Request{Fail: "west", Duration: time.Second, LeaseTTL: 5 * time.Second, Actor: "test"})
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range rep.Federations {
		if m.DownAfterMs != nil || m.AlreadyDown {
			t.Errorf("a cordon: %s marked west down: %+v", m.Federation, m)
		}
	}
	sum.Reset()
	_ = rep.WriteTable(&sum)
	if !strings.Contains(sum.String(), "kept west up (a cordon leaves the gateways alone") {
		t.Errorf("cordon summary:\n%s", sum.String())
	}
}
