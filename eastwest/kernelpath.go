//go:build linux

package eastwest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/meshfed/meshfed/eastwest/internal/sockmap"
)

// kernelRedirector is the sockmap path's loaded program and maps, one per gateway.
type kernelRedirector = sockmap.Redirector

func newKernelRedirector(maxConns int) (*kernelRedirector, error) {
	return sockmap.New(sockmap.Options{MaxConns: maxConns})
}

// chooseCopyMode resolves CopyAuto and checks CopySockmap against what this kernel and
// process allow (sockmap.Probe). auto falls back to poll-splice with one log line saying
// why; an explicit sockmap that cannot work is an error.
func chooseCopyMode(mode CopyMode, log *slog.Logger) (CopyMode, error) {
	if mode != CopyAuto && mode != CopySockmap {
		return mode, nil
	}
	err := sockmap.Probe()
	switch {
	case err == nil:
		return CopySockmap, nil
	case mode == CopySockmap:
		return "", fmt.Errorf("copy mode %s cannot work here: %w", CopySockmap, err)
	default:
		log.Info("copy mode auto: using poll-splice, the sockmap path is not available", "why", err.Error())
		return CopyPollSplice, nil
	}
}

// spliceKernel hands a routed connection to the kernel's sockmap path: hello is written
// upstream first, then every byte either way is redirected by the kernel. It reports false
// (nothing done, both connections still the caller's and untouched) when this connection
// cannot take that path now; then the caller goes on in user space.
func (g *Gateway) spliceKernel(c, up *net.TCPConn, hello []byte, r *route, ep *epState, start time.Time) bool {
	p := &proxied{g: g, client: c, up: up, route: r, ep: ep, start: start}
	k, err := g.kp.Splice(c, up, hello, g.cfg.IdleTimeout, func(k *sockmap.Conn) { p.finishKernel(k) })
	switch {
	case errors.Is(err, sockmap.ErrAborted):
		// Bytes had moved when the set-up failed: both connections are closed.
		g.log.Warn("sockmap set-up failed; connection closed", "service", r.key.String(), "endpoint", ep.addr, "err", err)
		r.stats.bytesIn.Add(float64(len(hello)))
		r.stats.activeGauge.Inc()
		p.failed.Store(true)
		p.finish()
		return true
	case errors.Is(err, sockmap.ErrNotNow):
		g.log.Debug("sockmap path not for this connection; copying in user space", "service", r.key.String(), "err", err)
		return false
	case err != nil:
		// Nothing moved (a full map, say): both connections are still ours, untouched.
		g.log.Warn("sockmap path refused a connection; copying it in user space", "service", r.key.String(), "err", err)
		return false
	}
	r.stats.bytesIn.Add(float64(len(hello)))
	r.stats.activeGauge.Inc()
	g.liveMu.Lock()
	if !p.over {
		p.k = k
		g.live[p] = struct{}{}
	}
	g.liveMu.Unlock()
	if g.log.Enabled(context.Background(), slog.LevelDebug) {
		g.log.Debug("proxying in the kernel", "remote", c.RemoteAddr().String(), "service", r.key.String(), "endpoint", ep.addr)
	}
	return true
}

// finishKernel ends a sockmap connection's bookkeeping (called once, by the sockmap
// package, when the connection has ended).
func (p *proxied) finishKernel(k kernelConn) {
	switch err := k.Err(); {
	case err == nil:
	case errors.Is(err, sockmap.ErrIdle):
		p.idle.Store(true)
	case errors.Is(err, sockmap.ErrCut) && p.cut.Load():
	default:
		p.failed.Store(true)
	}
	g := p.g
	g.liveMu.Lock()
	p.over = true
	p.syncBytesLocked(k)
	g.liveMu.Unlock()
	p.finish()
}

// syncBytesLocked adds what the kernel moved since the last look to the byte counters
// (on scrape and at the end). g.liveMu is held.
func (p *proxied) syncBytesLocked(k kernelConn) {
	ab, ba := k.Bytes()
	if d := ab - p.syncedIn; ab > p.syncedIn {
		p.route.stats.bytesIn.Add(float64(d))
		p.syncedIn = ab
	}
	if d := ba - p.syncedOut; ba > p.syncedOut {
		p.route.stats.bytesOut.Add(float64(d))
		p.syncedOut = ba
	}
}

// syncKernelBytes brings the byte counters of live sockmap connections up to date: the
// kernel counts their bytes in a BPF map, read here on every scrape.
func (g *Gateway) syncKernelBytes() {
	g.liveMu.Lock()
	defer g.liveMu.Unlock()
	for c := range g.live {
		if p, ok := c.(*proxied); ok && p.k != nil {
			p.syncBytesLocked(p.k)
		}
	}
}
