package view

import (
	"fmt"
	"sort"

	"github.com/meshfed/meshfed/keyspace/records"
)

// Merge builds the imported service from every cluster's export of one service, by the MCS
// API's rules (KEP-1645): the export with the oldest ExportedAt wins (ties: cluster name);
// type and session affinity are the winner's; ports are the union by port number, and a
// port defined differently by two clusters (name, protocol or appProtocol; the target port
// is each cluster's own business) or a port name used for two numbers is a conflict that
// the older definition wins. Every exporter stays in Clusters, conflicting or not: a
// conflict is reported on the ServiceExport, it does not cut traffic.
func Merge(exps []*ClusterExport) *Service {
	if len(exps) == 0 {
		return nil
	}
	byAge := append([]*ClusterExport(nil), exps...)
	sort.SliceStable(byAge, func(i, j int) bool {
		a, b := byAge[i].Export, byAge[j].Export
		if !a.ExportedAt.Equal(b.ExportedAt) {
			return a.ExportedAt.Before(b.ExportedAt)
		}
		return a.Cluster < b.Cluster
	})
	win := byAge[0].Export
	svc := &Service{
		Namespace:       win.Namespace,
		Name:            win.Name,
		Type:            win.Type,
		SessionAffinity: affinity(win.SessionAffinity),
	}
	byNum := map[int32]records.Port{}
	numOwner := map[int32]string{}
	byName := map[string]int32{}
	for _, ce := range byAge {
		e := ce.Export
		if e.Type != svc.Type {
			svc.Conflicts = append(svc.Conflicts, Conflict{Cluster: e.Cluster, Field: "type",
				Message: fmt.Sprintf("type %s differs from %s in cluster %s (the oldest export wins)", e.Type, svc.Type, win.Cluster)})
		}
		if affinity(e.SessionAffinity) != svc.SessionAffinity {
			svc.Conflicts = append(svc.Conflicts, Conflict{Cluster: e.Cluster, Field: "sessionAffinity",
				Message: fmt.Sprintf("session affinity %s differs from %s in cluster %s (the oldest export wins)", affinity(e.SessionAffinity), svc.SessionAffinity, win.Cluster)})
		}
		for _, p := range e.Ports {
			field := fmt.Sprintf("ports[%d]", p.Port)
			if have, ok := byNum[p.Port]; ok {
				if !samePortDef(have, p) {
					svc.Conflicts = append(svc.Conflicts, Conflict{Cluster: e.Cluster, Field: field,
						Message: fmt.Sprintf("port %d is %s, but cluster %s exported it first as %s", p.Port, portDesc(p), numOwner[p.Port], portDesc(have))})
				}
				continue
			}
			if p.Name != "" {
				if n, ok := byName[p.Name]; ok && n != p.Port {
					svc.Conflicts = append(svc.Conflicts, Conflict{Cluster: e.Cluster, Field: field,
						Message: fmt.Sprintf("port name %q is port %d in cluster %s, here port %d", p.Name, n, numOwner[n], p.Port)})
					continue
				}
				byName[p.Name] = p.Port
			}
			q := p
			q.TargetPort = 0 // each cluster's gateway maps its own target ports
			byNum[p.Port] = q
			numOwner[p.Port] = e.Cluster
		}
	}
	for _, p := range byNum {
		svc.Ports = append(svc.Ports, p)
	}
	sort.Slice(svc.Ports, func(i, j int) bool { return svc.Ports[i].Port < svc.Ports[j].Port })
	svc.Clusters = append([]*ClusterExport(nil), exps...)
	sort.Slice(svc.Clusters, func(i, j int) bool { return svc.Clusters[i].Cluster < svc.Clusters[j].Cluster })
	return svc
}

// ConflictsOf returns the conflicts reported against cluster's export.
func (s *Service) ConflictsOf(cluster string) []Conflict {
	var out []Conflict
	for _, c := range s.Conflicts {
		if c.Cluster == cluster {
			out = append(out, c)
		}
	}
	return out
}

// Exporter returns cluster's export of the service, or nil.
func (s *Service) Exporter(cluster string) *ClusterExport {
	for _, c := range s.Clusters {
		if c.Cluster == cluster {
			return c
		}
	}
	return nil
}

// HasPort reports whether the merged service has port n.
func (s *Service) HasPort(n int32) bool {
	for _, p := range s.Ports {
		if p.Port == n {
			return true
		}
	}
	return false
}

func affinity(a string) string {
	if a == "" {
		return records.AffinityNone
	}
	return a
}

func samePortDef(a, b records.Port) bool {
	return a.Name == b.Name && a.Protocol == b.Protocol && a.AppProtocol == b.AppProtocol
}

func portDesc(p records.Port) string {
	s := fmt.Sprintf("%d/%s", p.Port, p.Protocol)
	if p.Name != "" {
		s = p.Name + " " + s
	}
	if p.AppProtocol != "" {
		s += " appProtocol " + p.AppProtocol
	}
	return s
}
