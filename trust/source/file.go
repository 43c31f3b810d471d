package source

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/meshfed/meshfed/internal/ctxtime"
	"github.com/meshfed/meshfed/trust"
)

// File reads PEM roots or a SPIFFE JSON bundle from a file and watches it: every Poll it
// stats the file and, when size or modification time changed (or every tenth poll, for
// filesystems with coarse timestamps and for ConfigMap symlink swaps), hashes it. A file
// that does not parse leaves the last good bundle in force.
type File struct {
	*tracker
	td, path string
	poll     time.Duration
}

// NewFile makes a file source.
func NewFile(td, path string, opts Options) *File {
	p := opts.Poll
	if p <= 0 {
		p = time.Second
	}
	return &File{tracker: newTracker("file", opts.Log, opts.Metrics), td: td, path: path, poll: p}
}

func (f *File) String() string { return "file:" + f.path }

// Run implements Source.
func (f *File) Run(ctx context.Context, update func(*trust.Bundle)) error {
	var lastHash [32]byte
	var lastSize int64
	var lastMod time.Time
	for n := 0; ctx.Err() == nil; n++ {
		st, err := os.Stat(f.path)
		switch {
		case err != nil:
			f.fail(fmt.Errorf("%s: %w", f.path, err))
		case n == 0 || st.Size() != lastSize || !st.ModTime().Equal(lastMod) || n%10 == 0:
			lastSize, lastMod = st.Size(), st.ModTime()
			data, err := readCapped(f.path)
			if err != nil {
				f.fail(err)
				break
			}
			h := sha256.Sum256(data)
			if h == lastHash && f.Status().LastError == nil {
				break
			}
			lastHash = h
			b, err := trust.Parse(f.td, data, trust.ParseOptions{})
			if err != nil {
				f.fail(fmt.Errorf("%s: %w", f.path, err))
				break
			}
			if f.good(b) {
				update(b)
			}
		}
		if !ctxtime.Sleep(ctx, f.poll) {
			break
		}
	}
	return nil
}

// readCapped reads at most MaxBundleBytes+1 bytes, so an oversized file is refused by
// Parse without reading all of it.
func readCapped(path string) ([]byte, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer fh.Close()
	var buf bytes.Buffer
	if _, err := io.Copy(&buf, io.LimitReader(fh, trust.MaxBundleBytes+1)); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return buf.Bytes(), nil
}

var _ Source = (*File)(nil)
