package source

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/meshfed/meshfed/internal/ctxtime"
	"github.com/meshfed/meshfed/trust"
)

// Workload reads the trust domain's bundle from the SPIFFE Workload API (e.g. a SPIRE
// agent's socket): X.509 roots from the X.509 bundle stream, JWT keys from the JWT bundle
// stream. The Workload API carries no sequence or refresh hint (go-spiffe's BundleSource
// drops them too): meshfed numbers what it publishes itself.
type Workload struct {
	*tracker
	td   spiffeid.TrustDomain
	addr string

	mu    sync.Mutex
	roots *x509bundle.Bundle
	jwt   *jwtbundle.Bundle
}

// NewWorkload makes a Workload API source; addr is unix:///path or tcp://host:port.
func NewWorkload(td, addr string, opts Options) *Workload {
	return &Workload{tracker: newTracker("workload", opts.Log, opts.Metrics), td: spiffeid.RequireTrustDomainFromString(td), addr: addr}
}

func (w *Workload) String() string { return "workload:" + w.addr }

// Run implements Source.
func (w *Workload) Run(ctx context.Context, update func(*trust.Bundle)) error {
	for ctx.Err() == nil {
		err := w.watch(ctx, update)
		if ctx.Err() != nil {
			break
		}
		w.fail(fmt.Errorf("workload API %s: %w", w.addr, err))
		if !ctxtime.Sleep(ctx, time.Second) {
			break
		}
	}
	return nil
}

func (w *Workload) watch(ctx context.Context, update func(*trust.Bundle)) error {
	client, err := workloadapi.New(ctx, workloadapi.WithAddr(w.addr))
	if err != nil {
		return err
	}
	defer client.Close()
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	h := &wlWatcher{w: w, update: update}
	// JWT bundles are optional: an agent without JWT support still serves X.509 bundles.
	go func() { _ = client.WatchJWTBundles(wctx, h) }()
	return client.WatchX509Bundles(wctx, h)
}

type wlWatcher struct {
	w      *Workload
	update func(*trust.Bundle)
}

func (h *wlWatcher) OnX509BundlesUpdate(s *x509bundle.Set) {
	b, ok := s.Get(h.w.td)
	if !ok {
		h.w.fail(fmt.Errorf("workload API %s: no X.509 bundle for trust domain %s", h.w.addr, h.w.td.Name()))
		return
	}
	h.w.mu.Lock()
	h.w.roots = b
	h.w.mu.Unlock()
	h.w.emit(h.update)
}

func (h *wlWatcher) OnX509BundlesWatchError(err error) {
	h.w.fail(fmt.Errorf("workload API %s: %w", h.w.addr, err))
}

func (h *wlWatcher) OnJWTBundlesUpdate(s *jwtbundle.Set) {
	b, ok := s.Get(h.w.td)
	if !ok {
		return
	}
	h.w.mu.Lock()
	h.w.jwt = b
	h.w.mu.Unlock()
	h.w.emit(h.update)
}

func (h *wlWatcher) OnJWTBundlesWatchError(error) {}

// emit combines the latest X.509 and JWT parts (X.509 first: no bundle without roots) and
// validates the result like any other bundle.
func (w *Workload) emit(update func(*trust.Bundle)) {
	w.mu.Lock()
	roots, jwt := w.roots, w.jwt
	w.mu.Unlock()
	if roots == nil {
		return
	}
	sb := spiffebundle.FromX509Bundle(roots)
	if jwt != nil {
		sb.SetJWTAuthorities(jwt.JWTAuthorities())
	}
	data, err := sb.Marshal()
	if err != nil {
		w.fail(err)
		return
	}
	b, err := trust.Parse(w.td.Name(), data, trust.ParseOptions{DropExpired: true})
	if err != nil {
		w.fail(fmt.Errorf("workload API %s: %w", w.addr, err))
		return
	}
	if w.good(b) {
		update(b)
	}
}

var _ Source = (*Workload)(nil)
