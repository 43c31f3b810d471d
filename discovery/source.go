package discovery

import (
	"context"

	"github.com/meshfed/meshfed/keyspace/records"
)

// Snapshot is the complete set of this cluster's exports at one moment. Sources emit whole
// snapshots (level-triggered), never deltas: the publisher compares each export with what
// is in etcd and writes only real changes, so a source may emit as often as it likes.
type Snapshot struct {
	// Exports have Cluster, Namespace, Name, Type, SessionAffinity, Ports and Endpoints
	// set. Revision and UpdatedAt are the publisher's. ExportedAt is set when the source
	// knows the export's creation time (a ServiceExport's creationTimestamp); when zero the
	// publisher keeps the time already in etcd, or uses the time of first publication.
	Exports []*records.Export
}

// Source produces snapshots of local exports until ctx ends.
type Source interface {
	// Run calls emit with a full snapshot whenever the local exports may have changed
	// (at least once after start, when the source has synced). It returns when ctx ends
	// (nil) or on an error it cannot recover from.
	Run(ctx context.Context, emit func(Snapshot)) error
}

// ExportsOnly runs a Source for a consumer that takes the exports alone (the federation
// service's Source, which names no discovery type): each snapshot's Exports are emitted.
type ExportsOnly struct{ Source Source }

// Run runs the Source, emitting each snapshot's exports.
func (e ExportsOnly) Run(ctx context.Context, emit func(exports []*records.Export)) error {
	return e.Source.Run(ctx, func(s Snapshot) { emit(s.Exports) })
}
