package xds

import (
	"encoding/json"
	"net/http"
	"sort"

	"github.com/meshfed/meshfed/federation/health"
	"github.com/meshfed/meshfed/federation/planner"
)

// debugPlan is one served plan as /debug/xds shows it.
type debugPlan struct {
	Service  string              `json:"service"`
	Ports    []debugPort         `json:"ports"`
	Excluded []planner.Exclusion `json:"excluded,omitempty"`
}

type debugPort struct {
	Port       uint32             `json:"port"`
	Priorities []planner.Priority `json:"priorities"`
}

type debugGateway struct {
	Cluster   string `json:"cluster"`
	Gateway   string `json:"gateway"`
	State     string `json:"state"`
	Since     string `json:"since"`
	LastError string `json:"last_error,omitempty"`
}

// DebugHandler serves the plans being served, and the gateway health states when the
// health source is a *health.Checker, as JSON (mount it at /debug/xds on the admin server).
func (s *Server) DebugHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		plans := s.Plans()
		out := struct {
			Services []debugPlan    `json:"services"`
			Gateways []debugGateway `json:"gateways,omitempty"`
		}{Services: []debugPlan{}}
		for key, p := range plans {
			dp := debugPlan{Service: key, Excluded: p.Excluded}
			for _, pp := range p.Ports {
				dp.Ports = append(dp.Ports, debugPort{Port: pp.Port, Priorities: pp.Priorities()})
			}
			out.Services = append(out.Services, dp)
		}
		sort.Slice(out.Services, func(i, j int) bool { return out.Services[i].Service < out.Services[j].Service })
		if c, ok := s.hc.(*health.Checker); ok {
			for _, st := range c.Statuses() {
				out.Gateways = append(out.Gateways, debugGateway{Cluster: st.Cluster, Gateway: st.Addr, State: st.State.String(),
					Since: st.Since.UTC().Format("2006-01-02T15:04:05.000Z"), LastError: st.LastError})
			}
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(out)
	})
}
