package eastwest

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshfed/meshfed/api/names"
	"github.com/meshfed/meshfed/eastwest/internal/hello"
)

// CopyMode selects how proxied bytes are moved.
type CopyMode string

const (
	// CopyPollSplice waits for readability through the Go netpoller, then splices exactly
	// the queued bytes through a pooled pipe: an idle connection holds no pipe (Linux).
	CopyPollSplice CopyMode = "poll-splice"
	// CopyIOCopy is io.Copy between the two *net.TCPConn: splice(2) too, but each blocked
	// direction holds a pipe (2 fds) while it waits.
	CopyIOCopy CopyMode = "io-copy"
)

// Config is the gateway's configuration; zero values take the documented defaults.
type Config struct {
	Cluster            string        // this cluster's name, reported by the health name
	Domain             string        // SNI domain, default cluster.local
	HelloTimeout       time.Duration // default 3s
	MaxHelloBytes      int           // default 16 KiB
	IdleTimeout        time.Duration // 0: none; default set by the command (1h)
	ConnectTimeout     time.Duration // per attempt, default 2s
	ConnectAttempts    int           // endpoints tried per connection, default 3
	DrainTimeout       time.Duration // default 30s
	DrainAcceptPeriod  time.Duration // keep accepting (health says draining) this long first; default 0
	MaxConns           int           // all client connections held, default 0 = unlimited
	MaxConnsPerService int           // proxied connections per service, default 0 = unlimited
	EjectBase          time.Duration // first ejection after a failed connect, default 1s
	EjectMax           time.Duration // longest ejection, default 30s
	CopyMode           CopyMode      // default poll-splice on Linux
	// HealthCert answers health.meshfed.internal; nil generates a self-signed one.
	HealthCert *tls.Certificate
	Log        *slog.Logger
	Registry   prometheus.Registerer
}

func (c *Config) defaults() error {
	if c.Domain == "" {
		c.Domain = names.DefaultDomain
	}
	if c.HelloTimeout == 0 {
		c.HelloTimeout = 3 * time.Second
	}
	if c.MaxHelloBytes == 0 {
		c.MaxHelloBytes = hello.DefaultMaxBytes
	}
	if c.ConnectTimeout == 0 {
		c.ConnectTimeout = 2 * time.Second
	}
	if c.ConnectAttempts == 0 {
		c.ConnectAttempts = 3
	}
	if c.DrainTimeout == 0 {
		c.DrainTimeout = 30 * time.Second
	}
	if c.EjectBase == 0 {
		c.EjectBase = time.Second
	}
	if c.EjectMax == 0 {
		c.EjectMax = 30 * time.Second
	}
	if c.CopyMode == "" {
		c.CopyMode = CopyPollSplice
	}
	if c.Log == nil {
		c.Log = slog.Default()
	}
	if c.Registry == nil {
		c.Registry = prometheus.NewRegistry()
	}
	switch {
	case c.MaxHelloBytes < 512 || c.MaxHelloBytes > 64<<10:
		return fmt.Errorf("max hello bytes %d: use 512-65536 (a Go 1.26 hello is ~1.6 KiB, a browser's ~2 KiB)", c.MaxHelloBytes)
	case c.HelloTimeout < 0 || c.IdleTimeout < 0 || c.ConnectTimeout < 0 || c.DrainTimeout < 0 || c.DrainAcceptPeriod < 0:
		return errors.New("timeouts must not be negative")
	case c.MaxConns < 0 || c.MaxConnsPerService < 0 || c.ConnectAttempts < 0:
		return errors.New("limits must not be negative (0 means unlimited)")
	case c.CopyMode != CopyPollSplice && c.CopyMode != CopyIOCopy:
		return fmt.Errorf("copy mode %q: use %s or %s", c.CopyMode, CopyPollSplice, CopyIOCopy)
	}
	return nil
}

// table is the compiled route table in force.
type table struct {
	src    *RouteTable
	bySNI  map[string]*route
	ready  int // ready endpoints over all routes
	routes int
}

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

	liveMu sync.Mutex
	live   map[*proxied]struct{}
	wg     sync.WaitGroup // every connection goroutine
}

// New makes a gateway.
func New(cfg Config) (*Gateway, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	g := &Gateway{
		cfg:     cfg,
		log:     cfg.Log,
		m:       newMetrics(cfg.Registry),
		eps:     map[string]*epState{},
		svcs:    map[string]*svcState{},
		drainCh: make(chan struct{}),
		live:    map[*proxied]struct{}{},
	}
	cert := cfg.HealthCert
	if cert == nil {
		c, err := SelfSignedHealthCert()
		if err != nil {
			return nil, err
		}
		cert = &c
	}
	g.health = &tls.Config{Certificates: []tls.Certificate{*cert}, MinVersion: tls.VersionTLS12}
	size := cfg.MaxHelloBytes
	g.bufPool.New = func() any { b := make([]byte, size); return &b }
	return g, nil
}

// SetRoutes puts a route table in force. Live connections are not touched: they keep the
// endpoint they have. Endpoint state (active counts, ejections) carries over by address.
func (g *Gateway) SetRoutes(t *RouteTable) {
	if t == nil {
		t = &RouteTable{}
	}
	g.stateMu.Lock()
	defer g.stateMu.Unlock()
	nt := &table{src: t, bySNI: make(map[string]*route, len(t.Services))}
	usedEP := map[string]bool{}
	usedSvc := map[string]bool{}
	for _, k := range t.Keys() {
		svcName := k.Service()
		svc := g.svcs[svcName]
		if svc == nil {
			svc = &svcState{
				name:        svcName,
				activeGauge: g.m.active.WithLabelValues(svcName),
				bytesIn:     g.m.bytes.WithLabelValues(svcName, "in"),
				bytesOut:    g.m.bytes.WithLabelValues(svcName, "out"),
				connectErrs: g.m.connectErrs.WithLabelValues(svcName),
				ejections:   g.m.ejections.WithLabelValues(svcName),
			}
			g.svcs[svcName] = svc
		}
		usedSvc[svcName] = true
		r := &route{key: k, svc: svc,
			sni: names.SNI{Port: k.Port, Service: k.Name, Namespace: k.Namespace, Domain: g.cfg.Domain}.String()}
		for _, e := range t.Services[k] {
			if !e.Ready {
				continue
			}
			addr := e.HostPort()
			st := g.eps[addr]
			w := int64(e.Weight)
			if w <= 0 {
				w = 1
			}
			if st == nil || st.weight != w || st.zone != e.Zone {
				nst := &epState{addr: addr, zone: e.Zone, weight: w}
				if st != nil {
					// Keep counts and ejection; weight or zone changed.
					nst.active.Store(st.active.Load())
					nst.failures.Store(st.failures.Load())
					nst.ejectedUntil.Store(st.ejectedUntil.Load())
				}
				st = nst
				g.eps[addr] = st
			}
			usedEP[addr] = true
			r.eps = append(r.eps, st)
		}
		nt.ready += len(r.eps)
		nt.bySNI[r.sni] = r
	}
	nt.routes = len(nt.bySNI)
	for a := range g.eps {
		if !usedEP[a] {
			delete(g.eps, a)
		}
	}
	for n, s := range g.svcs {
		if !usedSvc[n] && s.active.Load() == 0 {
			delete(g.svcs, n)
			g.m.active.DeleteLabelValues(n)
		}
	}
	old := g.tbl.Swap(nt)
	g.m.routes.Set(float64(nt.routes))
	g.m.updates.Inc()
	if old == nil || old.routes != nt.routes || old.ready != nt.ready {
		g.log.Info("route table in force", "origin", t.Origin, "service_ports", nt.routes, "ready_endpoints", nt.ready)
	} else {
		g.log.Debug("route table in force", "origin", t.Origin, "service_ports", nt.routes, "ready_endpoints", nt.ready)
	}
}

// RunSource runs src, putting each table it delivers in force, until ctx ends. It returns
// src's error when no first table could be had.
func (g *Gateway) RunSource(ctx context.Context, src RouteSource) error {
	return src.Run(ctx, func(t *RouteTable) {
		if err := t.Validate(); err != nil {
			g.log.Error("route table refused; keeping the last good one", "origin", t.Origin, "err", err)
			return
		}
		g.SetRoutes(t)
	})
}

// ObserveReload counts a route source reload attempt (wire FileSource.OnReload to it).
func (g *Gateway) ObserveReload(err error) {
	if err != nil {
		g.m.reloads.WithLabelValues("invalid").Inc()
		return
	}
	g.m.reloads.WithLabelValues("ok").Inc()
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

// Active is the number of client connections held now.
func (g *Gateway) Active() int64 { return g.open.Load() }

// Serve accepts connections on ln until ctx ends or Drain is called, then drains: it
// stops accepting (after DrainAcceptPeriod), lets live connections finish for up to
// DrainTimeout, then cuts the rest. It closes ln.
func (g *Gateway) Serve(ctx context.Context, ln net.Listener) error {
	go func() {
		select {
		case <-ctx.Done():
			g.Drain()
		case <-g.drainCh:
		}
	}()
	acceptDone := make(chan error, 1)
	go func() { acceptDone <- g.acceptLoop(ln) }()
	select {
	case err := <-acceptDone:
		if !g.draining.Load() {
			g.Drain()
			g.finishDrain()
			return fmt.Errorf("accept on %s: %w", ln.Addr(), err)
		}
	case <-g.drainCh:
		if p := g.cfg.DrainAcceptPeriod; p > 0 {
			g.log.Info("still accepting while remote health checks notice the drain", "for", p)
			t := time.NewTimer(p)
			<-t.C
		}
		ln.Close()
		<-acceptDone
	}
	g.finishDrain()
	return nil
}

func (g *Gateway) finishDrain() {
	done := make(chan struct{})
	go func() { g.wg.Wait(); close(done) }()
	g.log.Info("stopped accepting; waiting for live connections", "active", g.open.Load(), "drain_timeout", g.cfg.DrainTimeout)
	t := time.NewTimer(g.cfg.DrainTimeout)
	defer t.Stop()
	select {
	case <-done:
		g.log.Info("drained: every connection finished")
	case <-t.C:
		g.liveMu.Lock()
		n := len(g.live)
		for p := range g.live {
			p.cut.Store(true)
			p.client.Close()
			p.up.Close()
		}
		g.liveMu.Unlock()
		g.log.Warn("drain timeout: cut the remaining connections", "cut", n)
		<-done
	}
}

func (g *Gateway) acceptLoop(ln net.Listener) error {
	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if g.draining.Load() || errors.Is(err, net.ErrClosed) {
				return err
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || isTemporaryAccept(err) {
				// Out of fds or similar: back off rather than spin (what net/http does).
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				g.log.Warn("accept failed; retrying", "err", err, "in", backoff)
				time.Sleep(backoff)
				continue
			}
			return err
		}
		backoff = 0
		tc, ok := c.(*net.TCPConn)
		if !ok {
			c.Close()
			continue
		}
		if n := g.open.Add(1); g.cfg.MaxConns > 0 && n > int64(g.cfg.MaxConns) {
			g.open.Add(-1)
			g.m.rejected.WithLabelValues(ReasonLimit).Inc()
			g.log.Debug("refused: --max-conns reached", "remote", c.RemoteAddr(), "max", g.cfg.MaxConns)
			tc.SetLinger(0)
			tc.Close()
			continue
		}
		g.m.open.Inc()
		g.wg.Add(1)
		go g.handle(tc)
	}
}

func isTemporaryAccept(err error) bool {
	s := err.Error()
	return strings.Contains(s, "too many open files") || strings.Contains(s, "resource temporarily unavailable") ||
		strings.Contains(s, "connection aborted") || strings.Contains(s, "no buffer space")
}

// TLS alerts sent before closing a refused TLS connection, so clients see why.
var (
	alertUnrecognizedName = []byte{21, 3, 3, 0, 2, 2, 112}
	alertInternalError    = []byte{21, 3, 3, 0, 2, 2, 80}
)

func (g *Gateway) reject(c *net.TCPConn, reason string, alert []byte, attrs ...any) {
	g.m.rejected.WithLabelValues(reason).Inc()
	if g.log.Enabled(context.Background(), slog.LevelDebug) {
		g.log.Debug("refused", append([]any{"reason", reason, "remote", c.RemoteAddr().String()}, attrs...)...)
	}
	if alert != nil {
		_ = c.SetWriteDeadline(time.Now().Add(time.Second))
		_, _ = c.Write(alert)
	}
	c.Close()
}

func (g *Gateway) release() {
	g.open.Add(-1)
	g.m.open.Dec()
	g.wg.Done()
}

func (g *Gateway) handle(c *net.TCPConn) {
	bufp := g.bufPool.Get().(*[]byte)
	handedOff := false
	defer func() {
		if !handedOff {
			g.bufPool.Put(bufp)
			g.release()
		}
	}()
	start := time.Now()
	_ = c.SetReadDeadline(start.Add(g.cfg.HelloTimeout))
	var ch hello.ClientHello
	raw, parse, err := g.readHello(c, *bufp, &ch)
	if err != nil {
		reason := ReasonMalformedHello
		switch {
		case errors.Is(err, hello.ErrNotTLS):
			reason = ReasonNotTLS
		case errors.Is(err, hello.ErrTooLarge):
			reason = ReasonHelloTooLarge
		case errors.Is(err, os.ErrDeadlineExceeded):
			reason = ReasonHelloTimeout
		case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
			reason = ReasonClientClosed
		case errors.Is(err, hello.ErrMalformed):
		default:
			reason = ReasonClientClosed // reset by the peer and the like
		}
		g.reject(c, reason, nil, "err", err, "bytes", len(raw))
		return
	}
	g.m.helloSecs.Observe(time.Since(start).Seconds())
	g.m.parseSecs.Observe(parse.Seconds())
	_ = c.SetReadDeadline(time.Time{})

	sni := ch.ServerName
	if hasUpper(sni) {
		sni = strings.ToLower(sni) // DNS names are case-insensitive
	}
	if sni == names.HealthSNI {
		g.serveHealth(c, raw)
		return
	}
	if sni == "" {
		g.reject(c, ReasonNoSNI, alertUnrecognizedName)
		return
	}
	t := g.tbl.Load()
	var r *route
	if t != nil {
		r = t.bySNI[sni]
	}
	if r == nil {
		g.reject(c, ReasonUnknownSNI, alertUnrecognizedName, "sni", sni)
		return
	}
	if len(r.eps) == 0 {
		g.reject(c, ReasonNoReadyEndpoint, alertInternalError, "service", r.key.String())
		return
	}
	if n := r.svc.active.Add(1); g.cfg.MaxConnsPerService > 0 && n > int64(g.cfg.MaxConnsPerService) {
		r.svc.active.Add(-1)
		g.reject(c, ReasonServiceLimit, alertInternalError, "service", r.key.String(), "max", g.cfg.MaxConnsPerService)
		return
	}
	up, ep := g.connect(r)
	if up == nil {
		r.svc.active.Add(-1)
		g.reject(c, ReasonUpstreamFailed, alertInternalError, "service", r.key.String())
		return
	}
	// Replay the hello bytes exactly as received; nothing else has been sent either way.
	_ = up.SetWriteDeadline(time.Now().Add(g.cfg.ConnectTimeout))
	if _, err := up.Write(raw); err != nil {
		r.svc.active.Add(-1)
		ep.active.Add(-1)
		up.Close()
		g.reject(c, ReasonUpstreamFailed, alertInternalError, "service", r.key.String(), "endpoint", ep.addr, "err", err)
		return
	}
	_ = up.SetWriteDeadline(time.Time{})
	r.svc.bytesIn.Add(float64(len(raw)))
	g.bufPool.Put(bufp)
	handedOff = true
	p := &proxied{g: g, client: c, up: up, route: r, ep: ep, start: start}
	p.last.Store(time.Now().UnixNano())
	r.svc.activeGauge.Inc()
	g.liveMu.Lock()
	g.live[p] = struct{}{}
	g.liveMu.Unlock()
	if g.log.Enabled(context.Background(), slog.LevelDebug) {
		g.log.Debug("proxying", "remote", c.RemoteAddr().String(), "service", r.key.String(), "endpoint", ep.addr, "ech", ch.ECH)
	}
	p.run()
}

func hasUpper(s string) bool {
	for i := 0; i < len(s); i++ {
		if 'A' <= s[i] && s[i] <= 'Z' {
			return true
		}
	}
	return false
}

// readHello reads the ClientHello under the read deadline already set on c, timing the
// reassembly and parsing apart from the network wait.
func (g *Gateway) readHello(c *net.TCPConn, buf []byte, ch *hello.ClientHello) ([]byte, time.Duration, error) {
	a := hello.Assembler{Max: len(buf)}
	var parse time.Duration
	n := 0
	for {
		m, rerr := c.Read(buf[n:])
		n += m
		if m > 0 {
			t0 := time.Now()
			msg, err := a.Feed(buf[:n])
			if err == nil {
				err = hello.ParseInto(msg, ch)
				parse += time.Since(t0)
				return buf[:n], parse, err
			}
			parse += time.Since(t0)
			if !errors.Is(err, hello.ErrIncomplete) {
				return buf[:n], parse, err
			}
			if n == len(buf) {
				return buf[:n], parse, hello.ErrTooLarge
			}
		}
		if rerr != nil {
			if rerr == io.EOF && n > 0 {
				rerr = io.ErrUnexpectedEOF
			}
			return buf[:n], parse, rerr
		}
	}
}

// connect dials ready endpoints of r, trying up to ConnectAttempts different ones and
// ejecting those that fail. The returned endpoint's active count is already taken.
func (g *Gateway) connect(r *route) (*net.TCPConn, *epState) {
	var tried []*epState
	attempts := min(g.cfg.ConnectAttempts, len(r.eps))
	// No keepalive upstream either: the idle timeout covers dead peers.
	d := net.Dialer{Timeout: g.cfg.ConnectTimeout, KeepAlive: -1}
	for i := 0; i < attempts; i++ {
		now := time.Now()
		ep := pick(r.eps, tried, now.UnixNano())
		if ep == nil {
			break
		}
		tried = append(tried, ep)
		ep.active.Add(1)
		c, err := d.Dial("tcp", ep.addr)
		if err == nil {
			g.m.connectSecs.Observe(time.Since(now).Seconds())
			ep.succeeded()
			return c.(*net.TCPConn), ep
		}
		ep.active.Add(-1)
		r.svc.connectErrs.Inc()
		back := ep.eject(time.Now(), g.cfg.EjectBase, g.cfg.EjectMax)
		r.svc.ejections.Inc()
		g.log.Warn("endpoint connect failed; ejected, trying another", "service", r.key.String(), "endpoint", ep.addr, "err", err, "ejected_for", back)
	}
	return nil, nil
}

// proxied is one connection being spliced.
type proxied struct {
	g      *Gateway
	client *net.TCPConn
	up     *net.TCPConn
	route  *route
	ep     *epState
	start  time.Time
	last   atomic.Int64 // unix nanoseconds of the last bytes moved either way
	cut    atomic.Bool  // set when the drain timeout closed it
	idle   atomic.Bool
	failed atomic.Bool
	left   atomic.Int32 // directions still running
}

// run starts both directions in fresh goroutines and returns: the handler goroutine's
// stack, grown by the hello parse and the dial, is freed rather than kept for the life of
// an idle connection (fresh goroutines start with the smallest stack).
func (p *proxied) run() {
	p.left.Store(2)
	go p.direction(p.up, p.client, p.route.svc.bytesOut)
	go p.direction(p.client, p.up, p.route.svc.bytesIn)
}

// direction copies src to dst until src's EOF (then half-closes dst) or an error (then
// aborts both). The last direction to finish closes the connection.
func (p *proxied) direction(dst, src *net.TCPConn, counter prometheus.Counter) {
	var err error
	if p.g.cfg.CopyMode == CopyIOCopy || !pollSpliceSupported {
		err = p.ioCopy(dst, src, counter)
	} else {
		err = p.pollSplice(dst, src, counter)
	}
	if err == nil {
		// Clean EOF from src: pass the half-close on, keep the other direction going.
		_ = dst.CloseWrite()
	} else {
		if errors.Is(err, errIdle) {
			p.idle.Store(true)
		} else {
			p.failed.Store(true)
		}
		// Wake the other direction at once.
		_ = p.client.SetDeadline(aLongTimeAgo)
		_ = p.up.SetDeadline(aLongTimeAgo)
	}
	if p.left.Add(-1) == 0 {
		p.finish()
	}
}

var aLongTimeAgo = time.Unix(1, 0)

var errIdle = errors.New("idle timeout")

func (p *proxied) finish() {
	p.client.Close()
	p.up.Close()
	g := p.g
	g.liveMu.Lock()
	delete(g.live, p)
	g.liveMu.Unlock()
	result := ResultOK
	switch {
	case p.cut.Load():
		result = ResultDrained
	case p.idle.Load():
		result = ResultIdleTimeout
	case p.failed.Load():
		result = ResultError
	}
	g.m.conns.WithLabelValues(p.route.svc.name, result).Inc()
	p.route.svc.activeGauge.Dec()
	p.route.svc.active.Add(-1)
	p.ep.active.Add(-1)
	if g.log.Enabled(context.Background(), slog.LevelDebug) {
		g.log.Debug("closed", "service", p.route.key.String(), "endpoint", p.ep.addr, "result", result, "duration", time.Since(p.start))
	}
	g.release()
}

// stillAlive tells whether the connection moved bytes (either way) within the idle
// timeout; when so, it returns the deadline to arm next.
func (p *proxied) stillAlive() (time.Time, bool) {
	idle := p.g.cfg.IdleTimeout
	last := time.Unix(0, p.last.Load())
	if p.cut.Load() || p.failed.Load() || idle <= 0 {
		return time.Time{}, false
	}
	dl := last.Add(idle)
	return dl, time.Now().Before(dl)
}

func (p *proxied) armIdle(c *net.TCPConn) {
	if idle := p.g.cfg.IdleTimeout; idle > 0 {
		_ = c.SetReadDeadline(time.Now().Add(idle))
	}
}

// ioCopy is the stdlib path: io.Copy between the *net.TCPConn pair (dst.ReadFrom(src),
// which splices on Linux). The idle timeout is a read deadline re-armed while bytes move.
func (p *proxied) ioCopy(dst, src *net.TCPConn, counter prometheus.Counter) error {
	p.armIdle(src)
	for {
		n, err := io.Copy(dst, src)
		if n > 0 {
			counter.Add(float64(n))
			p.last.Store(time.Now().UnixNano())
		}
		if err == nil {
			return nil
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			if dl, ok := p.stillAlive(); ok {
				_ = src.SetReadDeadline(dl)
				continue
			}
			if p.idleNow() {
				return errIdle
			}
		}
		return err
	}
}

// idleNow is true when the idle timeout (not a drain cut or the other side's failure)
// ended the connection.
func (p *proxied) idleNow() bool {
	idle := p.g.cfg.IdleTimeout
	return idle > 0 && !p.cut.Load() && !p.failed.Load() && time.Since(time.Unix(0, p.last.Load())) >= idle
}

func nowNano() int64 { return time.Now().UnixNano() }

func nowTime() time.Time { return time.Now() }

// StartSource runs src in the background and returns once its first table is in force,
// or with src's error when it cannot produce one (an invalid exports file at start-up is
// an error, not an empty gateway). Later tables are put in force as they come.
func (g *Gateway) StartSource(ctx context.Context, src RouteSource) error {
	first := make(chan struct{})
	var once sync.Once
	errc := make(chan error, 1)
	go func() {
		errc <- src.Run(ctx, func(t *RouteTable) {
			if err := t.Validate(); err != nil {
				g.log.Error("route table refused; keeping the last good one", "origin", t.Origin, "err", err)
				return
			}
			g.SetRoutes(t)
			once.Do(func() { close(first) })
		})
	}()
	select {
	case <-first:
		go func() {
			if err := <-errc; err != nil {
				g.log.Error("route source stopped; the last table stays in force", "err", err)
			}
		}()
		return nil
	case err := <-errc:
		if err == nil {
			err = errors.New("route source ended before delivering a table")
		}
		return err
	}
}

// DefaultMaxHelloBytes is the default ClientHello size cap (16 KiB, records included).
const DefaultMaxHelloBytes = hello.DefaultMaxBytes
