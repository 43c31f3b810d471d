package exports

import (
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"syscall"
	"time"
)

// Watcher follows an exports file. It polls: a stat every Interval, and a read and content
// hash when the file's identity (device, inode, size, mtime) changed, or every 30 polls as
// a safety net. Polling the path (not an inode) follows atomic renames and the symlink
// swaps Kubernetes makes when it updates a mounted ConfigMap.
type Watcher struct {
	Path     string
	Interval time.Duration // default 1s
}

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

// Run loads the file, then calls fn on every change until ctx ends: with the parsed file,
// or with the error of a file that is unreadable or invalid (the caller keeps its last good
// state; fn is called once per distinct bad content, not on every poll). The first load's
// error is returned without calling fn, so a bad file at start fails loudly.
func (w *Watcher) Run(ctx context.Context, fn func(*File, error)) error {
	interval := w.Interval
	if interval <= 0 {
		interval = time.Second
	}
	load := func() (*File, [32]byte, error) {
		data, err := os.ReadFile(w.Path)
		if err != nil {
			return nil, [32]byte{}, fmt.Errorf("read exports file: %w", err)
		}
		sum := sha256.Sum256(data)
		f, err := Parse(data)
		if err != nil {
			return nil, sum, fmt.Errorf("%s: %w", w.Path, err)
		}
		return f, sum, nil
	}
	id, _ := statID(w.Path)
	f, sum, err := load()
	if err != nil {
		return err
	}
	fn(f, nil)
	tick := time.NewTicker(interval)
	defer tick.Stop()
	polls := 0
	var statErr string
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		polls++
		nid, err := statID(w.Path)
		if err != nil {
			if err.Error() != statErr {
				statErr = err.Error()
				fn(nil, fmt.Errorf("exports file unreadable: %w", err))
			}
			id = fileID{}
			continue
		}
		statErr = ""
		if nid == id && polls%30 != 0 {
			continue
		}
		id = nid
		f, nsum, err := load()
		if nsum == sum && err == nil {
			continue // touched but unchanged
		}
		if err != nil {
			if nsum != sum {
				sum = nsum
				fn(nil, err)
			}
			continue
		}
		sum = nsum
		fn(f, nil)
	}
}
