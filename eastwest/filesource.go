package eastwest

import (
	"context"
	"log/slog"
	"time"

	"github.com/meshfed/meshfed/api/exports"
)

// FileSource is a RouteSource reading an exports file (YAML or JSON) through the shared
// exports.Watcher: it polls the path (a stat every Interval, a read and hash on change),
// which follows atomic renames and the symlink swaps Kubernetes makes when it updates a
// mounted ConfigMap.
type FileSource struct {
	Path     string
	Interval time.Duration // default 1s
	Log      *slog.Logger
	// OnReload, when set, is told the outcome of every reload attempt (nil for success),
	// so the gateway can count invalid files.
	OnReload func(err error)
}

var _ RouteSource = (*FileSource)(nil)

// Run implements RouteSource. A bad file at start is an error; later, an invalid or
// unreadable file is logged and the last good table stays in force.
func (s *FileSource) Run(ctx context.Context, update func(*RouteTable)) error {
	log := s.Log
	if log == nil {
		log = slog.Default()
	}
	first := true
	w := &exports.Watcher{Path: s.Path, Interval: s.Interval}
	err := w.Run(ctx, func(f *exports.File, err error) {
		if s.OnReload != nil {
			s.OnReload(err)
		}
		if err != nil {
			log.Error("exports file rejected; keeping the last good route table", "path", s.Path, "err", err)
			return
		}
		first = false
		update(TableFromExports(f, s.Path))
	})
	if err != nil && first && s.OnReload != nil {
		s.OnReload(err)
	}
	return err
}
