package eastwest

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// connect dials ready endpoints of r, trying up to ConnectAttempts different ones and
// ejecting those that fail. The returned endpoint's active count is already taken.
func (g *Gateway) connect(r *route) (*net.TCPConn, *epState) {
	// No keepalive upstream either: the idle timeout covers dead peers.
	d := net.Dialer{Timeout: g.cfg.ConnectTimeout, KeepAlive: -1}
	return tryEndpoints(g, r, func(ep *epState) (*net.TCPConn, error) {
		c, err := d.Dial("tcp", ep.addr)
		if err != nil {
			return nil, err
		}
		return c.(*net.TCPConn), nil
	})
}

// connectSend is connect that also writes first (the client's hello) to the endpoint,
// within the connect timeout: a write that fails is that endpoint's failure, and the next
// is tried (nothing has reached any endpoint's application yet). In poll-splice mode on
// Linux the upstream socket is made with dialSend, without the net package's per-dial
// system calls.
func (g *Gateway) connectSend(r *route, first []byte) (sock, *epState) {
	timeout := g.cfg.ConnectTimeout
	if g.cfg.CopyMode == CopyPollSplice && pollSpliceSupported {
		return tryEndpoints(g, r, func(ep *epState) (sock, error) {
			if ep.saErr != nil {
				return nil, ep.saErr
			}
			u, err := dialSend(ep.sa, first, timeout)
			if err != nil {
				return nil, err
			}
			return u, nil
		})
	}
	d := net.Dialer{Timeout: timeout, KeepAlive: -1}
	return tryEndpoints(g, r, func(ep *epState) (sock, error) {
		c, err := d.Dial("tcp", ep.addr)
		if err != nil {
			return nil, err
		}
		if err := writeFirst(c.(*net.TCPConn), first, timeout); err != nil {
			c.Close()
			return nil, err
		}
		return c.(*net.TCPConn), nil
	})
}

// writeFirst writes the hello to a freshly dialled endpoint within timeout.
func writeFirst(c *net.TCPConn, first []byte, timeout time.Duration) error {
	_ = c.SetWriteDeadline(time.Now().Add(timeout))
	_, err := c.Write(first)
	_ = c.SetWriteDeadline(time.Time{})
	return err
}

// tryEndpoints runs dial on ready endpoints of r (power of two choices), up to
// ConnectAttempts different ones, ejecting each that fails, until one succeeds.
func tryEndpoints[C any](g *Gateway, r *route, dial func(*epState) (C, error)) (C, *epState) {
	var tried []*epState
	attempts := min(g.cfg.ConnectAttempts, len(r.eps))
	for i := 0; i < attempts; i++ {
		now := time.Now()
		ep := pick(r.eps, tried, now.UnixNano())
		if ep == nil {
			break
		}
		tried = append(tried, ep)
		ep.active.Add(1)
		c, err := dial(ep)
		if err == nil {
			g.m.connectSecs.Observe(time.Since(now).Seconds())
			ep.succeeded()
			return c, ep
		}
		ep.active.Add(-1)
		r.svc.connectErrs.Inc()
		back := ep.eject(time.Now(), g.cfg.EjectBase, g.cfg.EjectMax)
		r.svc.ejections.Inc()
		g.log.Warn("endpoint connect failed; ejected, trying another", "service", r.key.String(), "endpoint", ep.addr, "err", err, "ejected_for", back)
	}
	var none C
	return none, nil
}

// sock is one side of a proxied connection: the accepted clientConn, and upstream a
// *net.TCPConn or (poll-splice on Linux) dialSend's *rawSock.
type sock interface {
	io.ReadWriter
	syscall.Conn
	SetDeadline(time.Time) error
	SetReadDeadline(time.Time) error
	SetWriteDeadline(time.Time) error
	CloseWrite() error
	Close() error
}

// clientConn is the accepted side of an SNI connection: a *net.TCPConn from the
// net.Listener (io-copy and sockmap modes, and off Linux), or in poll-splice mode on Linux
// an *acceptedConn from acceptLoopRaw.
type clientConn interface {
	net.Conn
	syscall.Conn
	CloseWrite() error
	SetLinger(sec int) error
}

// proxied is one connection being spliced.
type proxied struct {
	g      *Gateway
	client clientConn
	up     sock
	route  *route
	ep     *epState
	start  time.Time
	last   atomic.Int64 // unix nanoseconds of the last bytes moved either way
	cut    atomic.Bool  // set when the drain timeout closed it
	idle   atomic.Bool
	failed atomic.Bool
	left   atomic.Int32 // directions still running

	// The sockmap path (kernelpath.go): k is set once Splice returned, unless the
	// connection was already over by then. These three are guarded by g.liveMu.
	k                   kernelConn
	over                bool
	syncedIn, syncedOut uint64 // kernel byte counts already added to the counters
}

// kernelConn is the part of a sockmap connection the gateway uses.
type kernelConn interface {
	Bytes() (ab, ba uint64)
	Err() error
	Close()
}

// run starts both directions in fresh goroutines and returns: the handler goroutine's
// stack, grown by the hello parse and the dial, is freed rather than kept for the life of
// an idle connection (fresh goroutines start with the smallest stack).
func (p *proxied) run() {
	p.left.Store(2)
	go p.direction(p.up, p.client, p.route.stats.bytesOut)
	go p.direction(p.client, p.up, p.route.stats.bytesIn)
}

// direction copies src to dst until src's EOF (then half-closes dst) or an error (then
// aborts both). The last direction to finish closes the connection.
func (p *proxied) direction(dst, src sock, counter prometheus.Counter) {
	var err error
	if p.g.cfg.CopyMode == CopyIOCopy || !pollSpliceSupported {
		err = p.ioCopy(dst, src, counter)
	} else {
		err = p.pollSplice(dst, src, counter)
	}
	if err == nil {
		// Clean EOF from src: pass the half-close on, keep the other direction going. When
		// the other direction already ended cleanly, finish's close sends the FIN instead
		// (one shutdown call less per connection).
		if p.left.Load() > 1 || p.failed.Load() || p.idle.Load() || p.cut.Load() {
			_ = dst.CloseWrite()
		}
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

// cutNow closes both sides at the end of the drain timeout.
func (p *proxied) cutNow() {
	p.cut.Store(true)
	if p.k != nil {
		// The kernel path: its end (finishKernel) takes g.liveMu, which the drain holds.
		go p.k.Close()
		return
	}
	p.client.Close()
	p.up.Close()
}

func (p *proxied) finish() {
	p.client.Close()
	p.up.Close()
	p.g.dropLive(p)
	p.g.closed(p.route, p.ep, outcome{cut: p.cut.Load(), idle: p.idle.Load(), failed: p.failed.Load()}, p.start)
}

// outcome is how a proxied connection or tunnel ended.
type outcome struct{ cut, idle, failed bool }

func (o outcome) result() string {
	switch {
	case o.cut:
		return ResultDrained
	case o.idle:
		return ResultIdleTimeout
	case o.failed:
		return ResultError
	}
	return ResultOK
}

// closed counts a proxied connection or tunnel of r to ep as ended and gives back what it
// held: its service's and endpoint's active counts, and its place under the connection
// limit.
func (g *Gateway) closed(r *route, ep *epState, o outcome, start time.Time) {
	result := o.result()
	r.stats.closedCounter(g.m.conns, r.svc.name, result).Inc()
	r.stats.activeGauge.Dec()
	r.svc.active.Add(-1)
	ep.active.Add(-1)
	if g.log.Enabled(context.Background(), slog.LevelDebug) {
		g.log.Debug("closed", "protocol", r.stats.protocol, "service", r.key.String(), "endpoint", ep.addr, "result", result, "duration", time.Since(start))
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

func (p *proxied) armIdle(c sock) {
	if idle := p.g.cfg.IdleTimeout; idle > 0 {
		_ = c.SetReadDeadline(time.Now().Add(idle))
	}
}

// ioCopy is the stdlib path: io.Copy between the *net.TCPConn pair (dst.ReadFrom(src),
// which splices on Linux). The idle timeout is a read deadline re-armed while bytes move.
func (p *proxied) ioCopy(dst, src sock, counter prometheus.Counter) error {
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
