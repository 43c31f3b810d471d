package xds

import (
	"slices"

	"github.com/meshfed/meshfed/keyspace/records"
	"github.com/meshfed/meshfed/keyspace/view"
)

// sameService reports whether two imported services plan the same (cost: the size of the
// service). Exports are compared by revision and content, so a merger that rebuilds
// every Service value still only re-plans the ones that changed.
func sameService(a, b *view.Service) bool {
	if a == b {
		return true
	}
	if a == nil || b == nil || a.Namespace != b.Namespace || a.Name != b.Name ||
		!slices.Equal(a.Ports, b.Ports) || len(a.Clusters) != len(b.Clusters) {
		return false
	}
	for i := range a.Clusters {
		x, y := a.Clusters[i], b.Clusters[i]
		if x == y {
			continue
		}
		if x == nil || y == nil || x.Cluster != y.Cluster || x.Stale != y.Stale || !x.StaleSince.Equal(y.StaleSince) {
			return false
		}
		if x.Export == y.Export {
			continue
		}
		if x.Export == nil || y.Export == nil || x.Export.Revision != y.Export.Revision ||
			!x.Export.UpdatedAt.Equal(y.Export.UpdatedAt) || !x.Export.SameContent(y.Export) ||
			!slices.Equal(x.Export.Ports, y.Export.Ports) {
			return false
		}
	}
	return true
}

func sameCluster(a, b *records.Cluster) bool {
	if a == b {
		return true
	}
	if a == nil || b == nil {
		return false
	}
	return a.SameMember(b)
}

func samePolicy(a, b *records.Policy) bool {
	if a == b {
		return true
	}
	if a == nil || b == nil {
		return false
	}
	return a.IsLocalFirst() == b.IsLocalFirst() && slices.Equal(a.Order, b.Order)
}

// drillDiff returns the drills that are in one list and not (identically) in the other.
func drillDiff(a, b []*records.Drill) []*records.Drill {
	key := func(d *records.Drill) string {
		return d.ID + "|" + d.Cluster + "|" + d.Namespace + "|" + d.Service + "|" + d.Until.String() + "|" + d.Fault + "|" + d.FaultDeadline.String()
	}
	ka := map[string]*records.Drill{}
	for _, d := range a {
		if d != nil {
			ka[key(d)] = d
		}
	}
	kb := map[string]*records.Drill{}
	for _, d := range b {
		if d != nil {
			kb[key(d)] = d
		}
	}
	var out []*records.Drill
	for k, d := range ka {
		if kb[k] == nil {
			out = append(out, d)
		}
	}
	for k, d := range kb {
		if ka[k] == nil {
			out = append(out, d)
		}
	}
	return out
}

func union[V any](a, b map[string]V) map[string]bool {
	out := make(map[string]bool, len(a)+len(b))
	for k := range a {
		out[k] = true
	}
	for k := range b {
		out[k] = true
	}
	return out
}
