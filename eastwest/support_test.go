package eastwest

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/meshfed/meshfed/api/names"
	"github.com/meshfed/meshfed/eastwest/internal/sockmap"
	"github.com/meshfed/meshfed/eastwest/internal/tlstest"
	"github.com/meshfed/meshfed/internal/waitfor"
)

// backend is a real TLS server: it echoes lines, and on "half\n" reads to EOF and then
// answers how many bytes followed, proving half-close passes through the gateway.
type backend struct {
	addr     string
	accepted atomic.Int64
	cert     tls.Certificate
	pool     *x509.CertPool
	ln       net.Listener
}

func startBackend(t *testing.T, listen string) *backend {
	t.Helper()
	b := &backend{}
	b.cert, b.pool = tlstest.Cert(t, "echo.demo.svc")
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		t.Fatal(err)
	}
	b.ln, b.addr = ln, ln.Addr().String()
	cfg := &tls.Config{Certificates: []tls.Certificate{b.cert}}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			b.accepted.Add(1)
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				tc := tls.Server(c, cfg)
				r := bufio.NewReader(tc)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					if line == "half\n" {
						n, _ := io.Copy(io.Discard, r)
						fmt.Fprintf(tc, "got %d bytes after half-close\n", n)
						tc.CloseWrite()
						return
					}
					if _, err := tc.Write([]byte(line)); err != nil {
						return
					}
				}
			}()
		}
	}()
	return b
}

func (b *backend) port() uint32 {
	_, p, _ := net.SplitHostPort(b.addr)
	n, _ := strconv.Atoi(p)
	return uint32(n)
}

type gw struct {
	*Gateway
	addr   string
	reg    *prometheus.Registry
	cancel context.CancelFunc
	done   chan error
}

func testLogger(t *testing.T) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// copyModes are the copy modes this machine can run: sockmap needs root and BPF
// (eastwest/internal/sockmap.Probe), and says why when it is left out.
func copyModes(t testing.TB) []CopyMode {
	modes := []CopyMode{CopyPollSplice, CopyIOCopy}
	if err := sockmap.Probe(); err != nil {
		t.Logf("copy mode %s not run: %v", CopySockmap, err)
		return modes
	}
	return append(modes, CopySockmap)
}

// suiteCopyMode is the copy mode of every test that does not choose one:
// MESHFED_GATEWAY_COPY_MODE (hack/test.sh runs this package once more with sockmap),
// else the default.
func suiteCopyMode(t testing.TB) CopyMode {
	m := CopyMode(os.Getenv("MESHFED_GATEWAY_COPY_MODE"))
	if m == CopySockmap {
		if err := sockmap.Probe(); err != nil {
			t.Skipf("MESHFED_GATEWAY_COPY_MODE=sockmap, but the sockmap path cannot run here: %v", err)
		}
	}
	return m
}

func startGateway(t *testing.T, cfg Config, rt *RouteTable) *gw {
	t.Helper()
	if cfg.CopyMode == "" {
		cfg.CopyMode = suiteCopyMode(t)
	}
	reg := prometheus.NewRegistry()
	cfg.Registry = reg
	if cfg.Cluster == "" {
		cfg.Cluster = "east"
	}
	if cfg.Log == nil {
		cfg.Log = testLogger(t)
	}
	g, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if rt != nil {
		g.SetRoutes(rt)
	}
	ln, err := Listen(context.Background(), "127.0.0.1:0", cfg.HelloTimeout)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	x := &gw{Gateway: g, addr: ln.Addr().String(), reg: reg, cancel: cancel, done: make(chan error, 1)}
	go func() { x.done <- g.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-x.done:
		case <-time.After(10 * time.Second):
			t.Error("gateway did not stop within 10s")
		}
	})
	return x
}

// echoTable routes echo.demo port 8443 to the given endpoints (each "ip:port", all ready).
func echoTable(eps ...string) *RouteTable {
	rt := &RouteTable{Services: map[ServiceKey][]Endpoint{}, Origin: "test"}
	k := ServiceKey{Namespace: "demo", Name: "echo", Port: 8443}
	for _, e := range eps {
		h, p, _ := net.SplitHostPort(e)
		n, _ := strconv.Atoi(p)
		rt.Services[k] = append(rt.Services[k], Endpoint{Address: h, Port: uint32(n), Ready: true, Weight: 1})
	}
	return rt
}

var echoSNI = names.ServiceSNI("demo", "echo", 8443)

func dialTLS(t *testing.T, addr, sni string, pool *x509.CertPool) (*tls.Conn, error) {
	t.Helper()
	// The backend's certificate names echo.demo.svc; the client checks it against that,
	// not the SNI, the way a mesh client checks the workload identity.
	return tlstest.DialPassthrough(addr, sni, pool, "echo.demo.svc")
}

func echo(t *testing.T, c io.ReadWriter, msg string) {
	t.Helper()
	if _, err := io.WriteString(c, msg+"\n"); err != nil {
		t.Fatalf("write: %v", err)
	}
	got, err := bufio.NewReader(io.LimitReader(c, int64(len(msg)+1))).ReadString('\n')
	if err != nil || got != msg+"\n" {
		t.Fatalf("echo %q: got %q, %v", msg, got, err)
	}
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	waitfor.Cond(t, d, cond, "%s", what)
}

func counter(c prometheus.Collector) float64 { return testutil.ToFloat64(c) }

func (x *gw) rejected(reason string) float64 {
	return counter(x.m.rejected.WithLabelValues(ProtocolSNI, reason))
}

var errAny = errors.New("any")

// startBenchGateway is startGateway for benchmarks (no per-test checks).
func startBenchGateway(b *testing.B, cfg Config, rt *RouteTable) string {
	b.Helper()
	cfg.Registry = prometheus.NewRegistry()
	cfg.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	g, err := New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	g.SetRoutes(rt)
	ln, err := Listen(context.Background(), "127.0.0.1:0", cfg.HelloTimeout)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { g.Serve(ctx, ln); close(done) }()
	b.Cleanup(func() { cancel(); <-done })
	return ln.Addr().String()
}
