package xds

import (
	"sync"

	"github.com/meshfed/meshfed/federation/imports"
)

// Feed carries import views from a callback (service.Service.OnView) to the server: Send
// never blocks, replaces a view not yet taken, and drops a view older than the last one
// sent (so seeding a feed with Service.View() after registering the callback is safe).
type Feed struct {
	mu   sync.Mutex
	ch   chan *imports.View
	last int64
}

// NewFeed makes an empty feed.
func NewFeed() *Feed { return &Feed{ch: make(chan *imports.View, 1)} }

// Send offers v; nil and revision-0 views (not synced yet) are ignored.
func (f *Feed) Send(v *imports.View) {
	if v == nil || v.Revision == 0 {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if v.Revision < f.last {
		return
	}
	f.last = v.Revision
	select {
	case <-f.ch:
	default:
	}
	f.ch <- v
}

// C is the channel New takes.
func (f *Feed) C() <-chan *imports.View { return f.ch }
