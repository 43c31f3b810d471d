package planner

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meshfed/meshfed/federation/health"
	"github.com/meshfed/meshfed/keyspace/records"
	"github.com/meshfed/meshfed/keyspace/view"
)

var t0 = time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)

func cluster(name, region string, gws ...string) *records.Cluster {
	return &records.Cluster{Name: name, Network: "n", Region: region, Zone: region + "a",
		TrustDomain: name + ".example", Gateways: gws, JoinedAt: t0}
}

// export of demo/echo by cl with ports (port:target) and endpoints "addr" (ready) or
// "addr!" (not ready).
func export(cl string, ports []int32, eps ...string) *view.ClusterExport {
	e := &records.Export{Cluster: cl, Namespace: "demo", Name: "echo", Type: records.TypeClusterSetIP,
		Revision: 1, ExportedAt: t0}
	for _, p := range ports {
		e.Ports = append(e.Ports, records.Port{Port: p, TargetPort: p + 1000, Protocol: "TCP"})
	}
	for _, a := range eps {
		addr, notReady := strings.CutSuffix(a, "!")
		e.Endpoints = append(e.Endpoints, records.Endpoint{Address: addr, Zone: cl + "-z1", Ready: !notReady})
	}
	return &view.ClusterExport{Cluster: cl, Export: e}
}

func newView(exps ...*view.ClusterExport) *view.View {
	v := &view.View{
		Revision: 7,
		Clusters: map[string]*records.Cluster{
			"east":  cluster("east", "r1", "10.9.0.1:15443"),
			"west":  cluster("west", "r1", "10.0.0.1:15443", "10.0.0.2:15443"),
			"north": cluster("north", "r2", "10.1.0.1:15443"),
			"south": cluster("south", "r2", "10.2.0.1:15443"),
		},
		Services: map[string]*view.Service{},
		Policies: map[string]*records.Policy{},
	}
	if len(exps) > 0 {
		v.Services["demo/echo"] = view.Merge(exps)
	}
	return v
}

// order renders a port plan as "east*(eps) west(eps) ..." (* = direct).
func order(pp *PortPlan) string {
	if pp == nil {
		return "<no port>"
	}
	var parts []string
	for _, l := range pp.Levels {
		s := l.Cluster
		if l.Direct {
			s += "*"
		}
		if l.Panic {
			s += "!"
		}
		var eps []string
		for _, e := range l.Endpoints {
			eps = append(eps, fmt.Sprintf("%s/%d", e.HostPort(), e.Weight))
		}
		parts = append(parts, s+"("+strings.Join(eps, ",")+")")
	}
	return strings.Join(parts, " ")
}

func healthMap(m map[string]health.State) func(string, string) health.State {
	return func(c, a string) health.State { return m[c+"/"+a] }
}

func boolp(b bool) *bool { return &b }

func TestPlanService(t *testing.T) {
	p80 := []int32{80}
	type tc struct {
		name    string
		v       *view.View
		local   string
		health  map[string]health.State
		mutate  func(v *view.View)
		port    uint32
		want    string
		exclude []string // "cluster:reason"
	}
	cases := []tc{
		{
			name:  "local first, then same region, then others",
			v:     newView(export("east", p80, "10.9.1.1", "10.9.1.2!"), export("west", p80, "a", "b", "c!"), export("north", p80, "d")),
			local: "east", port: 80,
			want: "east*(10.9.1.1:1080/1) west(10.0.0.1:15443/2,10.0.0.2:15443/2) north(10.1.0.1:15443/1)",
		},
		{
			name:  "no ready local endpoints: nearest remote is priority 0",
			v:     newView(export("east", p80, "10.9.1.1!"), export("west", p80, "a"), export("north", p80, "d")),
			local: "east", port: 80,
			want:    "west(10.0.0.1:15443/1,10.0.0.2:15443/1) north(10.1.0.1:15443/1)",
			exclude: []string{"east:no-ready-endpoints"},
		},
		{
			name:  "exported by west and north only",
			v:     newView(export("west", p80, "a"), export("north", p80, "d")),
			local: "east", port: 80,
			want: "west(10.0.0.1:15443/1,10.0.0.2:15443/1) north(10.1.0.1:15443/1)",
		},
		{
			name:  "other region ties by name",
			v:     newView(export("south", p80, "a"), export("north", p80, "d"), export("west", p80, "x")),
			local: "east", port: 80,
			want: "west(10.0.0.1:15443/1,10.0.0.2:15443/1) north(10.1.0.1:15443/1) south(10.2.0.1:15443/1)",
		},
		{
			name:   "local cluster not joined: no region known, by name",
			v:      newView(export("south", p80, "a"), export("north", p80, "d"), export("west", p80, "x")),
			mutate: func(v *view.View) { delete(v.Clusters, "east") },
			local:  "east", port: 80,
			want: "north(10.1.0.1:15443/1) south(10.2.0.1:15443/1) west(10.0.0.1:15443/1,10.0.0.2:15443/1)",
		},
		{
			name: "policy order overrides, local still first",
			v:    newView(export("east", p80, "10.9.1.1"), export("west", p80, "a"), export("north", p80, "d"), export("south", p80, "e")),
			mutate: func(v *view.View) {
				v.Policies["demo/echo"] = &records.Policy{Namespace: "demo", Name: "echo", Order: []string{"south", "gone"}}
			},
			local: "east", port: 80,
			want: "east*(10.9.1.1:1080/1) south(10.2.0.1:15443/1) west(10.0.0.1:15443/1,10.0.0.2:15443/1) north(10.1.0.1:15443/1)",
		},
		{
			name: "policy localFirst=false: local ranks like a same-region cluster",
			v:    newView(export("east", p80, "10.9.1.1"), export("west", p80, "a"), export("north", p80, "d"), export("south", p80, "e")),
			mutate: func(v *view.View) {
				v.Policies["demo/echo"] = &records.Policy{Namespace: "demo", Name: "echo", Order: []string{"north"}, LocalFirst: boolp(false)}
			},
			local: "east", port: 80,
			want: "north(10.1.0.1:15443/1) east*(10.9.1.1:1080/1) west(10.0.0.1:15443/1,10.0.0.2:15443/1) south(10.2.0.1:15443/1)",
		},
		{
			name:  "one gateway address down keeps the other",
			v:     newView(export("west", p80, "a", "b"), export("north", p80, "d")),
			local: "east", port: 80,
			health: map[string]health.State{"west/10.0.0.1:15443": health.Down, "west/10.0.0.2:15443": health.Up},
			want:   "west(10.0.0.2:15443/2) north(10.1.0.1:15443/1)",
		},
		{
			name:  "all of a cluster's gateways down removes it",
			v:     newView(export("west", p80, "a", "b"), export("north", p80, "d")),
			local: "east", port: 80,
			health:  map[string]health.State{"west/10.0.0.1:15443": health.HardDown, "west/10.0.0.2:15443": health.Down, "north/10.1.0.1:15443": health.Up},
			want:    "north(10.1.0.1:15443/1)",
			exclude: []string{"west:gateway-down"},
		},
		{
			name:  "every remote down and nothing local: panic keeps them all",
			v:     newView(export("west", p80, "a"), export("north", p80, "d")),
			local: "east", port: 80,
			health: map[string]health.State{"west/10.0.0.1:15443": health.Down, "west/10.0.0.2:15443": health.Down, "north/10.1.0.1:15443": health.HardDown},
			want:   "west!(10.0.0.1:15443/1,10.0.0.2:15443/1) north!(10.1.0.1:15443/1)",
		},
		{
			name:  "every remote down but local endpoints ready: no panic",
			v:     newView(export("east", p80, "10.9.1.1"), export("west", p80, "a")),
			local: "east", port: 80,
			health:  map[string]health.State{"west/10.0.0.1:15443": health.Down, "west/10.0.0.2:15443": health.Down},
			want:    "east*(10.9.1.1:1080/1)",
			exclude: []string{"west:gateway-down"},
		},
		{
			name:  "cordoned for this service",
			v:     newView(export("west", p80, "a"), export("north", p80, "d")),
			local: "east", port: 80,
			mutate: func(v *view.View) {
				v.Drills = []*records.Drill{{ID: "d1", Cluster: "west", Namespace: "demo", Service: "echo", Until: t0.Add(time.Hour)}}
			},
			want:    "north(10.1.0.1:15443/1)",
			exclude: []string{"west:cordoned"},
		},
		{
			name:  "cordoned for every service, local cluster too",
			v:     newView(export("east", p80, "10.9.1.1"), export("west", p80, "a"), export("north", p80, "d")),
			local: "east", port: 80,
			mutate: func(v *view.View) {
				v.Drills = []*records.Drill{{ID: "d1", Cluster: "east", Until: t0.Add(time.Hour)}}
			},
			want:    "west(10.0.0.1:15443/1,10.0.0.2:15443/1) north(10.1.0.1:15443/1)",
			exclude: []string{"east:cordoned"},
		},
		{
			name:  "a drill past its until, or for another service, does nothing",
			v:     newView(export("west", p80, "a"), export("north", p80, "d")),
			local: "east", port: 80,
			mutate: func(v *view.View) {
				v.Drills = []*records.Drill{
					{ID: "d1", Cluster: "west", Until: t0.Add(-time.Second)},
					{ID: "d2", Cluster: "north", Namespace: "demo", Service: "other", Until: t0.Add(time.Hour)},
				}
			},
			want: "west(10.0.0.1:15443/1,10.0.0.2:15443/1) north(10.1.0.1:15443/1)",
		},
		{
			name:  "a gateway fault is no cordon: health checks must find it",
			v:     newView(export("west", p80, "a"), export("north", p80, "d")),
			local: "east", port: 80,
			mutate: func(v *view.View) {
				v.Drills = []*records.Drill{{ID: "d1", Cluster: "west", Until: t0.Add(time.Hour), Fault: "blackhole", FaultDeadline: t0.Add(time.Hour)}}
			},
			want: "west(10.0.0.1:15443/1,10.0.0.2:15443/1) north(10.1.0.1:15443/1)",
		},
		{
			name:  "stale within the grace stays",
			v:     newView(export("west", p80, "a"), export("north", p80, "d")),
			local: "east", port: 80,
			mutate: func(v *view.View) {
				ce := v.Services["demo/echo"].Exporter("west")
				ce.Stale, ce.StaleSince = true, t0.Add(-9*time.Minute)
			},
			want: "west(10.0.0.1:15443/1,10.0.0.2:15443/1) north(10.1.0.1:15443/1)",
		},
		{
			name:  "stale past the grace goes",
			v:     newView(export("west", p80, "a"), export("north", p80, "d")),
			local: "east", port: 80,
			mutate: func(v *view.View) {
				ce := v.Services["demo/echo"].Exporter("west")
				ce.Stale, ce.StaleSince = true, t0.Add(-10*time.Minute)
			},
			want:    "north(10.1.0.1:15443/1)",
			exclude: []string{"west:stale-expired"},
		},
		{
			name:  "remote with zero ready endpoints left out",
			v:     newView(export("west", p80, "a!"), export("north", p80, "d")),
			local: "east", port: 80,
			want:    "north(10.1.0.1:15443/1)",
			exclude: []string{"west:no-ready-endpoints"},
		},
		{
			name:  "a port only some clusters export",
			v:     newView(export("west", []int32{80, 90}, "a"), export("north", p80, "d")),
			local: "east", port: 90,
			want:    "west(10.0.0.1:15443/1,10.0.0.2:15443/1)",
			exclude: []string{"north:port-not-exported"},
		},
		{
			name:  "exporter that has not joined (no gateways known)",
			v:     newView(export("west", p80, "a"), export("mars", p80, "d")),
			local: "east", port: 80,
			want:    "west(10.0.0.1:15443/1,10.0.0.2:15443/1)",
			exclude: []string{"mars:no-cluster-record"},
		},
		{
			name:  "an address listed twice is served once",
			v:     newView(export("west", p80, "a"), export("north", p80, "d")),
			local: "east", port: 80,
			mutate: func(v *view.View) { v.Clusters["north"].Gateways = []string{"10.0.0.1:15443"} },
			want:   "west(10.0.0.1:15443/1,10.0.0.2:15443/1)",
		},
		{
			name:  "local endpoint weights",
			v:     newView(export("east", p80, "10.9.1.2", "10.9.1.1")),
			local: "east", port: 80,
			mutate: func(v *view.View) { v.Services["demo/echo"].Clusters[0].Export.Endpoints[0].Weight = 5 },
			want:   "east*(10.9.1.1:1080/1,10.9.1.2:1080/5)",
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.mutate != nil {
				c.mutate(c.v)
			}
			in := &Input{Local: c.local, View: c.v, Now: t0}
			if c.health != nil {
				in.Health = healthMap(c.health)
			}
			plan := PlanService(in, c.v.Services["demo/echo"])
			if got := order(plan.Port(c.port)); got != c.want {
				t.Fatalf("port %d plan\n got: %s\nwant: %s", c.port, got, c.want)
			}
			var ex []string
			for _, e := range plan.Excluded {
				ex = append(ex, e.Cluster+":"+e.Reason)
			}
			for _, w := range c.exclude {
				if !slices.Contains(ex, w) {
					t.Errorf("exclusions %v lack %s", ex, w)
				}
			}
			checkInvariants(t, in, &plan)
		})
	}
}

// checkInvariants holds for every plan: no address twice in a port, only positive
// weights, no excluded cluster served, locality filled from the record.
func checkInvariants(t *testing.T, in *Input, plan *ServicePlan) {
	t.Helper()
	for _, pp := range plan.Ports {
		seen := map[string]bool{}
		clusters := map[string]bool{}
		for _, l := range pp.Levels {
			if clusters[l.Cluster] {
				t.Fatalf("port %d: cluster %s twice", pp.Port, l.Cluster)
			}
			clusters[l.Cluster] = true
			if len(l.Endpoints) == 0 || l.Weight == 0 {
				t.Fatalf("port %d: empty or weightless level %+v", pp.Port, l)
			}
			if rec := in.View.Clusters[l.Cluster]; rec != nil && (l.Region != rec.Region || l.Zone != rec.Zone) {
				t.Fatalf("level %s locality %s/%s, record %s/%s", l.Cluster, l.Region, l.Zone, rec.Region, rec.Zone)
			}
			for _, e := range l.Endpoints {
				if seen[e.HostPort()] {
					t.Fatalf("port %d: %s twice", pp.Port, e.HostPort())
				}
				seen[e.HostPort()] = true
				if e.Weight == 0 {
					t.Fatalf("zero weight endpoint %+v", e)
				}
			}
		}
		for _, x := range plan.Excluded {
			if (x.Port == 0 || x.Port == pp.Port) && clusters[x.Cluster] {
				t.Fatalf("port %d serves excluded cluster %s (%s)", pp.Port, x.Cluster, x.Reason)
			}
		}
	}
}

func TestNextEvent(t *testing.T) {
	v := newView(export("west", []int32{80}, "a"), export("north", []int32{80}, "d"))
	ce := v.Services["demo/echo"].Exporter("west")
	ce.Stale, ce.StaleSince = true, t0.Add(-time.Minute)
	v.Drills = []*records.Drill{{ID: "d", Cluster: "north", Until: t0.Add(time.Minute)}}
	in := &Input{Local: "east", View: v, Now: t0}
	if got, want := NextEvent(in, v.Services["demo/echo"]), t0.Add(time.Minute); !got.Equal(want) {
		t.Fatalf("next event %v, want %v (drill end before grace end)", got, want)
	}
	v.Drills = nil
	if got, want := NextEvent(in, v.Services["demo/echo"]), t0.Add(9*time.Minute); !got.Equal(want) {
		t.Fatalf("next event %v, want %v (grace end)", got, want)
	}
}

// TestPlanRandomized checks the invariants over random views and health.
func TestPlanRandomized(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	names := []string{"east", "west", "north", "south", "mars"}
	states := []health.State{health.Unknown, health.Up, health.Down, health.HardDown}
	for i := 0; i < 2000; i++ {
		var exps []*view.ClusterExport
		for _, n := range names {
			if r.IntN(3) == 0 {
				continue
			}
			var eps []string
			for j := 0; j < r.IntN(4); j++ {
				a := fmt.Sprintf("10.%d.0.%d", r.IntN(3), r.IntN(3)+1)
				if r.IntN(3) == 0 {
					a += "!"
				}
				eps = append(eps, a)
			}
			ports := []int32{80}
			if r.IntN(2) == 0 {
				ports = append(ports, 90)
			}
			ce := export(n, ports, eps...)
			ce.Export.Endpoints = dedupe(ce.Export.Endpoints)
			if r.IntN(4) == 0 {
				ce.Stale, ce.StaleSince = true, t0.Add(-time.Duration(r.IntN(20))*time.Minute)
			}
			exps = append(exps, ce)
		}
		if len(exps) == 0 {
			continue
		}
		v := newView(exps...)
		if r.IntN(3) == 0 {
			v.Drills = []*records.Drill{{ID: "d", Cluster: names[r.IntN(len(names))], Until: t0.Add(time.Minute)}}
		}
		if r.IntN(3) == 0 {
			v.Policies["demo/echo"] = &records.Policy{Namespace: "demo", Name: "echo",
				Order: []string{names[r.IntN(len(names))]}, LocalFirst: boolp(r.IntN(2) == 0)}
		}
		hs := map[string]health.State{}
		for _, c := range v.Clusters {
			for _, g := range c.Gateways {
				hs[c.Name+"/"+g] = states[r.IntN(len(states))]
			}
		}
		in := &Input{Local: "east", View: v, Now: t0, Health: healthMap(hs)}
		plan := PlanService(in, v.Services["demo/echo"])
		checkInvariants(t, in, &plan)
	}
}

func dedupe(eps []records.Endpoint) []records.Endpoint {
	seen := map[string]bool{}
	var out []records.Endpoint
	for _, e := range eps {
		if !seen[e.Address] {
			seen[e.Address] = true
			out = append(out, e)
		}
	}
	return out
}
