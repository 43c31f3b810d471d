package xds

import (
	"github.com/meshfed/meshfed/federation/planner"
	"github.com/meshfed/meshfed/keyspace/records"
	"github.com/meshfed/meshfed/keyspace/view"
)

// PlannedService is one service's plan exactly as the server serves it (after the
// stabilizer), with its ports: what another output of the same plan needs (Istio's config
// source, federation/istio).
type PlannedService struct {
	Plan  planner.ServicePlan
	Ports []records.Port
	// Import is the merged import the plan was made from (read only): every cluster's
	// export of the service, endpoints included (federation/istio reads their service
	// accounts).
	Import *view.Service
}

// PlanUpdate is what one planning pass served: the services it planned (a superset of those
// whose plan changed) and those no longer imported (nil). The first update after start holds
// every imported service: it is a complete plan, as later ones applied in order are.
// Revision is the etcd revision of the import view the pass planned.
type PlanUpdate struct {
	Revision int64
	Services map[string]*PlannedService
	// Clusters are the cluster records of the view the pass planned, by name (read only).
	Clusters map[string]*records.Cluster
}

// notify hands a pass's plans to Options.OnPlans (on the Run goroutine: it must not block).
func (s *Server) notify(jobs []*job, dropped []string) {
	if s.opts.OnPlans == nil || (len(jobs) == 0 && len(dropped) == 0) {
		return
	}
	u := PlanUpdate{Services: make(map[string]*PlannedService, len(jobs)+len(dropped))}
	if s.view != nil {
		u.Revision, u.Clusters = s.view.Revision, s.view.Clusters
	}
	for _, j := range jobs {
		u.Services[j.key] = &PlannedService{Plan: j.dec.Plan, Ports: j.svc.Ports, Import: j.svc}
	}
	for _, k := range dropped {
		u.Services[k] = nil
	}
	s.opts.OnPlans(u)
}
