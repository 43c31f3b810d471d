package eastwest

import (
	"context"
	"crypto/sha256"
	"fmt"
	"log/slog"
	"os"
	"syscall"
	"time"

	"github.com/meshfed/meshfed/api/exports"
)

// FileSource is a RouteSource reading an exports file (YAML or JSON). It polls: a stat
// every Interval, and a read and content hash when the file's identity (inode, size,
// mtime) changed or every 30 polls. Polling the path (not watching an inode) follows
// atomic renames and the symlink swaps Kubernetes does when it updates a mounted ConfigMap.
type FileSource struct {
	Path     string
	Interval time.Duration // default 1s
	Log      *slog.Logger
	// OnReload, when set, is told the outcome of every reload attempt (nil for success),
	// so the gateway can count invalid files.
	OnReload func(err error)
}

var _ RouteSource = (*FileSource)(nil)

type fileID struct {
	dev, ino uint64
	size     int64
	mtime    int64
}

func statID(path string) (fileID, error) {
	st, err := os.Stat(path)
	if err != nil {
		return fileID{}, err
	}
	id := fileID{size: st.Size(), mtime: st.ModTime().UnixNano()}
	if s, ok := st.Sys().(*syscall.Stat_t); ok {
		id.dev, id.ino = uint64(s.Dev), uint64(s.Ino)
	}
	return id, nil
}

// Run implements RouteSource.
func (s *FileSource) Run(ctx context.Context, update func(*RouteTable)) error {
	log := s.Log
	if log == nil {
		log = slog.Default()
	}
	interval := s.Interval
	if interval <= 0 {
		interval = time.Second
	}
	load := func() (*RouteTable, [32]byte, error) {
		data, err := os.ReadFile(s.Path)
		if err != nil {
			return nil, [32]byte{}, fmt.Errorf("read exports file: %w", err)
		}
		sum := sha256.Sum256(data)
		f, err := exports.Parse(data)
		if err != nil {
			return nil, sum, fmt.Errorf("%s: %w", s.Path, err)
		}
		return TableFromExports(f, s.Path), sum, nil
	}
	id, _ := statID(s.Path)
	t, sum, err := load()
	if s.OnReload != nil {
		s.OnReload(err)
	}
	if err != nil {
		return err
	}
	update(t)
	tick := time.NewTicker(interval)
	defer tick.Stop()
	polls := 0
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		polls++
		nid, err := statID(s.Path)
		if err != nil {
			if nid != id {
				log.Warn("exports file unreadable; keeping the last good route table", "path", s.Path, "err", err)
				id = nid
			}
			continue
		}
		if nid == id && polls%30 != 0 {
			continue
		}
		id = nid
		t, nsum, err := load()
		if nsum == sum && err == nil {
			continue // touched but unchanged
		}
		if s.OnReload != nil {
			s.OnReload(err)
		}
		if err != nil {
			if nsum != sum {
				log.Error("exports file rejected; keeping the last good route table", "err", err)
				sum = nsum
			}
			continue
		}
		sum = nsum
		update(t)
	}
}
