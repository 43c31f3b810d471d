package file

import (
	"context"
	"log/slog"
	"time"

	"github.com/meshfed/meshfed/api/exports"
	"github.com/meshfed/meshfed/discovery"
	"github.com/meshfed/meshfed/keyspace/records"
)

// Source publishes the services of an exports file as cluster's exports.
type Source struct {
	Cluster  string
	Path     string
	Interval time.Duration // poll interval, default 1s
	Log      *slog.Logger
	// OnReload, if set, is told the outcome of every reload (nil for success).
	OnReload func(error)
}

var _ discovery.Source = (*Source)(nil)

// Run implements discovery.Source. A bad file at start is an error; later bad edits are
// reported and the last good snapshot stays.
func (s *Source) Run(ctx context.Context, emit func(discovery.Snapshot)) error {
	log := s.Log
	if log == nil {
		log = slog.Default()
	}
	w := &exports.Watcher{Path: s.Path, Interval: s.Interval}
	return w.Run(ctx, func(f *exports.File, err error) {
		if s.OnReload != nil {
			s.OnReload(err)
		}
		if err != nil {
			log.Error("exports file rejected; the last good exports stay published", "path", s.Path, "err", err)
			return
		}
		emit(Snapshot(s.Cluster, f))
	})
}

// Snapshot converts a parsed exports file into cluster's export records.
func Snapshot(cluster string, f *exports.File) discovery.Snapshot {
	snap := discovery.Snapshot{Exports: make([]*records.Export, 0, len(f.Services))}
	for i := range f.Services {
		snap.Exports = append(snap.Exports, records.ExportFromService(cluster, &f.Services[i]))
	}
	return snap
}
