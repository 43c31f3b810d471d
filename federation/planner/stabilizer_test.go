package planner

import (
	"testing"
	"time"

	"github.com/meshfed/meshfed/federation/health"
	"github.com/meshfed/meshfed/keyspace/records"
	"github.com/meshfed/meshfed/keyspace/view"
)

// TestStabilizer walks one service through the failover story: west dies (removal: at
// once), comes back (addition: held for the rest of the interval), and weight changes in
// between (applied at once, not counted).
func TestStabilizer(t *testing.T) {
	p80 := []int32{80}
	hs := map[string]health.State{}
	v := newView(export("west", p80, "a", "b"), export("north", p80, "d"))
	plan := func(now time.Time) ServicePlan {
		in := &Input{Local: "east", View: v, Now: now, Health: healthMap(hs)}
		return PlanService(in, v.Services["demo/echo"])
	}
	s := NewStabilizer(10 * time.Second)
	now := t0
	step := func(name string, wantOrder string, changed, held bool) Decision {
		t.Helper()
		d := s.Apply(now, plan(now))
		if got := order(d.Plan.Port(80)); got != wantOrder {
			t.Fatalf("%s: served\n got: %s\nwant: %s", name, got, wantOrder)
		}
		if d.Changed != changed || d.Held != held {
			t.Fatalf("%s: changed=%v held=%v, want changed=%v held=%v", name, d.Changed, d.Held, changed, held)
		}
		return d
	}
	both := "west(10.0.0.1:15443/2,10.0.0.2:15443/2) north(10.1.0.1:15443/1)"
	step("first plan", both, true, false)
	step("nothing changed", both, false, false)

	now = now.Add(time.Second)
	hs["west/10.0.0.1:15443"], hs["west/10.0.0.2:15443"] = health.HardDown, health.HardDown
	d := step("west hard-down: removed at once", "north(10.1.0.1:15443/1)", true, false)
	if !d.Reassigned {
		t.Fatal("a removal that changes the order is a reassignment")
	}

	now = now.Add(3 * time.Second)
	hs["west/10.0.0.1:15443"], hs["west/10.0.0.2:15443"] = health.Up, health.Up
	d = step("west back after 3s: held", "north(10.1.0.1:15443/1)", false, true)
	if want := t0.Add(11 * time.Second); !d.RetryAt.Equal(want) {
		t.Fatalf("retry at %v, want %v", d.RetryAt, want)
	}

	now = now.Add(time.Second)
	v = newView(export("west", p80, "a", "b"), export("north", p80, "d", "e"))
	step("north's weight changes while west is held: applied", "north(10.1.0.1:15443/2)", true, true)

	now = t0.Add(11 * time.Second)
	d = step("interval over: west returns", "west(10.0.0.1:15443/2,10.0.0.2:15443/2) north(10.1.0.1:15443/2)", true, false)
	if !d.Reassigned {
		t.Fatal("want a reassignment")
	}

	// A policy reorder right after is held too, and a removal still goes through at once.
	now = now.Add(time.Second)
	v.Policies["demo/echo"] = &records.Policy{Namespace: "demo", Name: "echo", Order: []string{"north"}}
	step("policy reorder within the interval: held", "west(10.0.0.1:15443/2,10.0.0.2:15443/2) north(10.1.0.1:15443/2)", false, true)
	now = now.Add(time.Second)
	v.Drills = []*records.Drill{{ID: "x", Cluster: "west", Until: now.Add(time.Hour)}}
	step("cordon within the interval: at once", "north(10.1.0.1:15443/2)", true, false)

	// Forget, then a new first plan.
	s.Forget("demo/echo")
	if _, ok := s.Served("demo/echo"); ok || s.Len() != 0 {
		t.Fatal("forgotten service still served")
	}
}

func TestStabilizerPorts(t *testing.T) {
	s := NewStabilizer(0)
	if s.MinInterval != DefaultMinReassign {
		t.Fatalf("default interval %v", s.MinInterval)
	}
	mk := func(exps ...*view.ClusterExport) ServicePlan {
		v := newView(exps...)
		return PlanService(&Input{Local: "east", View: v, Now: t0}, v.Services["demo/echo"])
	}
	s.Apply(t0, mk(export("west", []int32{80}, "a")))
	// A new port with a new cluster order on it is not a reassignment.
	d := s.Apply(t0.Add(time.Second), mk(export("west", []int32{80, 90}, "a"), export("north", []int32{90}, "d")))
	if !d.Changed || d.Held || d.Reassigned || order(d.Plan.Port(90)) == "<no port>" {
		t.Fatalf("new port: %+v", d)
	}
	// Port 90 goes away: a removal, at once.
	d = s.Apply(t0.Add(2*time.Second), mk(export("west", []int32{80}, "a")))
	if !d.Changed || d.Held || d.Plan.Port(90) != nil {
		t.Fatalf("port removal: %+v", d)
	}
}

// TestStabilizerEmptyPortNotHeld: a port left with no cluster at all takes a returning
// cluster at once, whatever the interval: holding it would only prolong an outage.
func TestStabilizerEmptyPortNotHeld(t *testing.T) {
	p80 := []int32{80}
	s := NewStabilizer(10 * time.Second)
	mk := func(ready bool) ServicePlan {
		ep := "a"
		if !ready {
			ep = "a!"
		}
		v := newView(export("west", p80, ep))
		return PlanService(&Input{Local: "east", View: v, Now: t0}, v.Services["demo/echo"])
	}
	s.Apply(t0, mk(true))
	if d := s.Apply(t0.Add(time.Second), mk(false)); !d.Changed || len(d.Plan.Port(80).Levels) != 0 {
		t.Fatalf("west without ready endpoints: %+v", d)
	}
	d := s.Apply(t0.Add(2*time.Second), mk(true))
	if !d.Changed || d.Held || len(d.Plan.Port(80).Levels) != 1 {
		t.Fatalf("west back on an empty port within the interval must not be held: %+v", d)
	}
}
