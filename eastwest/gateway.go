package eastwest

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
)

// Gateway routes TLS connections by SNI. Make it with New, give it routes with SetRoutes
// (or a RouteSource through RunSource), and Serve a listener.
type Gateway struct {
	cfg Config
	log *slog.Logger
	m   *metrics

	tbl      atomic.Pointer[table]
	stateMu  sync.Mutex // guards eps and svcs (only touched on table swaps)
	eps      map[string]*epState
	svcs     map[string]*svcState
	open     atomic.Int64 // client connections held in any phase
	draining atomic.Bool
	drainCh  chan struct{}
	drainOne sync.Once
	health   *tls.Config
	bufPool  sync.Pool
	faults   faultState // drill faults in force (faults.go)

	kp *kernelRedirector // the sockmap path, when CopyMode resolved to sockmap

	liveMu sync.Mutex
	live   map[cutter]struct{} // what the end of a drain cuts
	hbone  *hboneServer        // nil without cfg.HBONE
	wg     sync.WaitGroup      // every connection goroutine

	// admitMu orders a new connection's wg.Add before a drain's wg.Wait: with two
	// listeners (SNI and HBONE), one can still accept while the other's drain waits.
	admitMu sync.Mutex
	waiting bool // a drain is waiting on wg: accept no more connections
}

// New makes a gateway.
func New(cfg Config) (*Gateway, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	mode, err := chooseCopyMode(cfg.CopyMode, cfg.Log)
	if err != nil {
		return nil, err
	}
	cfg.CopyMode = mode
	g := &Gateway{
		cfg:     cfg,
		log:     cfg.Log,
		eps:     map[string]*epState{},
		svcs:    map[string]*svcState{},
		drainCh: make(chan struct{}),
		live:    map[cutter]struct{}{},
	}
	g.m = newMetrics(cfg.Registry, g.syncKernelBytes)
	g.faults.init(cfg.Registry)
	cert := cfg.HealthCert
	if cert == nil {
		c, err := SelfSignedHealthCert()
		if err != nil {
			return nil, err
		}
		cert = &c
	}
	g.health = &tls.Config{Certificates: []tls.Certificate{*cert}, MinVersion: tls.VersionTLS12}
	if cfg.HBONE != nil {
		h, err := newHBONEServer(g, cfg.HBONE)
		if err != nil {
			return nil, err
		}
		g.hbone = h
	}
	size := cfg.MaxHelloBytes
	g.bufPool.New = func() any { b := make([]byte, size); return &b }
	if mode == CopySockmap {
		if g.kp, err = newKernelRedirector(cfg.MaxConns); err != nil {
			return nil, fmt.Errorf("copy mode %s: %w", CopySockmap, err)
		}
	}
	return g, nil
}

// Ready reports nil when the gateway has a route table and is not draining (/readyz).
func (g *Gateway) Ready() error {
	if g.draining.Load() {
		return errors.New("draining")
	}
	if g.tbl.Load() == nil {
		return errors.New("no route table yet")
	}
	return nil
}

// Draining reports whether Drain was called.
func (g *Gateway) Draining() bool { return g.draining.Load() }

// Drain makes the health name fail at once and Serve begin its graceful stop.
func (g *Gateway) Drain() {
	g.drainOne.Do(func() {
		g.draining.Store(true)
		g.m.draining.Set(1)
		close(g.drainCh)
		g.log.Info("draining: health name fails from now on", "active", g.open.Load())
	})
}

// cutter is a live connection the end of a drain closes.
type cutter interface{ cutNow() }

func (g *Gateway) addLive(c cutter) {
	g.liveMu.Lock()
	g.live[c] = struct{}{}
	g.liveMu.Unlock()
}

func (g *Gateway) dropLive(c cutter) {
	g.liveMu.Lock()
	delete(g.live, c)
	g.liveMu.Unlock()
}

// Active is the number of client connections held now.
func (g *Gateway) Active() int64 { return g.open.Load() }
