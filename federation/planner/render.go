package planner

import (
	"fmt"
	"strings"
)

// The one rendering of a failover order, in words (String) and as JSON (Priority,
// Exclusion): status, the xDS server's log and /debug/xds page, drills and dev up all
// use it.

// Nowhere is the order of a port that no cluster serves.
const Nowhere = "NOWHERE"

// String is the cluster, marked "(local)" when its own endpoints are dialled directly
// and "(panic)" when the plan ignores health.
func (l Level) String() string {
	s := l.Cluster
	if l.Direct {
		s += "(local)"
	}
	if l.Panic {
		s += "(panic)"
	}
	return s
}

// JoinOrder writes clusters in priority order: "west > north", or Nowhere when empty.
func JoinOrder(clusters []string) string {
	if len(clusters) == 0 {
		return Nowhere
	}
	return strings.Join(clusters, " > ")
}

// String is the port's order, e.g. "west(local) > north".
func (p PortPlan) String() string {
	ls := make([]string, 0, len(p.Levels))
	for _, l := range p.Levels {
		ls = append(ls, l.String())
	}
	return JoinOrder(ls)
}

// String is "west: cordoned", or "west port 8443: port-not-exported" for one port.
func (x Exclusion) String() string {
	if x.Port != 0 {
		return fmt.Sprintf("%s port %d: %s", x.Cluster, x.Port, x.Reason)
	}
	return x.Cluster + ": " + x.Reason
}

// Order is the order of every port: one port's alone, several as "8443: west > north;
// 9443: north".
func (p *ServicePlan) Order() string {
	if len(p.Ports) == 1 {
		return p.Ports[0].String()
	}
	if len(p.Ports) == 0 {
		return Nowhere
	}
	parts := make([]string, 0, len(p.Ports))
	for _, pp := range p.Ports {
		parts = append(parts, fmt.Sprintf("%d: %s", pp.Port, pp.String()))
	}
	return strings.Join(parts, "; ")
}

// LeftOut is "left out: west: cordoned, east: gateway-down" for the exclusions that
// concern port (0: every port), or "" when there are none.
func (p *ServicePlan) LeftOut(port uint32) string {
	var why []string
	for _, x := range p.Excluded {
		if port == 0 || x.Port == 0 || x.Port == port {
			why = append(why, x.String())
		}
	}
	if len(why) == 0 {
		return ""
	}
	return "left out: " + strings.Join(why, ", ")
}

// String is Order with what is left out, e.g. "west(local) > north [left out: east:
// cordoned]".
func (p *ServicePlan) String() string {
	s := p.Order()
	if lo := p.LeftOut(0); lo != "" {
		s += " [" + lo + "]"
	}
	return s
}

// PortString is one port's order with what is left out of it.
func (p *ServicePlan) PortString(port uint32) string {
	s := Nowhere
	if pp := p.Port(port); pp != nil {
		s = pp.String()
	}
	if lo := p.LeftOut(port); lo != "" {
		s += " [" + lo + "]"
	}
	return s
}

// Priority is the JSON form of one level of a port's order.
type Priority struct {
	Priority  int      `json:"priority"`
	Cluster   string   `json:"cluster"`
	Direct    bool     `json:"direct"`
	Weight    uint32   `json:"weight"`
	Endpoints []string `json:"endpoints"`
	Stale     bool     `json:"stale,omitempty"`
	Panic     bool     `json:"panic,omitempty"`
}

// Priorities is the port's levels in their JSON form.
func (p PortPlan) Priorities() []Priority {
	out := make([]Priority, 0, len(p.Levels))
	for i, l := range p.Levels {
		pr := Priority{Priority: i, Cluster: l.Cluster, Direct: l.Direct, Weight: l.Weight, Stale: l.Stale, Panic: l.Panic}
		for _, e := range l.Endpoints {
			pr.Endpoints = append(pr.Endpoints, e.HostPort())
		}
		out = append(out, pr)
	}
	return out
}
