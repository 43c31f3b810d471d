package demo

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/meshfed/meshfed/api/names"
	"github.com/meshfed/meshfed/eastwest"
	"github.com/meshfed/meshfed/eastwest/process"
	"github.com/meshfed/meshfed/internal/atomicfile"
	"github.com/meshfed/meshfed/internal/healthprobe"
)

// Run plays the demo, writing what happens to w. It returns an error as soon as
// something does not behave as the gateway promises.
func Run(ctx context.Context, w io.Writer, log *slog.Logger) error {
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	step := 0
	say := func(format string, args ...any) { fmt.Fprintf(w, format+"\n", args...) }
	head := func(s string) { step++; say("\n%d. %s", step, s) }

	dir, err := os.MkdirTemp("", "meshfed-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	head("A workload in this cluster: a TLS echo server with its own certificate")
	ca, caKey, err := newCA("demo workload CA")
	if err != nil {
		return err
	}
	cert, err := leaf(ca, caKey, "echo.demo.svc")
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	echoLn, echoHits, err := serveEcho(ctx, "127.0.0.1:0", cert, "echo")
	if err != nil {
		return err
	}
	defer echoLn.Close()
	port := echoLn.Addr().(*net.TCPAddr).Port
	say("   echo listens on %s, certificate CN=echo.demo.svc issued by %q", echoLn.Addr(), ca.Subject.CommonName)
	dead := "127.0.0.2"
	say("   a second endpoint, %s:%d, is listed but down (nothing listens there)", dead, port)

	head("The gateway, routing what the exports file lists")
	exportsPath := filepath.Join(dir, "exports.yaml")
	write := func(content string) error { return atomicfile.Write(exportsPath, []byte(content), 0o644) }
	svc := func(name, addr string) string {
		return fmt.Sprintf("  - name: %s\n    namespace: demo\n    ports:\n      - {name: tls, port: 8443, targetPort: %d}\n    endpoints:\n      - {address: %s, zone: z1}\n", name, port, addr)
	}
	exports := "services:\n" + svc("echo", "127.0.0.1") + fmt.Sprintf("      - {address: %s, zone: z2}\n", dead)
	if err := write(exports); err != nil {
		return err
	}
	say("   %s:\n%s", exportsPath, indent(exports, "     | "))
	gwCtx, drain := context.WithCancel(ctx)
	defer drain()
	p, err := process.Start(gwCtx, process.Config{
		Gateway: eastwest.Config{Cluster: "demo", Log: log, DrainTimeout: 5 * time.Second, DrainAcceptPeriod: time.Second},
		Listen:  "127.0.0.1:0", Admin: "127.0.0.1:0",
		Exports: exportsPath, ExportsPoll: 100 * time.Millisecond,
	})
	if err != nil {
		return err
	}
	defer p.Close()
	gwAddr, admAddr := p.Addr(), p.AdminAddr()
	say("   gateway listens on %s (metrics on http://%s/metrics)", gwAddr, admAddr)

	head("A client in another cluster calls echo through the gateway, by SNI")
	sni := names.ServiceSNI("demo", "echo", 8443)
	for i := 0; i < 3; i++ {
		c, err := dial(gwAddr, sni, pool, "echo.demo.svc")
		if err != nil {
			return fmt.Errorf("call through the gateway: %w", err)
		}
		reply, err := roundTrip(c, fmt.Sprintf("hello #%d", i+1))
		peer := c.ConnectionState().PeerCertificates[0]
		c.Close()
		if err != nil {
			return err
		}
		if i == 0 {
			say("   SNI: %s", sni)
			say("   the client verified CN=%s issued by %q: the workload's own certificate,", peer.Subject.CommonName, peer.Issuer.CommonName)
			say("   so TLS went end to end and the gateway never terminated it")
		}
		say("   sent \"hello #%d\", echo answered %q", i+1, reply)
	}
	// The balancer picks among both endpoints at random; call until it has tried the dead one.
	failures := `meshfed_gateway_upstream_connect_failures_total{service="demo/echo"}`
	calls := 3
	for ; metricValue(admAddr, failures) < 1 && calls < 30; calls++ {
		c, err := dial(gwAddr, sni, pool, "echo.demo.svc")
		if err != nil {
			return fmt.Errorf("call through the gateway: %w", err)
		}
		if _, err := roundTrip(c, "again"); err != nil {
			return err
		}
		c.Close()
	}
	if n := echoHits.Load(); n != int64(calls) {
		return fmt.Errorf("echo saw %d connections, want %d", n, calls)
	}
	say("   %d calls, all answered: the down endpoint %s:%d was tried %v time(s), ejected,", calls, dead, port, metricValue(admAddr, failures))
	say("   and each such call was retried on the live one before the client noticed")

	head("What the gateway refuses (closed before any backend is contacted)")
	before := echoHits.Load()
	for _, bad := range []struct{ sni, why string }{
		{names.ServiceSNI("kube-system", "etcd", 2379), "a service this cluster does not export"},
		{"internal.example.com", "a name that is not a service SNI"},
		{"", "no SNI at all"},
	} {
		_, err := dial(gwAddr, bad.sni, pool, "echo.demo.svc")
		if err == nil {
			return fmt.Errorf("gateway routed %q; it must refuse it", bad.sni)
		}
		label := bad.sni
		if label == "" {
			label = "(none)"
		}
		say("   SNI %s — %s: refused (%v)", label, bad.why, trimErr(err))
	}
	if c, err := net.Dial("tcp", gwAddr); err == nil {
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: echo\r\n\r\n")
		c.SetReadDeadline(time.Now().Add(3 * time.Second))
		n, rerr := c.Read(make([]byte, 64))
		c.Close()
		if n != 0 {
			return errors.New("gateway answered plain HTTP")
		}
		say("   plain HTTP instead of TLS: connection closed (%v)", trimErr(rerr))
	}
	if echoHits.Load() != before {
		return errors.New("a refused connection reached the backend")
	}
	say("   echo saw no new connection: the gateway is not an open relay")

	head("Remote clusters health-check the gateway on health.meshfed.internal")
	r := healthprobe.Probe(ctx, "", gwAddr, nil)
	if !r.OK {
		return r.Err
	}
	say("   answer: %q (the gateway's own certificate, its own line)", r.Text)

	head("Hot reload: a new service is exported by editing the file")
	helloLn, helloHits, err := serveEcho(ctx, "127.0.0.1:0", cert, "hello")
	if err != nil {
		return err
	}
	defer helloLn.Close()
	helloPort := helloLn.Addr().(*net.TCPAddr).Port
	exports2 := exports + fmt.Sprintf("  - name: hello\n    namespace: demo\n    ports:\n      - {name: tls, port: 8443, targetPort: %d}\n    endpoints:\n      - {address: 127.0.0.1}\n", helloPort)
	if err := write(exports2); err != nil {
		return err
	}
	helloSNI := names.ServiceSNI("demo", "hello", 8443)
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := dial(gwAddr, helloSNI, pool, "echo.demo.svc")
		if err == nil {
			reply, err := roundTrip(c, "hi")
			c.Close()
			if err != nil {
				return err
			}
			say("   added demo/hello; a call to %s answered %q", helloSNI, reply)
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("new service not routable 5s after the file changed: %w", err)
		}
		time.Sleep(50 * time.Millisecond) // polling for the reload, as a user would retry
	}
	if helloHits.Load() != 1 {
		return errors.New("hello backend not reached")
	}
	if err := write("services: [{name: BAD}]\n"); err != nil {
		return err
	}
	for deadline := time.Now().Add(5 * time.Second); metricValue(admAddr, `meshfed_gateway_route_source_reloads_total{result="invalid"}`) < 1; {
		if time.Now().After(deadline) {
			return errors.New("invalid exports file not noticed")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if c, err := dial(gwAddr, helloSNI, pool, "echo.demo.svc"); err != nil {
		return fmt.Errorf("last good table lost after an invalid file: %w", err)
	} else {
		c.Close()
	}
	say("   then an invalid file was written: refused (see the gateway log), the last good routes stay")

	head("Drain (what SIGTERM does)")
	live, err := dial(gwAddr, sni, pool, "echo.demo.svc")
	if err != nil {
		return err
	}
	drain()
	r = healthprobe.Probe(ctx, "", gwAddr, nil)
	if r.OK {
		return errors.New("health still ok while draining")
	}
	say("   health now answers %q at once, so remote clusters move traffic away", r.Text)
	reply, err := roundTrip(live, "still there?")
	if err != nil {
		return fmt.Errorf("live connection broken by drain: %w", err)
	}
	say("   a connection opened before the drain still works: %q", reply)
	live.Close()
	select {
	case <-p.Done():
		if err := p.Wait(); err != nil {
			return err
		}
	case <-time.After(10 * time.Second):
		return errors.New("gateway did not stop after draining")
	}
	say("   the last connection closed, the gateway stopped")

	head("Metrics the gateway exported during the demo")
	for _, m := range []string{
		`meshfed_gateway_connections_total{protocol="sni",result="ok",service="demo/echo"}`,
		`meshfed_gateway_rejected_total{protocol="sni",reason="unknown_sni"}`,
		`meshfed_gateway_rejected_total{protocol="sni",reason="no_sni"}`,
		`meshfed_gateway_rejected_total{protocol="sni",reason="not_tls"}`,
		`meshfed_gateway_upstream_connect_failures_total{service="demo/echo"}`,
		`meshfed_gateway_health_checks_total{status="ok"}`,
	} {
		say("   %s %v", m, metricValue(admAddr, m))
	}
	say("\nDone: the gateway routed by SNI without terminating TLS, refused everything else,\nreloaded its routes live and drained cleanly.")
	return nil
}

func indent(s, p string) string {
	return p + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n"+p)
}

func trimErr(err error) string {
	if err == nil {
		return "closed"
	}
	s := err.Error()
	if i := strings.LastIndex(s, ": "); i >= 0 && strings.Contains(s, "remote error") {
		return "TLS alert: " + s[strings.Index(s, "remote error"):]
	}
	return s
}

func metricValue(adminAddr, series string) float64 {
	resp, err := http.Get("http://" + adminAddr + "/metrics")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), series+" "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	return 0
}

func dial(addr, sni string, pool *x509.CertPool, identity string) (*tls.Conn, error) {
	cfg := &tls.Config{
		ServerName: sni,
		// Mesh clients check the workload identity, not the SNI (a routing label).
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("no certificate")
			}
			_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{Roots: pool, DNSName: identity})
			return err
		},
	}
	d := tls.Dialer{NetDialer: &net.Dialer{Timeout: 3 * time.Second}, Config: cfg}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	tc := c.(*tls.Conn)
	tc.SetDeadline(time.Now().Add(10 * time.Second))
	return tc, nil
}

func roundTrip(c *tls.Conn, msg string) (string, error) {
	if _, err := io.WriteString(c, msg+"\n"); err != nil {
		return "", err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSpace(line), err
}

func serveEcho(ctx context.Context, addr string, cert tls.Certificate, name string) (net.Listener, *atomic.Int64, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, nil, err
	}
	var hits atomic.Int64
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			hits.Add(1)
			go func() {
				defer c.Close()
				tc := tls.Server(c, cfg)
				r := bufio.NewReader(tc)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					fmt.Fprintf(tc, "%s from %s says: %s", name, c.LocalAddr(), line)
				}
			}()
		}
	}()
	return ln, &hits, nil
}

func newCA(cn string) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, err
	}
	c, err := x509.ParseCertificate(der)
	return c, key, err
}

func leaf(ca *x509.Certificate, caKey *ecdsa.PrivateKey, name string) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: name}, DNSNames: []string{name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der, ca.Raw}, PrivateKey: key}, nil
}
