package xds

import (
	"sync"

	"github.com/meshfed/meshfed/keyspace/view"
)

// Feed carries import views from a callback (service.Service.OnView) to the server: Send
// never blocks, replaces a view not yet taken, and drops a view older than the last one
// sent (so seeding a feed with Service.View() after registering the callback is safe).
type Feed struct {
	mu   sync.Mutex
	ch   chan *view.View
	last int64
}

// NewFeed makes an empty feed.
func NewFeed() *Feed { return &Feed{ch: make(chan *view.View, 1)} }

// Send offers v; nil and revision-0 views (not synced yet) are ignored.
func (f *Feed) Send(v *view.View) {
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
	case prev := <-f.ch:
		v = mergeViews(prev, v) // v replaces a view not taken: carry its changes along
	default:
	}
	f.ch <- v
}

// mergeViews returns next, with the Changed lists of both when both have one (a shallow
// copy: views are shared read-only), or with none when either is unknown.
func mergeViews(prev, next *view.View) *view.View {
	if prev == nil || prev == next || next.Changed == nil && prev.Changed == nil {
		return next
	}
	cp := *next
	if prev.Changed == nil || next.Changed == nil {
		cp.Changed = nil
		return &cp
	}
	cp.Changed = append(append(make([]string, 0, len(prev.Changed)+len(next.Changed)), prev.Changed...), next.Changed...)
	return &cp
}

// C is the channel New takes.
func (f *Feed) C() <-chan *view.View { return f.ch }
