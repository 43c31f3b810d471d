package eastwest

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"

	"github.com/meshfed/meshfed/internal/hbonetest"
	"github.com/meshfed/meshfed/trust/devca"
)

// pki is one test clusterset: a dev CA per trust domain, east and west federated (the
// bundle map the gateway reads), north not.
type pki struct {
	cas       map[string]*devca.CA
	federated *x509bundle.Set // east + west: what --bundle-dir gives west's gateway
	all       *x509bundle.Set // east + west + north: what a test client trusts
}

func newPKI(t testing.TB) *pki {
	t.Helper()
	p := &pki{cas: map[string]*devca.CA{}, federated: x509bundle.NewSet(), all: x509bundle.NewSet()}
	for _, td := range []string{"east.example", "west.example", "north.example"} {
		ca, err := devca.Init(t.TempDir(), td, devca.Options{})
		if err != nil {
			t.Fatal(err)
		}
		roots, err := ca.Roots()
		if err != nil {
			t.Fatal(err)
		}
		b := x509bundle.FromX509Authorities(ca.TrustDomain(), roots)
		p.all.Add(b)
		if td != "north.example" {
			p.federated.Add(b)
		}
		p.cas[td] = ca
	}
	return p
}

func (p *pki) svid(t testing.TB, id string) *devca.SVID {
	t.Helper()
	u, _ := parseTD(id)
	s, err := p.cas[u].Issue(devca.IssueRequest{ID: id})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func (p *pki) cert(t testing.TB, id string) *tls.Certificate { return p.svid(t, id).TLSCertificate() }

func parseTD(id string) (string, string) {
	rest := id[len("spiffe://"):]
	for i := 0; i < len(rest); i++ {
		if rest[i] == '/' {
			return rest[:i], rest[i:]
		}
	}
	return rest, ""
}

const (
	gatewayID = "spiffe://west.example/ns/meshfed/sa/gateway"
	clientID  = "spiffe://east.example/ns/demo/sa/client" // the source ztunnel's
	echoID    = "spiffe://west.example/ns/demo/sa/echo"   // the destination workload's
)

// hgw is a gateway serving SNI and HBONE side by side.
type hgw struct {
	*gw
	hboneAddr string
}

// startHBONEGateway starts a gateway of west (SVID gatewayID unless cfg.HBONE is set)
// trusting p.federated, with both listeners.
func startHBONEGateway(t *testing.T, p *pki, cfg Config, rt *RouteTable) *hgw {
	t.Helper()
	if cfg.HBONE == nil {
		cert := p.cert(t, gatewayID)
		cfg.HBONE = &HBONEConfig{Certificate: func() (*tls.Certificate, error) { return cert, nil }, Bundles: p.federated}
	}
	reg := prometheus.NewRegistry()
	cfg.Registry = reg
	cfg.Cluster = "west"
	if cfg.Log == nil {
		cfg.Log = testLogger(t)
	}
	g, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	g.SetRoutes(rt)
	ln, err := g.Listen(context.Background(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hln, err := g.Listen(context.Background(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	x := &hgw{gw: &gw{Gateway: g, addr: ln.Addr().String(), reg: reg, cancel: cancel, done: make(chan error, 1)}, hboneAddr: hln.Addr().String()}
	errs := make(chan error, 2)
	go func() { errs <- g.Serve(ctx, ln) }()
	go func() { errs <- g.ServeHBONE(ctx, hln) }()
	go func() {
		e1, e2 := <-errs, <-errs
		if e1 == nil {
			e1 = e2
		}
		x.done <- e1
	}()
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

func (x *hgw) hboneRejected(reason string) float64 {
	return counter(x.m.rejected.WithLabelValues(ProtocolHBONE, reason))
}

// dialHBONE opens one tunnel through the gateway as clientID (or cert when given).
func (x *hgw) dialHBONE(t *testing.T, p *pki, cert *tls.Certificate, authority string) (*hbonetest.Conn, *hbonetest.Stream, error) {
	t.Helper()
	if cert == nil {
		cert = p.cert(t, clientID)
	}
	// The stream lives as long as its request's context: not bounded here.
	return hbonetest.Dial(context.Background(), x.hboneAddr, authority, hbonetest.ClientTLS(cert, p.all, gatewayID))
}

// tcpApp is a plain TCP app: echoes lines; on "half\n" reads to EOF and answers how many
// bytes followed, then half-closes; on "bye\n" answers "bye" and half-closes at once.
type tcpApp struct {
	addr     string
	accepted atomic.Int64
}

func startTCPApp(t *testing.T) *tcpApp {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := &tcpApp{addr: ln.Addr().String()}
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
			a.accepted.Add(1)
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					switch line {
					case "half\n":
						n, _ := io.Copy(io.Discard, r)
						fmt.Fprintf(c, "got %d bytes after half-close\n", n)
						c.(*net.TCPConn).CloseWrite()
						io.Copy(io.Discard, r)
						return
					case "bye\n":
						io.WriteString(c, "bye\n")
						c.(*net.TCPConn).CloseWrite()
						io.Copy(io.Discard, r)
						return
					}
					if _, err := c.Write([]byte(line)); err != nil {
						return
					}
				}
			}()
		}
	}()
	return a
}

func (a *tcpApp) port() uint32 {
	_, p, _ := net.SplitHostPort(a.addr)
	n, _ := strconv.Atoi(p)
	return uint32(n)
}

// hboneTable routes demo/echo:8443 (SNI at sniPort, HBONE at hbonePort, both on
// 127.0.0.1) and demo/plain:8443, whose endpoint has no HBONE port (at plainPort).
func hboneTable(sniPort, hbonePort, plainPort uint32) *RouteTable {
	return &RouteTable{Origin: "test", Services: map[ServiceKey][]Endpoint{
		{Namespace: "demo", Name: "echo", Port: 8443}:  {{Address: "127.0.0.1", Port: sniPort, Ready: true, HBONEPort: hbonePort}},
		{Namespace: "demo", Name: "plain", Port: 8443}: {{Address: "127.0.0.1", Port: plainPort, Ready: true}},
	}}
}

const echoAuthority = "echo.demo.svc.cluster.local:8443"
