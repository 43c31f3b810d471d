package service

import (
	"encoding/json"
	"net/http"
	"sort"
	"time"

	"github.com/meshfed/meshfed/keyspace/records"
	"github.com/meshfed/meshfed/keyspace/view"
)

// ImportEntry is one service of the /debug/imports table.
type ImportEntry struct {
	Namespace string          `json:"namespace"`
	Name      string          `json:"name"`
	Type      string          `json:"type"`
	Ports     []records.Port  `json:"ports"`
	Clusters  []ImportCluster `json:"clusters"`
	Conflicts []view.Conflict `json:"conflicts,omitempty"`
}

// ImportCluster is one exporter of an ImportEntry.
type ImportCluster struct {
	Cluster        string     `json:"cluster"`
	ReadyEndpoints int        `json:"ready_endpoints"`
	Stale          bool       `json:"stale"`
	StaleSince     *time.Time `json:"stale_since,omitempty"`
	Revision       int64      `json:"revision"`
}

// ImportTable renders a view as the /debug/imports table, sorted by namespace/name.
func ImportTable(v *view.View) []ImportEntry {
	keys := make([]string, 0, len(v.Services))
	for k := range v.Services {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make([]ImportEntry, 0, len(keys))
	for _, k := range keys {
		s := v.Services[k]
		e := ImportEntry{Namespace: s.Namespace, Name: s.Name, Type: s.Type, Ports: s.Ports, Conflicts: s.Conflicts}
		if e.Ports == nil {
			e.Ports = []records.Port{}
		}
		for _, c := range s.Clusters {
			ic := ImportCluster{Cluster: c.Cluster, ReadyEndpoints: c.ReadyEndpoints(), Stale: c.Stale, Revision: c.Export.Revision}
			if c.Stale {
				t := c.StaleSince.UTC()
				ic.StaleSince = &t
			}
			e.Clusters = append(e.Clusters, ic)
		}
		out = append(out, e)
	}
	return out
}

// ImportsHandler serves the current import view as JSON (mount at /debug/imports).
func (s *Service) ImportsHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(ImportTable(s.View()))
	})
}
