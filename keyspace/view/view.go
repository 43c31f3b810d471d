package view

import (
	"time"

	"github.com/meshfed/meshfed/keyspace/records"
)

// View is the import view at one etcd revision. Treat it as immutable: the federation
// service builds a new View on every change and shares it read-only.
type View struct {
	// Revision is the etcd revision the view reflects.
	Revision int64
	// Services by "namespace/name", each sorted by cluster name.
	Services map[string]*Service
	// Clusters known from clusters/ records, by name (a cluster may export before it joins).
	Clusters map[string]*records.Cluster
	// Alive is the set of clusters whose heartbeat key currently exists.
	Alive map[string]bool
	// Drills are the live cordons.
	Drills []*records.Drill
	// Policies by "namespace/name".
	Policies map[string]*records.Policy
	// Changed, when not nil, lists the keys of the services that may differ from the
	// previous view the same producer published (a superset is fine); consumers then look
	// only at those instead of comparing every service. nil means unknown: compare all.
	// A channel or callback chain that drops views must merge the lists of the views it
	// drops (xds.Feed does).
	Changed []string
}

// Service is one imported service: the merge of every cluster's export of it.
type Service struct {
	Namespace string
	Name      string
	// Type and SessionAffinity are those of the winning (oldest) export.
	Type            string
	SessionAffinity string
	// Ports is the union of all exporters' ports (by port number), with the winning
	// definition for a port that is defined differently.
	Ports []records.Port
	// Clusters exporting the service, sorted by name.
	Clusters []*ClusterExport
	// Conflicts lists exporters whose definition disagrees with the winner; empty when none.
	Conflicts []Conflict
}

// ClusterExport is one cluster's export as seen by the importer.
type ClusterExport struct {
	Cluster string
	Export  *records.Export
	// Stale is set when the cluster's heartbeat is gone; StaleSince says when it was seen
	// gone. A stale export is kept (static stability) until the grace period ends.
	Stale      bool
	StaleSince time.Time
}

// Cordoned reports whether a live cordon drill of the view covers the service in cluster:
// importers then treat that cluster's endpoints of the service as not ready.
func (v *View) Cordoned(cluster, namespace, name string) bool {
	for _, d := range v.Drills {
		if d.Cordons() && d.Covers(cluster, namespace, name) {
			return true
		}
	}
	return false
}

// ReadyEndpoints is the export's ready endpoint count.
func (c *ClusterExport) ReadyEndpoints() int { return c.Export.ReadyEndpoints() }

// Conflict is one exporter disagreeing with the winning export (MCS API: port definitions,
// type or session affinity; the oldest export wins).
type Conflict struct {
	Cluster string
	Field   string // "type", "sessionAffinity" or "ports[<port>]"
	Message string
}

// Key is "namespace/name".
func Key(namespace, name string) string { return namespace + "/" + name }
