package xds_test

import (
	"context"
	"encoding/json"
	"net"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshfed/meshfed/eastwest"
	"github.com/meshfed/meshfed/federation/health"
	"github.com/meshfed/meshfed/federation/xds"
	"github.com/meshfed/meshfed/internal/waitfor"
	"github.com/meshfed/meshfed/keyspace/records"
	"github.com/meshfed/meshfed/keyspace/view"
)

// startGateway runs a real east-west gateway (empty route table: it answers its health
// name "ok") and returns its address.
func startGateway(t *testing.T, cluster, listen string) string {
	t.Helper()
	gw, err := eastwest.New(eastwest.Config{Cluster: cluster, Log: testLogger(t), Registry: prometheus.NewRegistry(), DrainTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	gw.SetRoutes(&eastwest.RouteTable{})
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = gw.Serve(ctx, ln); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return ln.Addr().String()
}

func remoteView(rev int64, westGW, northGW string, westStaleSince time.Time, drills ...*records.Drill) *view.View {
	exp := func(cl string) *view.ClusterExport {
		return &view.ClusterExport{Cluster: cl, Export: &records.Export{Cluster: cl, Namespace: "demo", Name: "echo",
			Type: records.TypeClusterSetIP, Ports: []records.Port{{Port: 8443, Protocol: "TCP"}},
			Endpoints: []records.Endpoint{{Address: "10.9.9.9", Ready: true}}, Revision: 1, ExportedAt: t0}}
	}
	w := exp("west")
	if !westStaleSince.IsZero() {
		w.Stale, w.StaleSince = true, westStaleSince
	}
	rec := func(name, region, gw string) *records.Cluster {
		return &records.Cluster{Name: name, Network: "n", Region: region, Zone: region + "a", TrustDomain: name + ".example",
			Gateways: []string{gw}, JoinedAt: t0}
	}
	return &view.View{Revision: rev,
		Clusters: map[string]*records.Cluster{"east": rec("east", "r1", "127.0.0.1:9"), "west": rec("west", "r1", westGW), "north": rec("north", "r2", northGW)},
		Services: map[string]*view.Service{"demo/echo": view.Merge([]*view.ClusterExport{w, exp("north")})},
		Drills:   drills,
	}
}

func order(s *xds.Server) string {
	p := s.Plans()["demo/echo"]
	out := ""
	for _, pp := range p.Ports {
		for _, l := range pp.Levels {
			out += l.Cluster + " "
		}
	}
	return out
}

// TestTimers: with no new view, the server drops a stale cluster when its grace ends and
// brings a cordoned cluster back when the drill's until passes.
func TestTimers(t *testing.T) {
	westGW := startGateway(t, "west", "127.0.0.1:0")
	northGW := startGateway(t, "north", "127.0.0.1:0")
	log := testLogger(t)
	reg := prometheus.NewRegistry()
	// Windows are wide (drill 1s, grace 4s) so that a slow, loaded CI machine still sees
	// every step: the assertions are about order, not speed.
	hc, err := health.New(health.Options{Interval: 200 * time.Millisecond, Timeout: 200 * time.Millisecond}, log, reg)
	if err != nil {
		t.Fatal(err)
	}
	feed := xds.NewFeed()
	s, err := xds.New("east", feed.C(), hc, log, reg, xds.Options{Listen: "127.0.0.1:0", StaleGrace: 4 * time.Second, MinReassign: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = hc.Run(ctx) }()
	go func() { _ = s.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })

	now := time.Now()
	feed.Send(remoteView(1, westGW, northGW, now,
		&records.Drill{ID: "d1", Cluster: "north", Until: now.Add(time.Second), StartedBy: "test", StartedAt: now}))
	waitfor.Cond(t, 5*time.Second, func() bool { return order(s) == "west " }, "west only (north cordoned): %q", order(s))
	waitfor.Cond(t, 5*time.Second, func() bool { return order(s) == "west north " }, "north back after the drill: %q", order(s))
	waitfor.Cond(t, 10*time.Second, func() bool { return order(s) == "north " }, "stale west dropped after the grace: %q", order(s))
	if time.Since(now) < 4*time.Second {
		t.Fatalf("west dropped after %v, before its grace", time.Since(now))
	}
	if err := s.Ready(); err != nil {
		t.Fatal(err)
	}

	rec := httptest.NewRecorder()
	s.DebugHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/debug/xds", nil))
	var dbg struct {
		Services []struct {
			Service string `json:"service"`
			Ports   []struct {
				Priorities []struct {
					Cluster string `json:"cluster"`
				} `json:"priorities"`
			} `json:"ports"`
		} `json:"services"`
		Gateways []struct {
			Cluster, State string
		} `json:"gateways"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &dbg); err != nil {
		t.Fatalf("/debug/xds: %v\n%s", err, rec.Body)
	}
	if len(dbg.Services) != 1 || dbg.Services[0].Service != "demo/echo" || dbg.Services[0].Ports[0].Priorities[0].Cluster != "north" || len(dbg.Gateways) != 2 {
		t.Fatalf("/debug/xds: %s", rec.Body)
	}
}
