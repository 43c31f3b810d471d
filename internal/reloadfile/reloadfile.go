package reloadfile

import (
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"
)

// DefaultCheckInterval is how often Get looks at the files at most.
const DefaultCheckInterval = time.Second

// File is a value loaded from Paths by Load. Make it with New.
type File[T any] struct {
	paths []string
	load  func() (T, error)
	every time.Duration
	// OnReload, when set, is told of every reload attempt after the first load (nil for
	// success): to log and count failures while the last good value stays in force.
	onReload func(error)

	mu      sync.Mutex
	val     T
	have    bool
	stamp   []stamp
	checked time.Time
}

type stamp struct {
	size int64
	mod  time.Time
}

// Options tune New.
type Options struct {
	// CheckInterval is how often Get stats the files at most (default 1s).
	CheckInterval time.Duration
	// OnReload is told the outcome of each reload after the first (nil for success).
	OnReload func(error)
}

// New loads the value once now (a wrong path fails at start, not at the first use) and
// returns the File that keeps it fresh.
func New[T any](load func() (T, error), opts Options, paths ...string) (*File[T], error) {
	if len(paths) == 0 {
		return nil, errors.New("reloadfile: no path")
	}
	if opts.CheckInterval <= 0 {
		opts.CheckInterval = DefaultCheckInterval
	}
	f := &File[T]{paths: paths, load: load, every: opts.CheckInterval, onReload: opts.OnReload}
	if _, err := f.Get(); err != nil {
		return nil, err
	}
	return f, nil
}

// Get returns the value, reloading it first when a file changed since the last load and
// the check interval has passed. When a reload fails the last good value is returned
// (and OnReload told); before any good load the error is returned.
func (f *File[T]) Get() (T, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	now := time.Now()
	if f.have && now.Sub(f.checked) < f.every {
		return f.val, nil
	}
	f.checked = now
	st, err := f.stat()
	if err == nil && f.have && sameStamps(st, f.stamp) {
		return f.val, nil
	}
	if err == nil {
		var v T
		if v, err = f.load(); err == nil {
			reloaded := f.have
			f.val, f.have, f.stamp = v, true, st
			if reloaded && f.onReload != nil {
				f.onReload(nil)
			}
			return v, nil
		}
	}
	if !f.have {
		var zero T
		return zero, err
	}
	// Keep the last good value; the stamps stay old, so the next check tries again.
	if f.onReload != nil {
		f.onReload(err)
	}
	return f.val, nil
}

func (f *File[T]) stat() ([]stamp, error) {
	out := make([]stamp, len(f.paths))
	for i, p := range f.paths {
		fi, err := os.Stat(p)
		if err != nil {
			return nil, err
		}
		out[i] = stamp{fi.Size(), fi.ModTime()}
	}
	return out, nil
}

func sameStamps(a, b []stamp) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].size != b[i].size || !a[i].mod.Equal(b[i].mod) {
			return false
		}
	}
	return true
}

// KeyPair is a PEM certificate chain and key pair from files, reloaded when either file
// changes (tls.Config.GetCertificate / GetClientCertificate call Get).
func KeyPair(certFile, keyFile string, opts Options) (*File[*tls.Certificate], error) {
	return New(func() (*tls.Certificate, error) {
		c, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("certificate %s and key %s: %w", certFile, keyFile, err)
		}
		return &c, nil
	}, opts, certFile, keyFile)
}
