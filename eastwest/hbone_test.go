package eastwest

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meshfed/meshfed/api/fault"
	"github.com/meshfed/meshfed/internal/hbonetest"
	"github.com/meshfed/meshfed/internal/reloadfile"
)

func readLine(t *testing.T, r *bufio.Reader) string {
	t.Helper()
	s, err := r.ReadString('\n')
	if err != nil {
		t.Fatalf("read: %q, %v", s, err)
	}
	return s
}

func expectEOF(t *testing.T, r io.Reader) {
	t.Helper()
	if n, err := r.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Fatalf("want EOF, got %d bytes, %v", n, err)
	}
}

// East's source ztunnel → west's gateway (HBONE) → the destination ztunnel at the
// endpoint's HBONE port → the app: the inner TLS session ends at the destination
// workload's identity, never the gateway's; bytes flow both ways and a half-close passes.
func TestHBONEDoubleTunnel(t *testing.T) {
	p := newPKI(t)
	app := startTCPApp(t)
	z, err := hbonetest.StartZtunnel("127.0.0.1:0", p.cert(t, echoID), p.all, func(string) string { return app.addr })
	if err != nil {
		t.Fatal(err)
	}
	defer z.Close()
	_, zp, _ := net.SplitHostPort(z.Addr)
	zport, _ := strconv.Atoi(zp)
	g := startHBONEGateway(t, p, Config{}, hboneTable(app.port(), uint32(zport), app.port()))

	ctx := context.Background()
	outerConn, outer, err := g.dialHBONE(t, p, nil, echoAuthority)
	if err != nil {
		t.Fatal(err)
	}
	defer outerConn.Close()
	if id, err := hbonetest.PeerID(outerConn.TLS); err != nil || id.String() != gatewayID {
		t.Fatalf("outer peer %v %v, want the gateway %s", id, err, gatewayID)
	}
	cert := p.cert(t, clientID)
	innerConn, inner, err := hbonetest.DialInner(ctx, outer, echoAuthority, hbonetest.ClientTLS(cert, p.all, echoID))
	if err != nil {
		t.Fatal(err)
	}
	defer innerConn.Close()
	if id, err := hbonetest.PeerID(innerConn.TLS); err != nil || id.String() != echoID {
		t.Fatalf("inner TLS peer %v %v: want the destination workload %s (never the gateway)", id, err, echoID)
	}
	echo(t, inner, "hello through double HBONE")
	big := strings.Repeat("x", 256<<10)
	echo(t, inner, big)
	if _, err := io.WriteString(inner, "half\nabc"); err != nil {
		t.Fatal(err)
	}
	inner.CloseWrite()
	r := bufio.NewReader(inner)
	if got := readLine(t, r); got != "got 3 bytes after half-close\n" {
		t.Fatalf("after half-close: %q", got)
	}
	expectEOF(t, r)
	if a := z.Authorities(); len(a) != 1 || a[0] != echoAuthority {
		t.Fatalf("destination ztunnel saw %v", a)
	}
	for _, dir := range []string{"in", "out"} {
		if n := counter(g.m.bytes.WithLabelValues("demo/echo", ProtocolHBONE, dir)); n < 256<<10 {
			t.Errorf("hbone bytes %s = %v", dir, n)
		}
	}
	innerConn.Close()
	outerConn.Close()
	waitFor(t, "the tunnel and its connection closed", 10*time.Second, func() bool { return g.Active() == 0 })
	if ok, e := counter(g.m.conns.WithLabelValues("demo/echo", ProtocolHBONE, ResultOK)), counter(g.m.conns.WithLabelValues("demo/echo", ProtocolHBONE, ResultError)); ok+e != 1 {
		t.Fatalf("tunnels counted: ok %v, error %v", ok, e)
	}
}

// Single HBONE to a plain TCP endpoint: the client's END_STREAM half-closes the upstream
// and its answer still comes back; the upstream's end ends the response.
func TestHBONEHalfClose(t *testing.T) {
	p := newPKI(t)
	app := startTCPApp(t)
	g := startHBONEGateway(t, p, Config{}, hboneTable(app.port(), app.port(), app.port()))

	c, s, err := g.dialHBONE(t, p, nil, echoAuthority)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	echo(t, s, "line")
	io.WriteString(s, "half\n12345")
	s.CloseWrite()
	r := bufio.NewReader(s)
	if got := readLine(t, r); got != "got 5 bytes after half-close\n" {
		t.Fatalf("client-first half-close: %q", got)
	}
	expectEOF(t, r)

	// Upstream first: the app answers and half-closes; the client sees the end of stream.
	s2, err := c.Connect(context.Background(), echoAuthority)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(s2, "bye\n")
	r2 := bufio.NewReader(s2)
	if got := readLine(t, r2); got != "bye\n" {
		t.Fatalf("upstream-first: %q", got)
	}
	expectEOF(t, r2)
}

// Every refusal is an HTTP error or a failed handshake, counted by reason, and no backend
// is ever contacted.
func TestHBONERefusalsNeverReachABackend(t *testing.T) {
	p := newPKI(t)
	echoApp, plainApp := startTCPApp(t), startTCPApp(t)
	g := startHBONEGateway(t, p, Config{}, hboneTable(echoApp.port(), echoApp.port(), plainApp.port()))
	ctx := context.Background()
	c, err := hbonetest.DialConn(ctx, g.hboneAddr, hbonetest.ClientTLS(p.cert(t, clientID), p.all, gatewayID))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, tc := range []struct {
		method, authority string
		code              int
		reason            string
	}{
		{http.MethodConnect, "nope.demo.svc.cluster.local:8443", http.StatusNotFound, ReasonUnknownAuthority},
		{http.MethodConnect, "echo.demo.svc.cluster.local:9999", http.StatusNotFound, ReasonUnknownAuthority},
		{http.MethodConnect, "echo.demo.svc.other.example:8443", http.StatusNotFound, ReasonUnknownAuthority},
		{http.MethodConnect, echoApp.addr, http.StatusBadRequest, ReasonIPAuthority},
		{http.MethodConnect, "[::1]:8443", http.StatusBadRequest, ReasonIPAuthority},
		{http.MethodConnect, "echo.demo:8443", http.StatusBadRequest, ReasonBadAuthority},
		{http.MethodGet, echoAuthority, http.StatusMethodNotAllowed, ReasonMethod},
		{http.MethodPost, echoAuthority, http.StatusMethodNotAllowed, ReasonMethod},
		{http.MethodConnect, "plain.demo.svc.cluster.local:8443", http.StatusServiceUnavailable, ReasonNoHBONEEndpoint},
	} {
		resp, s, err := c.Do(ctx, tc.method, tc.authority)
		if err != nil {
			t.Fatalf("%s %s: %v", tc.method, tc.authority, err)
		}
		if s != nil || resp.StatusCode != tc.code {
			t.Errorf("%s %s: status %d, want %d", tc.method, tc.authority, resp.StatusCode, tc.code)
		}
		resp.Body.Close()
	}
	for reason, want := range map[string]float64{ReasonUnknownAuthority: 3, ReasonIPAuthority: 2, ReasonBadAuthority: 1, ReasonMethod: 2, ReasonNoHBONEEndpoint: 1} {
		if n := g.hboneRejected(reason); n != want {
			t.Errorf("rejected{protocol=hbone,reason=%s} = %v, want %v", reason, n, want)
		}
	}

	// Handshake refusals. With TLS 1.3 the client's handshake ends before the server has
	// judged its certificate: the refusal shows on the first exchange.
	tunnel := func(cfg *tls.Config) error {
		c, s, err := hbonetest.Dial(ctx, g.hboneAddr, echoAuthority, cfg)
		if err == nil {
			s.Close()
			c.Close()
		}
		return err
	}
	if err := tunnel(hbonetest.ClientTLS(nil, p.all, gatewayID)); err == nil {
		t.Error("a client without a certificate got a tunnel")
	}
	if err := tunnel(hbonetest.ClientTLS(p.cert(t, "spiffe://north.example/ns/demo/sa/client"), p.all, gatewayID)); err == nil {
		t.Error("a client of an unfederated trust domain got a tunnel")
	}
	noALPN := hbonetest.ClientTLS(p.cert(t, clientID), p.all, gatewayID)
	noALPN.NextProtos = nil
	if tc, err := tls.Dial("tcp", g.hboneAddr, noALPN); err == nil {
		if n, err := tc.Read(make([]byte, 1)); n != 0 || err == nil {
			t.Error("a client without ALPN h2 was served")
		}
		tc.Close()
	}
	waitFor(t, "handshake refusals counted", 10*time.Second, func() bool {
		return g.hboneRejected(ReasonNoClientCert) == 1 && g.hboneRejected(ReasonUntrustedClient) == 1 && g.hboneRejected(ReasonNotH2) == 1
	})
	if n := echoApp.accepted.Load() + plainApp.accepted.Load(); n != 0 {
		t.Fatalf("a refused request reached a backend (%d connections)", n)
	}
}

// Only the allowed trust domains may call, when the gateway narrows them.
func TestHBONEAllowedTrustDomains(t *testing.T) {
	p := newPKI(t)
	app := startTCPApp(t)
	cert := p.cert(t, gatewayID)
	g := startHBONEGateway(t, p, Config{HBONE: &HBONEConfig{Certificate: func() (*tls.Certificate, error) { return cert, nil },
		Bundles: p.federated, TrustDomains: []string{"west.example"}}}, hboneTable(app.port(), app.port(), app.port()))
	if _, _, err := g.dialHBONE(t, p, nil, echoAuthority); err == nil {
		t.Fatal("east is federated but not allowed: its tunnel must be refused")
	}
	c, s, err := g.dialHBONE(t, p, p.cert(t, "spiffe://west.example/ns/demo/sa/local"), echoAuthority)
	if err != nil {
		t.Fatalf("west is allowed: %v", err)
	}
	defer c.Close()
	echo(t, s, "allowed")
	waitFor(t, "the refusal counted", 5*time.Second, func() bool { return g.hboneRejected(ReasonUntrustedClient) == 1 })
}

// The gateway's SVID is re-read from disk: a rotation is used by new connections while the
// old ones keep working.
func TestHBONECertRotation(t *testing.T) {
	p := newPKI(t)
	app := startTCPApp(t)
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "svid.pem"), filepath.Join(dir, "svid-key.pem")
	first := p.svid(t, gatewayID)
	if err := first.WriteFiles(certFile, keyFile); err != nil {
		t.Fatal(err)
	}
	kp, err := reloadfile.KeyPair(certFile, keyFile, reloadfile.Options{CheckInterval: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	g := startHBONEGateway(t, p, Config{HBONE: &HBONEConfig{Certificate: kp.Get, Bundles: p.federated}}, hboneTable(app.port(), app.port(), app.port()))
	serial := func(c *hbonetest.Conn) string {
		return c.TLS.ConnectionState().PeerCertificates[0].SerialNumber.String()
	}

	old, live, err := g.dialHBONE(t, p, nil, echoAuthority)
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	if serial(old) != first.Chain[0].SerialNumber.String() {
		t.Fatal("the gateway does not present the SVID on disk")
	}
	echo(t, live, "before rotation")
	next := p.svid(t, gatewayID)
	if err := next.WriteFiles(certFile, keyFile); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the rotated SVID presented", 10*time.Second, func() bool {
		c, s, err := g.dialHBONE(t, p, nil, echoAuthority)
		if err != nil {
			t.Fatalf("tunnel during rotation: %v", err)
		}
		defer c.Close()
		s.Close()
		return serial(c) == next.Chain[0].SerialNumber.String()
	})
	echo(t, live, "the live tunnel outlives the rotation")
}

// SIGTERM: the health name says draining at once, live tunnels go on, the HBONE listener
// closes, and the gateway stops when the last tunnel ends.
func TestHBONEDrain(t *testing.T) {
	p := newPKI(t)
	app := startTCPApp(t)
	g := startHBONEGateway(t, p, Config{DrainTimeout: 10 * time.Second}, hboneTable(app.port(), app.port(), app.port()))
	c, live, err := g.dialHBONE(t, p, nil, echoAuthority)
	if err != nil {
		t.Fatal(err)
	}
	echo(t, live, "before")
	g.cancel() // what SIGTERM does in the command
	waitFor(t, "the health name says draining", 5*time.Second, func() bool { return strings.HasPrefix(g.HealthLine(), "draining ") })
	waitFor(t, "HBONE listener closed", 10*time.Second, func() bool {
		c, err := net.Dial("tcp", g.hboneAddr)
		if err == nil {
			c.Close()
		}
		return err != nil
	})
	echo(t, live, "still tunnelled while draining")
	select {
	case <-g.done:
		t.Fatal("the gateway stopped with a live tunnel")
	default:
	}
	live.Close()
	c.Close()
	select {
	case err := <-g.done:
		if err != nil {
			t.Fatal(err)
		}
		g.done <- nil
	case <-time.After(10 * time.Second):
		t.Fatal("the gateway did not stop after the last tunnel")
	}
}

func TestHBONEDrainTimeoutAndIdleCut(t *testing.T) {
	p := newPKI(t)
	app := startTCPApp(t)
	g := startHBONEGateway(t, p, Config{DrainTimeout: 300 * time.Millisecond, IdleTimeout: 300 * time.Millisecond},
		hboneTable(app.port(), app.port(), app.port()))
	c, idle, err := g.dialHBONE(t, p, nil, echoAuthority)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	echo(t, idle, "then nothing")
	if _, err := idle.Read(make([]byte, 1)); err == nil {
		t.Fatal("an idle tunnel was not ended")
	}
	waitFor(t, "idle tunnel counted", 10*time.Second, func() bool {
		return counter(g.m.conns.WithLabelValues("demo/echo", ProtocolHBONE, ResultIdleTimeout)) == 1
	})
	c2, busy, err := g.dialHBONE(t, p, nil, echoAuthority)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	stop := make(chan struct{})
	go func() { // keep it busy past the drain timeout
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := io.WriteString(busy, "tick\n"); err != nil {
				return
			}
			time.Sleep(20 * time.Millisecond) // traffic pacing, not synchronisation
		}
	}()
	defer close(stop)
	go io.Copy(io.Discard, busy)
	g.cancel()
	select {
	case <-g.done:
		g.done <- nil
	case <-time.After(10 * time.Second):
		t.Fatal("the drain timeout did not cut the tunnel")
	}
	if n := counter(g.m.conns.WithLabelValues("demo/echo", ProtocolHBONE, ResultDrained)); n != 1 {
		t.Fatalf("drained tunnels: %v", n)
	}
}

// A dead HBONE endpoint is ejected and the next one tried; the per-service limit holds
// for tunnels too.
func TestHBONERetryAndLimits(t *testing.T) {
	p := newPKI(t)
	app := startTCPApp(t)
	dead, _ := net.Listen("tcp", "127.0.0.1:0")
	deadPort := dead.Addr().(*net.TCPAddr).Port
	dead.Close()
	rt := hboneTable(app.port(), app.port(), app.port())
	k := ServiceKey{Namespace: "demo", Name: "echo", Port: 8443}
	rt.Services[k] = append(rt.Services[k], Endpoint{Address: "127.0.0.2", Port: app.port(), Ready: true, HBONEPort: uint32(deadPort)})
	g := startHBONEGateway(t, p, Config{MaxConnsPerService: 1}, rt)
	var opened []*hbonetest.Conn
	defer func() {
		for _, c := range opened {
			c.Close()
		}
	}()
	c, s, err := g.dialHBONE(t, p, nil, echoAuthority)
	if err != nil {
		t.Fatal(err)
	}
	opened = append(opened, c)
	echo(t, s, "one")
	_, _, err = g.dialHBONE(t, p, nil, echoAuthority)
	var se *hbonetest.StatusError
	if !errors.As(err, &se) || se.Code != http.StatusServiceUnavailable || g.hboneRejected(ReasonServiceLimit) != 1 {
		t.Fatalf("second tunnel over the per-service limit: %v", err)
	}
	_ = s.Close()
	c.Close()
	waitFor(t, "the first tunnel ended", 10*time.Second, func() bool { return g.Active() == 0 })
	// Tunnels until the dead endpoint has been picked (half the picks while it is in
	// rotation): each succeeds, on the live endpoint.
	for i := 0; i < 40 && counter(g.m.connectErrs.WithLabelValues("demo/echo")) == 0; i++ {
		c, s, err := g.dialHBONE(t, p, nil, echoAuthority)
		if err != nil {
			t.Fatalf("tunnel %d: %v", i, err)
		}
		echo(t, s, "again")
		s.Close()
		c.Close()
		waitFor(t, "tunnel ended", 10*time.Second, func() bool { return g.Active() == 0 })
	}
	if counter(g.m.connectErrs.WithLabelValues("demo/echo")) != 1 || counter(g.m.ejections.WithLabelValues("demo/echo")) != 1 {
		t.Fatal("the dead HBONE endpoint was not tried once and ejected")
	}
}

// A drill's reset narrowed to a service resets its HBONE tunnels (the stream, not the
// connection), and a global one resets new HBONE connections; no backend is contacted.
func TestHBONEDrillReset(t *testing.T) {
	p := newPKI(t)
	app := startTCPApp(t)
	rt := hboneTable(app.port(), app.port(), app.port())
	g := startHBONEGateway(t, p, Config{}, rt)
	c, err := hbonetest.DialConn(context.Background(), g.hboneAddr, hbonetest.ClientTLS(p.cert(t, clientID), p.all, gatewayID))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	g.SetRoutes(withFault(rt, fault.Fault{Spec: fault.Spec{Kind: fault.Reset}, Namespace: "demo", Service: "echo", Deadline: time.Now().Add(time.Minute)}))
	if _, err := c.Connect(context.Background(), echoAuthority); err == nil {
		t.Fatal("a tunnel to a service under a reset drill was opened")
	}
	if resp, _, err := c.Do(context.Background(), http.MethodConnect, "plain.demo.svc.cluster.local:8443"); err != nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("the connection itself must survive a narrowed fault: %v", err)
	}
	g.SetRoutes(withFault(rt, fault.Fault{Spec: fault.Spec{Kind: fault.Reset}, Deadline: time.Now().Add(time.Minute)}))
	if _, _, err := g.dialHBONE(t, p, nil, echoAuthority); err == nil {
		t.Fatal("an HBONE connection was served under a global reset drill")
	}
	if app.accepted.Load() != 0 {
		t.Fatal("a reset tunnel reached the backend")
	}
}
