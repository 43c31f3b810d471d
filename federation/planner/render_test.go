package planner

import "testing"

// TestRender: the one words form of a plan, as status, the xDS log, drills and dev up
// print it.
func TestRender(t *testing.T) {
	p := &ServicePlan{Namespace: "demo", Name: "echo", Ports: []PortPlan{
		{Port: 8443, Levels: []Level{{Cluster: "east", Direct: true}, {Cluster: "west"}, {Cluster: "north", Panic: true}}},
	}, Excluded: []Exclusion{{Cluster: "south", Reason: ReasonCordoned}, {Cluster: "west", Port: 9443, Reason: ReasonPortNotExported}}}
	for got, want := range map[string]string{
		p.Order():          "east(local) > west > north(panic)",
		p.String():         "east(local) > west > north(panic) [left out: south: cordoned, west port 9443: port-not-exported]",
		p.PortString(8443): "east(local) > west > north(panic) [left out: south: cordoned]",
		p.PortString(9443): "NOWHERE [left out: south: cordoned, west port 9443: port-not-exported]",
		JoinOrder(nil):     "NOWHERE",
	} {
		if got != want {
			t.Errorf("got %q, want %q", got, want)
		}
	}
	p.Ports = append(p.Ports, PortPlan{Port: 9443})
	if got, want := p.Order(), "8443: east(local) > west > north(panic); 9443: NOWHERE"; got != want {
		t.Errorf("two ports: %q, want %q", got, want)
	}
	if pr := p.Ports[0].Priorities(); len(pr) != 3 || pr[0].Priority != 0 || !pr[0].Direct || pr[2].Cluster != "north" || !pr[2].Panic {
		t.Errorf("priorities %+v", pr)
	}
}
