package eastwest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"time"

	"github.com/meshfed/meshfed/api/names"
	"github.com/meshfed/meshfed/eastwest/internal/hello"
	"github.com/meshfed/meshfed/internal/ctxtime"
)

// Serve accepts connections on ln until ctx ends or Drain is called, then drains: it
// stops accepting (after DrainAcceptPeriod), lets live connections finish for up to
// DrainTimeout, then cuts the rest. It closes ln.
func (g *Gateway) Serve(ctx context.Context, ln net.Listener) error {
	if g.kp != nil {
		defer g.kp.Close() // after the drain: the kernel path's last connections have ended
	}
	if g.cfg.CopyMode == CopyPollSplice && rawAcceptSupported {
		// Accepted without the net package (acceptLoopRaw): the connection's system calls
		// stay raw until close. A listener that is not a *net.TCPListener, or whose
		// socket cannot be duplicated, is served through its Accept as in the other modes.
		rl, err := newRawListener(ln)
		if err == nil {
			return g.serveListener(ctx, rl, g.acceptLoopRaw, nil)
		}
		g.log.Warn("accepting through net.Listener", "listener", ln.Addr().String(), "err", err)
	}
	return g.serveListener(ctx, ln, func(closed context.Context, ln net.Listener) error {
		return g.acceptLoop(closed, ln, ProtocolSNI, func(c *net.TCPConn) { g.handle(c) })
	}, nil)
}

// serveListener runs loop (an accept loop) on ln until ctx ends or Drain is called, then
// stops accepting, calls stopped (when set), and drains the whole gateway. loop's context
// ends when serveListener closes ln.
func (g *Gateway) serveListener(ctx context.Context, ln net.Listener, loop func(closed context.Context, ln net.Listener) error, stopped func()) error {
	go func() {
		select {
		case <-ctx.Done():
			g.Drain()
		case <-g.drainCh:
		}
	}()
	closed, closeLn := context.WithCancel(context.Background())
	defer closeLn()
	acceptDone := make(chan error, 1)
	go func() { acceptDone <- loop(closed, ln) }()
	select {
	case err := <-acceptDone:
		if !g.draining.Load() {
			g.Drain()
			if stopped != nil {
				stopped()
			}
			g.finishDrain()
			return fmt.Errorf("accept on %s: %w", ln.Addr(), err)
		}
	case <-g.drainCh:
		if p := g.cfg.DrainAcceptPeriod; p > 0 {
			g.log.Info("still accepting while remote health checks notice the drain", "listener", ln.Addr().String(), "for", p)
			t := time.NewTimer(p)
			<-t.C
		}
		ln.Close()
		closeLn()
		<-acceptDone
	}
	if stopped != nil {
		stopped()
	}
	g.finishDrain()
	return nil
}

// CopyMode is the copy mode in force (auto resolved).
func (g *Gateway) CopyMode() CopyMode { return g.cfg.CopyMode }

func (g *Gateway) finishDrain() {
	g.admitMu.Lock()
	g.waiting = true
	g.admitMu.Unlock()
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
			p.cutNow()
		}
		g.liveMu.Unlock()
		g.log.Warn("drain timeout: cut the remaining connections", "cut", n)
		<-done
	}
}

// acceptLoop accepts TCP connections on ln and runs handle on each in its own goroutine,
// within the global connection limit (a refusal is counted under protocol).
func (g *Gateway) acceptLoop(closed context.Context, ln net.Listener, protocol string, handle func(*net.TCPConn)) error {
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
				ctxtime.Sleep(closed, backoff) // cut short when ln is closed: Accept then says so
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
		if ok, err := g.take(tc, protocol); err != nil {
			return err
		} else if ok {
			go handle(tc)
		}
	}
}

// take admits a new connection under the global connection limit, or refuses it (counted
// under protocol, closed with a reset). It returns net.ErrClosed (c closed) when a drain
// already waits for every connection: the accept loop stops.
func (g *Gateway) take(c interface {
	net.Conn
	SetLinger(int) error
}, protocol string) (bool, error) {
	if n := g.open.Add(1); g.cfg.MaxConns > 0 && n > int64(g.cfg.MaxConns) {
		g.open.Add(-1)
		g.m.rejected.WithLabelValues(protocol, ReasonLimit).Inc()
		g.log.Debug("refused: connection limit reached", "protocol", protocol, "remote", c.RemoteAddr(), "max", g.cfg.MaxConns)
		_ = c.SetLinger(0)
		c.Close()
		return false, nil
	}
	if !g.admit() {
		// The other listener's drain already waits for the last connection.
		g.open.Add(-1)
		_ = c.SetLinger(0)
		c.Close()
		return false, net.ErrClosed
	}
	g.m.open.Inc()
	return true, nil
}

// admit counts one more connection goroutine, unless a drain is already waiting for
// them all (a WaitGroup must not grow from zero while it is waited on).
func (g *Gateway) admit() bool {
	g.admitMu.Lock()
	defer g.admitMu.Unlock()
	if g.waiting {
		return false
	}
	g.wg.Add(1)
	return true
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

func (g *Gateway) reject(c clientConn, reason string, alert []byte, attrs ...any) {
	g.m.rejected.WithLabelValues(ProtocolSNI, reason).Inc()
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

func (g *Gateway) handle(c clientConn) {
	bufp := g.bufPool.Get().(*[]byte)
	handedOff := false
	defer func() {
		if !handedOff {
			g.bufPool.Put(bufp)
			g.release()
		}
	}()
	if g.faultOnAccept(c) {
		return
	}
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
		if g.faultOnService(c, ServiceKey{}, true) {
			return
		}
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
	if g.faultOnService(c, r.key, false) {
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
	var up sock
	var ep *epState
	if g.kp != nil {
		tc, e := g.connect(r)
		// The sockmap path accepts through the net.Listener (Serve): c is a *net.TCPConn.
		if tc != nil && g.spliceKernel(c.(*net.TCPConn), tc, raw, r, e, start) {
			g.bufPool.Put(bufp)
			handedOff = true
			return
		}
		if tc != nil {
			// Not for the kernel path: replay the hello here, as the other modes do.
			if err := writeFirst(tc, raw, g.cfg.ConnectTimeout); err != nil {
				r.svc.active.Add(-1)
				e.active.Add(-1)
				tc.Close()
				g.reject(c, ReasonUpstreamFailed, alertInternalError, "service", r.key.String(), "endpoint", e.addr, "err", err)
				return
			}
			up, ep = tc, e
		}
	} else {
		// Connect and replay the hello bytes exactly as received; nothing else has been
		// sent either way.
		up, ep = g.connectSend(r, raw)
	}
	if up == nil {
		r.svc.active.Add(-1)
		g.reject(c, ReasonUpstreamFailed, alertInternalError, "service", r.key.String())
		return
	}
	r.stats.bytesIn.Add(float64(len(raw)))
	g.bufPool.Put(bufp)
	handedOff = true
	p := &proxied{g: g, client: c, up: up, route: r, ep: ep, start: start}
	p.last.Store(time.Now().UnixNano())
	r.stats.activeGauge.Inc()
	g.addLive(p)
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
func (g *Gateway) readHello(c clientConn, buf []byte, ch *hello.ClientHello) ([]byte, time.Duration, error) {
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
