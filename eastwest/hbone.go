package eastwest

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"golang.org/x/net/http2"
)

// HBONE (Istio ambient's HTTP-Based Overlay Network Environment) at the east-west gateway:
// a remote source ztunnel opens mTLS to the gateway, ALPN h2, and sends an HTTP/2 CONNECT
// per tunnel whose :authority names a service port this cluster exports
// (<svc>.<ns>.svc.<domain>:<port>); the gateway picks a ready endpoint of it that has an
// HBONE port and carries the stream's bytes, unchanged, to that port (where they are the
// inner HBONE session, mTLS from the source ztunnel to the destination's). Nothing but
// exported service names is routed: the gateway is never a general tunnel.

// Limits of the HBONE listener's HTTP/2 server.
const (
	hboneMaxHeaderBytes   = 16 << 10
	hboneMaxStreams       = 1000
	hboneCopyBuffer       = 32 << 10
	hboneConnIdleFallback = 5 * time.Minute // outer connection without streams, when IdleTimeout is 0
)

// hboneServer is the HBONE listener's state: TLS, HTTP/2 and the outer connections.
type hboneServer struct {
	g   *Gateway
	cfg *HBONEConfig
	tls *tls.Config
	h1  *http.Server // base configuration; its Shutdown sends GOAWAY on every connection
	h2  *http2.Server

	shutdownOnce sync.Once
}

func newHBONEServer(g *Gateway, cfg *HBONEConfig) (*hboneServer, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	idle := g.cfg.IdleTimeout
	if idle <= 0 {
		idle = hboneConnIdleFallback
	}
	h := &hboneServer{g: g, cfg: cfg, tls: cfg.tlsConfig()}
	h.h1 = &http.Server{MaxHeaderBytes: hboneMaxHeaderBytes, ErrorLog: slog.NewLogLogger(g.log.Handler(), slog.LevelDebug)}
	h.h2 = &http2.Server{MaxConcurrentStreams: hboneMaxStreams, IdleTimeout: idle, MaxReadFrameSize: 1 << 20}
	if err := http2.ConfigureServer(h.h1, h.h2); err != nil {
		return nil, fmt.Errorf("HBONE HTTP/2 server: %w", err)
	}
	return h, nil
}

// ServeHBONE accepts HBONE connections on ln (the gateway must have been made with
// Config.HBONE) until ctx ends or Drain is called, then drains like Serve: it stops
// accepting, tells every HBONE connection to open no new tunnel (HTTP/2 GOAWAY), lets
// live tunnels finish for up to DrainTimeout, then cuts the rest. It closes ln. Serve and
// ServeHBONE may run side by side on one gateway: one route table, one drain.
func (g *Gateway) ServeHBONE(ctx context.Context, ln net.Listener) error {
	if g.hbone == nil {
		ln.Close()
		return errors.New("HBONE is not configured (Config.HBONE)")
	}
	h := g.hbone
	return g.serveListener(ctx, ln, func(closed context.Context, ln net.Listener) error {
		return g.acceptLoop(closed, ln, ProtocolHBONE, h.handle)
	}, h.goAway)
}

// goAway tells every HBONE connection that no new stream will be accepted; connections
// close once their tunnels are done.
func (h *hboneServer) goAway() {
	h.shutdownOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		// No listener and no HTTP/1 connection is tracked by h1: Shutdown only runs the
		// HTTP/2 graceful-shutdown hooks (GOAWAY) and returns.
		_ = h.h1.Shutdown(ctx)
	})
}

// outerConn is one HBONE connection (mTLS + HTTP/2), cut at the end of the drain.
type outerConn struct{ c net.Conn }

func (o *outerConn) cutNow() { o.c.Close() }

// handle terminates the outer mTLS of one HBONE connection and serves its HTTP/2 streams.
func (h *hboneServer) handle(c *net.TCPConn) {
	g := h.g
	defer g.release()
	if g.faultOnAccept(c) {
		return
	}
	start := time.Now()
	_ = c.SetDeadline(start.Add(g.cfg.HelloTimeout))
	tc := tls.Server(c, h.tls)
	if err := tc.Handshake(); err != nil {
		reason := handshakeReason(err)
		g.m.rejected.WithLabelValues(ProtocolHBONE, reason).Inc()
		if g.log.Enabled(context.Background(), slog.LevelDebug) {
			g.log.Debug("refused", "protocol", ProtocolHBONE, "reason", reason, "remote", c.RemoteAddr().String(), "err", err)
		}
		c.Close()
		return
	}
	if p := tc.ConnectionState().NegotiatedProtocol; p != ALPNH2 {
		// A client that offered no ALPN at all gets here (one that offered others failed
		// the handshake with no_application_protocol).
		g.m.rejected.WithLabelValues(ProtocolHBONE, ReasonNotH2).Inc()
		g.log.Debug("refused", "protocol", ProtocolHBONE, "reason", ReasonNotH2, "alpn", p, "remote", c.RemoteAddr().String())
		_ = tc.Close()
		return
	}
	_ = c.SetDeadline(time.Time{})
	g.m.helloSecs.Observe(time.Since(start).Seconds())
	if g.draining.Load() {
		// Accepted in the last moment: the drain has begun (and its GOAWAY gone out).
		g.m.rejected.WithLabelValues(ProtocolHBONE, ReasonDraining).Inc()
		_ = tc.Close()
		return
	}
	oc := &outerConn{c: tc}
	g.addLive(oc)
	defer g.dropLive(oc)
	h.h2.ServeConn(tc, &http2.ServeConnOpts{BaseConfig: h.h1, Handler: h})
}
