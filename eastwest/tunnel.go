package eastwest

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshfed/meshfed/api/names"
)

// ServeHTTP serves one HTTP/2 stream of an HBONE connection: a CONNECT to an exported
// service port becomes a tunnel to one of its HBONE endpoints; anything else is an HTTP
// error, counted by reason, and no backend is contacted.
func (h *hboneServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	g := h.g
	if r.Method != http.MethodConnect {
		w.Header().Set("Allow", http.MethodConnect)
		h.refuse(w, r, http.StatusMethodNotAllowed, ReasonMethod, "only CONNECT: this is an HBONE endpoint")
		return
	}
	a, err := names.ParseAuthority(r.Host)
	switch {
	case errors.Is(err, names.ErrIPAuthority):
		h.refuse(w, r, http.StatusBadRequest, ReasonIPAuthority, "the authority is an IP address: the gateway tunnels to exported service names only, <service>.<namespace>.svc."+g.cfg.Domain+":<port>")
		return
	case err != nil:
		h.refuse(w, r, http.StatusBadRequest, ReasonBadAuthority, "bad authority: "+err.Error())
		return
	}
	var rt *route
	if t := g.tbl.Load(); t != nil {
		rt = t.byAuthority[a.String()]
	}
	switch {
	case rt == nil:
		h.refuse(w, r, http.StatusNotFound, ReasonUnknownAuthority, a.String()+" is no service port this cluster exports")
		return
	case len(rt.eps) == 0 && rt.ready > 0:
		h.refuse(w, r, http.StatusServiceUnavailable, ReasonNoHBONEEndpoint, a.String()+" has no ready endpoint with an HBONE port")
		return
	case len(rt.eps) == 0:
		h.refuse(w, r, http.StatusServiceUnavailable, ReasonNoReadyEndpoint, a.String()+" has no ready endpoint")
		return
	case g.draining.Load():
		h.refuse(w, r, http.StatusServiceUnavailable, ReasonDraining, "the gateway is draining")
		return
	}
	if g.faultOnStream(rt.key) {
		panic(http.ErrAbortHandler) // a drill's reset: RST_STREAM, nothing answered
	}
	// The global limit counts tunnels like connections.
	if n := g.open.Add(1); g.cfg.MaxConns > 0 && n > int64(g.cfg.MaxConns) {
		g.open.Add(-1)
		h.refuse(w, r, http.StatusServiceUnavailable, ReasonLimit, "the gateway's connection limit is reached")
		return
	}
	if !g.admit() {
		g.open.Add(-1)
		h.refuse(w, r, http.StatusServiceUnavailable, ReasonDraining, "the gateway is draining")
		return
	}
	g.m.open.Inc()
	if n := rt.svc.active.Add(1); g.cfg.MaxConnsPerService > 0 && n > int64(g.cfg.MaxConnsPerService) {
		rt.svc.active.Add(-1)
		g.release()
		h.refuse(w, r, http.StatusServiceUnavailable, ReasonServiceLimit, "the service's connection limit is reached")
		return
	}
	up, ep := g.connect(rt)
	if up == nil {
		rt.svc.active.Add(-1)
		g.release()
		h.refuse(w, r, http.StatusBadGateway, ReasonUpstreamFailed, "no endpoint of "+a.String()+" could be reached")
		return
	}
	t := &tunnel{g: g, w: w, rc: http.NewResponseController(w), body: r.Body, up: up, route: rt, ep: ep, start: time.Now()}
	t.last.Store(t.start.UnixNano())
	rt.stats.activeGauge.Inc()
	g.addLive(t)
	if g.log.Enabled(context.Background(), slog.LevelDebug) {
		g.log.Debug("tunnelling", "protocol", ProtocolHBONE, "remote", r.RemoteAddr, "service", rt.key.String(), "endpoint", ep.addr)
	}
	t.run()
}

func (h *hboneServer) refuse(w http.ResponseWriter, r *http.Request, code int, reason, msg string) {
	h.g.m.rejected.WithLabelValues(ProtocolHBONE, reason).Inc()
	if h.g.log.Enabled(context.Background(), slog.LevelDebug) {
		h.g.log.Debug("refused", "protocol", ProtocolHBONE, "reason", reason, "remote", r.RemoteAddr, "method", r.Method, "authority", r.Host)
	}
	http.Error(w, msg, code)
}

// tunnel is one CONNECT stream carried to an endpoint's HBONE port.
type tunnel struct {
	g     *Gateway
	w     http.ResponseWriter
	rc    *http.ResponseController
	body  io.ReadCloser
	up    *net.TCPConn
	route *route
	ep    *epState
	start time.Time
	last  atomic.Int64 // unix nanoseconds of the last bytes moved either way

	cut, idle, failed atomic.Bool
	ending            atomic.Bool // the upstream ended: the request body is closed on purpose

	mu   sync.Mutex // guards done and the abort of a running handler
	done bool
}

// run answers 200, then carries bytes both ways until the upstream ends (or either side
// fails, or the idle timeout, or the end of a drain). The client's end of stream
// half-closes the upstream and the upstream's bytes keep flowing; the upstream's end
// ends the response (END_STREAM), and with it the stream: Go's HTTP/2 server cannot end
// a response while it still reads the request, so what the client sends after that is
// refused (RST_STREAM NO_ERROR).
func (t *tunnel) run() {
	defer t.finish()
	t.w.WriteHeader(http.StatusOK)
	if err := t.rc.Flush(); err != nil {
		t.failed.Store(true)
		return
	}
	if idle := t.g.cfg.IdleTimeout; idle > 0 {
		// Re-armed by itself while bytes move; a no-op once the tunnel is done.
		time.AfterFunc(idle, t.checkIdle)
	}
	in := make(chan struct{})
	go func() {
		defer close(in)
		t.clientToUpstream()
	}()
	t.upstreamToClient()
	// The response ends here; stop reading the request (a no-op after its end).
	t.ending.Store(true)
	t.body.Close()
	<-in
}

func (t *tunnel) clientToUpstream() {
	err := t.copy(t.up, t.body, t.route.stats.bytesIn)
	if err == nil {
		_ = t.up.CloseWrite() // the client's END_STREAM: pass the half-close on
		return
	}
	if !t.stopping() {
		t.failed.Store(true)
	}
	t.up.Close() // wakes upstreamToClient
}

func (t *tunnel) upstreamToClient() {
	err := t.copy(flushWriter{t.w, t.rc}, t.up, t.route.stats.bytesOut)
	if err != nil && !t.stopping() {
		t.failed.Store(true)
	}
}

// stopping is true once the tunnel is being ended on purpose (idle, drain, or the
// upstream's end closing the request body).
func (t *tunnel) stopping() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.done || t.ending.Load() || t.idle.Load() || t.cut.Load()
}

// copy moves src to dst until src's EOF (nil) or an error, counting bytes.
func (t *tunnel) copy(dst io.Writer, src io.Reader, counter prometheus.Counter) error {
	bufp := tunnelBufs.Get().(*[]byte)
	defer tunnelBufs.Put(bufp)
	buf := *bufp
	for {
		n, rerr := src.Read(buf)
		if n > 0 {
			t.last.Store(nowNano())
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return werr
			}
			counter.Add(float64(n))
		}
		if rerr == io.EOF {
			return nil
		}
		if rerr != nil {
			return rerr
		}
	}
}

var tunnelBufs = sync.Pool{New: func() any { b := make([]byte, hboneCopyBuffer); return &b }}

// flushWriter flushes every write: tunnelled bytes must not wait in a buffer.
type flushWriter struct {
	w  http.ResponseWriter
	rc *http.ResponseController
}

func (f flushWriter) Write(p []byte) (int, error) {
	n, err := f.w.Write(p)
	if err == nil {
		err = f.rc.Flush()
	}
	return n, err
}

// checkIdle ends the tunnel when no byte moved for the idle timeout, else re-arms.
func (t *tunnel) checkIdle() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.done {
		return
	}
	if left := t.g.cfg.IdleTimeout - time.Since(time.Unix(0, t.last.Load())); left > 0 {
		time.AfterFunc(left, t.checkIdle)
		return
	}
	t.idle.Store(true)
	t.abortLocked()
}

// cutNow ends the tunnel at the end of the drain timeout.
func (t *tunnel) cutNow() {
	t.cut.Store(true)
	t.abort()
}

// abort unblocks both directions: the upstream closed, the request body closed, and the
// response's write deadline in the past (which resets a stream stuck on flow control).
func (t *tunnel) abort() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.abortLocked()
}

func (t *tunnel) abortLocked() {
	if t.done {
		return
	}
	t.up.Close()
	t.body.Close()
	_ = t.rc.SetWriteDeadline(aLongTimeAgo)
}

func (t *tunnel) finish() {
	t.mu.Lock()
	t.done = true
	t.mu.Unlock()
	t.up.Close()
	t.g.dropLive(t)
	t.g.closed(t.route, t.ep, outcome{cut: t.cut.Load(), idle: t.idle.Load(), failed: t.failed.Load()}, t.start)
}
