package planner

import (
	"slices"
	"time"
)

// DefaultMinReassign is the shortest time between two priority reassignments of one
// service, unless a cluster is going away.
const DefaultMinReassign = 10 * time.Second

// Stabilizer decides which plan is served. It damps flapping: a change that adds a
// cluster or reorders clusters (a cluster coming back, a policy edit, a new exporter) is
// held until MinInterval has passed since the service's last reassignment, while a change
// that removes a cluster from a port's list (gateway down or hard-down, cordoned, no ready
// endpoints, grace over) is applied at once, since serving a dead cluster costs more than
// moving early. Changes within the same order (weights, gateway addresses, endpoints of the
// local cluster) are applied at once and do not count as reassignments.
//
// It is not safe for concurrent use.
type Stabilizer struct {
	MinInterval time.Duration
	svcs        map[string]*stabState
}

type stabState struct {
	served       ServicePlan
	lastReassign time.Time
}

// NewStabilizer makes a stabilizer; min <= 0 takes DefaultMinReassign.
func NewStabilizer(min time.Duration) *Stabilizer {
	if min <= 0 {
		min = DefaultMinReassign
	}
	return &Stabilizer{MinInterval: min, svcs: map[string]*stabState{}}
}

// Decision is what to serve for one service.
type Decision struct {
	Plan ServicePlan
	// Changed: Plan differs from what was served before (push it).
	Changed bool
	// Reassigned: the priority order changed (counts against MinInterval).
	Reassigned bool
	// Held: the desired plan differs from Plan and is held back until RetryAt: call Apply
	// again then.
	Held    bool
	RetryAt time.Time
}

// Apply takes the desired plan of a service and returns the plan to serve now.
func (s *Stabilizer) Apply(now time.Time, desired ServicePlan) Decision {
	key := desired.Key()
	st := s.svcs[key]
	if st == nil {
		s.svcs[key] = &stabState{served: desired}
		return Decision{Plan: desired, Changed: true}
	}
	removal, reorder := false, false
	for _, pd := range desired.Ports {
		pp := st.served.Port(pd.Port)
		if pp == nil || len(pp.Levels) == 0 {
			// A new port, or one with nowhere to go: its first plan, not a reassignment
			// (there is no traffic to flap away from, and holding it would prolong an
			// outage).
			continue
		}
		sd, sp := sequence(pd.Levels), sequence(pp.Levels)
		if slices.Equal(sd, sp) {
			continue
		}
		for _, x := range sp {
			if !slices.Contains(sd, x) {
				removal = true
			}
		}
		reorder = true
	}
	for _, pp := range st.served.Ports {
		if desired.Port(pp.Port) == nil {
			removal = true // a port went away
		}
	}

	d := Decision{Plan: desired}
	switch {
	case removal:
		d.Reassigned = reorder
	case !reorder:
	case now.Sub(st.lastReassign) >= s.MinInterval:
		d.Reassigned = true
	default:
		// Hold the order; take every other change (weights, addresses, new ports).
		d.Plan = holdOrder(st.served, desired)
		d.Held, d.RetryAt = true, st.lastReassign.Add(s.MinInterval)
	}
	if d.Reassigned {
		st.lastReassign = now
	}
	d.Changed = !portsEqual(d.Plan.Ports, st.served.Ports)
	st.served = d.Plan
	return d
}

// Served returns the plan last returned for key ("namespace/name").
func (s *Stabilizer) Served(key string) (ServicePlan, bool) {
	st, ok := s.svcs[key]
	if !ok {
		return ServicePlan{}, false
	}
	return st.served, true
}

// Reserve makes room for n services before a first big pass (a full re-plan of 10k
// services otherwise spends a noticeable part of its time growing the map).
func (s *Stabilizer) Reserve(n int) {
	if len(s.svcs) == 0 && n > 0 {
		s.svcs = make(map[string]*stabState, n)
	}
}

// Forget drops a service (it is no longer imported).
func (s *Stabilizer) Forget(key string) { delete(s.svcs, key) }

// Len is the number of services tracked.
func (s *Stabilizer) Len() int { return len(s.svcs) }

type seqItem struct {
	cluster string
	direct  bool
}

func sequence(ls []Level) []seqItem {
	out := make([]seqItem, len(ls))
	for i, l := range ls {
		out[i] = seqItem{l.Cluster, l.Direct}
	}
	return out
}

// holdOrder keeps served's cluster order for every port that exists in both, with the
// desired plan's details of each cluster (desired has every served cluster: no removal).
func holdOrder(served, desired ServicePlan) ServicePlan {
	out := desired
	out.Ports = make([]PortPlan, len(desired.Ports))
	for i, pd := range desired.Ports {
		pp := served.Port(pd.Port)
		if pp == nil || len(pp.Levels) == 0 {
			out.Ports[i] = pd
			continue
		}
		np := PortPlan{Port: pd.Port, Levels: make([]Level, 0, len(pp.Levels))}
		for _, old := range pp.Levels {
			for _, l := range pd.Levels {
				if l.Cluster == old.Cluster && l.Direct == old.Direct {
					np.Levels = append(np.Levels, l)
					break
				}
			}
		}
		out.Ports[i] = np
	}
	return out
}

func portsEqual(a, b []PortPlan) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Port != b[i].Port || len(a[i].Levels) != len(b[i].Levels) {
			return false
		}
		for j := range a[i].Levels {
			if !levelEqual(&a[i].Levels[j], &b[i].Levels[j]) {
				return false
			}
		}
	}
	return true
}

func levelEqual(a, b *Level) bool {
	return a.Cluster == b.Cluster && a.Direct == b.Direct && a.Region == b.Region && a.Zone == b.Zone &&
		a.Weight == b.Weight && a.Stale == b.Stale && a.Panic == b.Panic && slices.Equal(a.Endpoints, b.Endpoints)
}

// PortsEqual reports whether two plans serve the same thing (Excluded is ignored).
func PortsEqual(a, b *ServicePlan) bool { return portsEqual(a.Ports, b.Ports) }
