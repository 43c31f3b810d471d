package eastwest

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshfed/meshfed/api/names"
	"github.com/meshfed/meshfed/eastwest/internal/tlstest"
	"github.com/meshfed/meshfed/internal/atomicfile"
	"github.com/meshfed/meshfed/internal/healthprobe"
	"github.com/meshfed/meshfed/internal/metrictest"
)

func TestProxyEndToEnd(t *testing.T) {
	for _, mode := range copyModes(t) {
		t.Run(string(mode), func(t *testing.T) {
			b := startBackend(t, "127.0.0.1:0")
			g := startGateway(t, Config{CopyMode: mode}, echoTable(b.addr))
			c, err := dialTLS(t, g.addr, echoSNI, b.pool)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			// The certificate seen is the backend's: TLS went through, not terminated.
			if got := c.ConnectionState().PeerCertificates[0]; !bytes.Equal(got.Raw, b.cert.Leaf.Raw) {
				t.Fatalf("client saw certificate %q, not the backend's", got.Subject)
			}
			echo(t, c, "hello through the gateway")
			// A bulk transfer both ways (1 MiB, several pipe-fulls) with a random payload.
			big := make([]byte, 1<<20)
			rand.Read(big)
			line := strings.ReplaceAll(string(big), "\n", "x")
			echo(t, c, line)
			if mode != CopyIOCopy { // io-copy counts when io.Copy returns, at EOF
				// A scrape sees the bytes of a live connection (sockmap: read from the BPF map
				// on scrape).
				if n := metrictest.Sum(t, g.reg, "meshfed_gateway_bytes_total", "service", "demo/echo", "direction", "out"); n < 1<<20 {
					t.Errorf("bytes out scraped while the connection lives: %v", n)
				}
			}
			c.Close()
			waitFor(t, "connection closed", 5*time.Second, func() bool {
				return counter(g.m.conns.WithLabelValues("demo/echo", ProtocolSNI, ResultOK)) == 1 && g.Active() == 0
			})
			// (io-copy counts bytes when io.Copy returns, poll-splice as they move.)
			for _, dir := range []string{"in", "out"} {
				if n := counter(g.m.bytes.WithLabelValues("demo/echo", ProtocolSNI, dir)); n < 1<<20 {
					t.Errorf("bytes %s: %v", dir, n)
				}
			}
		})
	}
}

// Every refused connection is closed without any backend connection being made.
func TestRefusalsNeverReachABackend(t *testing.T) {
	b := startBackend(t, "127.0.0.1:0")
	g := startGateway(t, Config{HelloTimeout: 2 * time.Second}, echoTable(b.addr))
	refusedTLS := map[string]string{
		names.ServiceSNI("demo", "other", 8443):                 ReasonUnknownSNI, // not exported
		names.ServiceSNI("demo", "echo", 9999):                  ReasonUnknownSNI, // not an exported port
		"outbound_.8443_.v2_.echo.demo.svc.cluster.local":       ReasonUnknownSNI, // subsets are not routed
		"outbound_.8443_._.echo.demo.svc.other.domain":          ReasonUnknownSNI, // other domain
		"echo.demo.svc.cluster.local":                           ReasonUnknownSNI,
		"kubernetes.default.svc.cluster.local":                  ReasonUnknownSNI,
		"outbound_.443_._.kubernetes.default.svc.cluster.local": ReasonUnknownSNI,
		"": ReasonNoSNI,
	}
	for sni, reason := range refusedTLS {
		before := g.rejected(reason)
		_, err := dialTLS(t, g.addr, sni, b.pool)
		if err == nil || !strings.Contains(err.Error(), "unrecognized name") {
			t.Errorf("SNI %q: want a refusal with the unrecognized_name alert, got %v", sni, err)
		}
		if got := g.rejected(reason); got != before+1 {
			t.Errorf("SNI %q: rejected{%s} went %v -> %v", sni, reason, before, got)
		}
	}
	raw := map[string][]byte{
		"http": []byte("GET / HTTP/1.1\r\nHost: echo\r\n\r\n"),
		"ssh":  []byte("SSH-2.0-OpenSSH_9.2\r\n"),
		"huge": append([]byte{22, 3, 1, 0x40, 0, 1, 0, 0x50, 0}, make([]byte, 100)...),
		"junk": {22, 3, 1, 0, 5, 2, 0, 0, 1, 0},
	}
	want := map[string]string{"http": ReasonNotTLS, "ssh": ReasonNotTLS, "huge": ReasonHelloTooLarge, "junk": ReasonMalformedHello}
	for name, data := range raw {
		before := g.rejected(want[name])
		c, err := net.Dial("tcp", g.addr)
		if err != nil {
			t.Fatal(err)
		}
		c.Write(data)
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if n, err := c.Read(make([]byte, 10)); n != 0 || err == nil {
			t.Errorf("%s: want the connection closed, got %d bytes, %v", name, n, err)
		}
		c.Close()
		waitFor(t, name+" counted", 2*time.Second, func() bool { return g.rejected(want[name]) == before+1 })
	}
	if n := b.accepted.Load(); n != 0 {
		t.Fatalf("backend saw %d connections; refusals must never reach it", n)
	}
}

// The hello is split across several TLS records and many small TCP writes; the backend
// (crypto/tls) still completes the handshake, so the bytes were replayed unchanged.
func TestFragmentedHelloEndToEnd(t *testing.T) {
	b := startBackend(t, "127.0.0.1:0")
	g := startGateway(t, Config{}, echoTable(b.addr))
	for _, recordSize := range []int{5, 64, 500} {
		raw, err := net.Dial("tcp", g.addr)
		if err != nil {
			t.Fatal(err)
		}
		fc := &fragConn{Conn: raw, recordSize: recordSize, segment: 37}
		c := tls.Client(fc, &tls.Config{ServerName: echoSNI, RootCAs: b.pool, InsecureSkipVerify: true})
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if err := c.Handshake(); err != nil {
			t.Fatalf("records of %d bytes: %v", recordSize, err)
		}
		if fc.records < 3 {
			t.Fatalf("hello went in %d records", fc.records)
		}
		echo(t, c, "fragmented ok")
		c.Close()
	}
}

// fragConn re-frames the first write (the ClientHello) into records of recordSize bytes
// and sends them in writes of segment bytes each (TCP_NODELAY is on, so small segments).
type fragConn struct {
	net.Conn
	recordSize, segment int
	done                bool
	records             int
}

func (f *fragConn) Write(p []byte) (int, error) {
	if f.done {
		return f.Conn.Write(p)
	}
	f.done = true
	msg := p[5:]
	var out []byte
	for len(msg) > 0 {
		n := min(f.recordSize, len(msg))
		out = append(out, 22, 3, 1, byte(n>>8), byte(n))
		out = append(out, msg[:n]...)
		msg = msg[n:]
		f.records++
	}
	for len(out) > 0 {
		n := min(f.segment, len(out))
		if _, err := f.Conn.Write(out[:n]); err != nil {
			return 0, err
		}
		out = out[n:]
	}
	return len(p), nil
}

// A client that sends part of a hello and stalls is cut at the hello deadline.
func TestSlowHelloIsCutAtDeadline(t *testing.T) {
	b := startBackend(t, "127.0.0.1:0")
	g := startGateway(t, Config{HelloTimeout: 300 * time.Millisecond}, echoTable(b.addr))
	hello := tlstest.GoHello(t, &tls.Config{ServerName: echoSNI})
	c, err := net.Dial("tcp", g.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	c.Write(hello[:50])
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err = c.Read(make([]byte, 1))
	if el := time.Since(start); err == nil || el < 250*time.Millisecond || el > 3*time.Second {
		t.Fatalf("slow hello: closed after %v with %v; want ~300ms", el, err)
	}
	waitFor(t, "hello_timeout counted", 2*time.Second, func() bool { return g.rejected(ReasonHelloTimeout) == 1 })
	if b.accepted.Load() != 0 {
		t.Fatal("slow hello reached the backend")
	}
}

// Half-close passes through: the client closes its sending side, the backend reads to
// EOF and still answers on the other direction.
func TestHalfClose(t *testing.T) {
	for _, mode := range copyModes(t) {
		t.Run(string(mode), func(t *testing.T) {
			b := startBackend(t, "127.0.0.1:0")
			g := startGateway(t, Config{CopyMode: mode}, echoTable(b.addr))
			c, err := dialTLS(t, g.addr, echoSNI, b.pool)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			io.WriteString(c, "half\n")
			io.WriteString(c, strings.Repeat("z", 100000))
			// close_notify, then a real TCP half-close (tls.Conn.CloseWrite does not do that).
			if err := c.CloseWrite(); err != nil {
				t.Fatal(err)
			}
			if err := c.NetConn().(*net.TCPConn).CloseWrite(); err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(c)
			if err != nil || string(got) != "got 100000 bytes after half-close\n" {
				t.Fatalf("after half-close: %q, %v", got, err)
			}
			waitFor(t, "closed ok", 5*time.Second, func() bool {
				return counter(g.m.conns.WithLabelValues("demo/echo", ProtocolSNI, ResultOK)) == 1
			})
		})
	}
}

func writeFileAtomic(t *testing.T, path, content string) {
	t.Helper()
	if err := atomicfile.Write(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func exportsYAML(services ...string) string {
	return "services:\n" + strings.Join(services, "")
}

func svcYAML(name, ip string, port uint32) string {
	return "  - name: " + name + "\n    namespace: demo\n    ports:\n      - {name: tls, port: 8443, targetPort: " +
		itoa(port) + "}\n    endpoints:\n      - {address: " + ip + ", zone: z1}\n"
}

func itoa(n uint32) string { return strings.TrimSpace(strings.Repeat(" ", 0) + uitoa(n)) }

func uitoa(n uint32) string {
	if n == 0 {
		return "0"
	}
	var b []byte
	for n > 0 {
		b = append([]byte{byte('0' + n%10)}, b...)
		n /= 10
	}
	return string(b)
}

// Hot reload: a new service appears without a restart, a live connection survives the
// reload, and an invalid file leaves the last good table in force.
func TestHotReload(t *testing.T) {
	a := startBackend(t, "127.0.0.1:0")
	bb := startBackend(t, "127.0.0.1:0")
	dir := t.TempDir()
	path := filepath.Join(dir, "exports.yaml")
	writeFileAtomic(t, path, exportsYAML(svcYAML("echo", "127.0.0.1", a.port())))
	g := startGateway(t, Config{}, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	src := &FileSource{Path: path, Interval: 20 * time.Millisecond, OnReload: g.ObserveReload, Log: testLogger(t)}
	go g.RunSource(ctx, src)
	waitFor(t, "first table", 10*time.Second, func() bool { return g.Ready() == nil })

	live, err := dialTLS(t, g.addr, echoSNI, a.pool)
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	echo(t, live, "before reload")
	otherSNI := names.ServiceSNI("demo", "other", 8443)
	if _, err := dialTLS(t, g.addr, otherSNI, bb.pool); err == nil {
		t.Fatal("other routed before it was exported")
	}
	writeFileAtomic(t, path, exportsYAML(svcYAML("echo", "127.0.0.1", a.port()), svcYAML("other", "127.0.0.1", bb.port())))
	waitFor(t, "reload with other", 10*time.Second, func() bool {
		c, err := dialTLS(t, g.addr, otherSNI, bb.pool)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	echo(t, live, "after reload")

	// An invalid file (bad port) is refused; the last good table stays.
	writeFileAtomic(t, path, strings.Replace(exportsYAML(svcYAML("echo", "127.0.0.1", a.port())), "port: 8443", "port: 0", 1))
	waitFor(t, "invalid reload counted", 10*time.Second, func() bool {
		return counter(g.m.reloads.WithLabelValues("invalid")) >= 1
	})
	c, err := dialTLS(t, g.addr, otherSNI, bb.pool)
	if err != nil {
		t.Fatalf("last good table not in force after an invalid file: %v", err)
	}
	c.Close()
	echo(t, live, "after invalid file")

	// A Kubernetes-style ConfigMap swap: the path is a symlink to ..data/exports.yaml.
	os.MkdirAll(filepath.Join(dir, "v1"), 0o755)
	os.MkdirAll(filepath.Join(dir, "v2"), 0o755)
	os.WriteFile(filepath.Join(dir, "v1", "exports.yaml"), []byte(exportsYAML(svcYAML("echo", "127.0.0.1", a.port()))), 0o644)
	os.WriteFile(filepath.Join(dir, "v2", "exports.yaml"), []byte(exportsYAML(svcYAML("third", "127.0.0.1", a.port()))), 0o644)
	os.Symlink("v1", filepath.Join(dir, "..data"))
	link := filepath.Join(dir, "cm.yaml")
	os.Symlink("..data/exports.yaml", link)
	cancel()
	ctx2, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	go g.RunSource(ctx2, &FileSource{Path: link, Interval: 20 * time.Millisecond, Log: testLogger(t)})
	thirdSNI := names.ServiceSNI("demo", "third", 8443)
	waitFor(t, "configmap v1 in force", 10*time.Second, func() bool {
		c, err := dialTLS(t, g.addr, otherSNI, bb.pool)
		if err == nil {
			c.Close() // still routed: close it, or the gateway's drain waits for it
		}
		return err != nil
	})
	os.Symlink("v2", filepath.Join(dir, "..data_tmp"))
	os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data"))
	waitFor(t, "configmap v2 in force", 10*time.Second, func() bool {
		c, err := dialTLS(t, g.addr, thirdSNI, a.pool)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
}

// Drain: the health name fails at once, live connections finish, new ones are refused
// once the accept period ends, and Serve returns when the last connection closes.
func TestDrain(t *testing.T) {
	b := startBackend(t, "127.0.0.1:0")
	g := startGateway(t, Config{DrainAcceptPeriod: 1500 * time.Millisecond, DrainTimeout: 10 * time.Second}, echoTable(b.addr))
	if r := healthprobe.Probe(context.Background(), "", g.addr, nil); !r.OK || r.Line.Fields["cluster"] != "east" {
		t.Fatalf("health before drain: %+v", r)
	}
	live, err := dialTLS(t, g.addr, echoSNI, b.pool)
	if err != nil {
		t.Fatal(err)
	}
	g.cancel() // what SIGTERM does in the command
	// The drain starts on the goroutine that watches ctx: wait for it, not a fixed time.
	waitFor(t, "health name says draining", 5*time.Second, func() bool {
		r := healthprobe.Probe(context.Background(), "", g.addr, nil)
		return r.Result == healthprobe.ResultStatus && r.Line.Word == "draining"
	})
	if g.Ready() == nil {
		t.Fatal("readyz still ok while draining")
	}
	echo(t, live, "still served while draining")
	waitFor(t, "listener closed", 10*time.Second, func() bool {
		c, err := net.Dial("tcp", g.addr)
		if err == nil {
			c.Close()
		}
		return err != nil
	})
	echo(t, live, "still served after the listener closed")
	select {
	case <-g.done:
		t.Fatal("Serve returned with a live connection")
	default:
	}
	live.Close()
	select {
	case err := <-g.done:
		if err != nil {
			t.Fatal(err)
		}
		g.done <- nil
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return after the last connection closed")
	}
}

func TestDrainTimeoutCutsConnections(t *testing.T) {
	b := startBackend(t, "127.0.0.1:0")
	g := startGateway(t, Config{DrainTimeout: 200 * time.Millisecond}, echoTable(b.addr))
	live, err := dialTLS(t, g.addr, echoSNI, b.pool)
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	echo(t, live, "x")
	g.cancel()
	select {
	case <-g.done:
		g.done <- nil
	case <-time.After(5 * time.Second):
		t.Fatal("drain timeout did not cut the connection")
	}
	if _, err := live.Read(make([]byte, 1)); err == nil {
		t.Fatal("connection still open after the drain timeout")
	}
	if n := counter(g.m.conns.WithLabelValues("demo/echo", ProtocolSNI, ResultDrained)); n != 1 {
		t.Fatalf("drained connections: %v", n)
	}
}

// A dead endpoint is retried on another (the hello is still buffered) and ejected.
func TestRetryOnDeadEndpoint(t *testing.T) {
	b := startBackend(t, "127.0.1.1:0")
	// Same port on another loopback address where nothing listens: connection refused.
	dead := "127.0.1.2:" + uitoa(b.port())
	g := startGateway(t, Config{EjectBase: time.Minute}, echoTable(b.addr, dead))
	for i := 0; i < 10; i++ {
		c, err := dialTLS(t, g.addr, echoSNI, b.pool)
		if err != nil {
			t.Fatalf("connection %d failed although one endpoint lives: %v", i, err)
		}
		echo(t, c, "retry")
		c.Close()
	}
	if n := counter(g.m.connectErrs.WithLabelValues("demo/echo")); n != 1 {
		t.Fatalf("connect failures %v; want exactly 1 (then ejected)", n)
	}
	if n := counter(g.m.ejections.WithLabelValues("demo/echo")); n != 1 {
		t.Fatalf("ejections %v", n)
	}
	if g.rejected(ReasonUpstreamFailed) != 0 {
		t.Fatal("a connection failed")
	}
	// With every endpoint dead the client is refused with an alert, no hang.
	g2 := startGateway(t, Config{}, echoTable(dead))
	if _, err := dialTLS(t, g2.addr, echoSNI, b.pool); err == nil || !strings.Contains(err.Error(), "internal error") {
		t.Fatalf("all endpoints dead: %v", err)
	}
	if g2.rejected(ReasonUpstreamFailed) != 1 {
		t.Fatal("upstream_failed not counted")
	}
}

func TestLimits(t *testing.T) {
	b := startBackend(t, "127.0.0.1:0")
	g := startGateway(t, Config{MaxConnsPerService: 1}, echoTable(b.addr))
	c1, err := dialTLS(t, g.addr, echoSNI, b.pool)
	if err != nil {
		t.Fatal(err)
	}
	echo(t, c1, "one")
	if _, err := dialTLS(t, g.addr, echoSNI, b.pool); err == nil {
		t.Fatal("second connection accepted over --max-conns-per-service=1")
	}
	if g.rejected(ReasonServiceLimit) != 1 {
		t.Fatal("service_limit not counted")
	}
	c1.Close()
	waitFor(t, "slot freed", 3*time.Second, func() bool {
		c, err := dialTLS(t, g.addr, echoSNI, b.pool)
		if err == nil {
			c.Close()
		}
		return err == nil
	})

	g2 := startGateway(t, Config{MaxConns: 1}, echoTable(b.addr))
	idle, err := net.Dial("tcp", g2.addr) // holds the one slot in the hello phase
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	idle.Write([]byte{22}) // one byte: accepted (TCP_DEFER_ACCEPT waits for data), hello incomplete
	waitFor(t, "slot taken", 2*time.Second, func() bool { return g2.Active() == 1 })
	if _, err := dialTLS(t, g2.addr, echoSNI, b.pool); err == nil {
		t.Fatal("connection accepted over --max-conns=1")
	}
	if g2.rejected(ReasonLimit) != 1 {
		t.Fatal("limit not counted")
	}
}

func TestHealthName(t *testing.T) {
	g := startGateway(t, Config{Cluster: "west"}, echoTable("127.0.0.1:9"))
	cert, err := x509.ParseCertificate(g.health.Certificates[0].Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	// Verified against the gateway's own (self-signed) certificate alone: the health name
	// is answered with it.
	own := x509.NewCertPool()
	own.AddCert(cert)
	r := healthprobe.Probe(context.Background(), "", g.addr, own)
	if !r.OK {
		t.Fatalf("health name not answered with the gateway's own certificate: %v", r.Err)
	}
	if r.Line.Word != "ok" || r.Line.Fields["cluster"] != "west" || r.Line.Fields["service_ports"] != "1" {
		t.Fatalf("health: %+v", r)
	}
	// Names are case-insensitive.
	c, err := tls.Dial("tcp", g.addr, &tls.Config{ServerName: "HEALTH.meshfed.INTERNAL", InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	line, _ := bufio.NewReader(c).ReadString('\n')
	c.Close()
	if !strings.HasPrefix(line, "ok cluster=west") {
		t.Fatalf("line %q", line)
	}
	// Before any route table: not-ready.
	g2 := startGateway(t, Config{}, nil)
	if r := healthprobe.Probe(context.Background(), "", g2.addr, nil); r.OK || r.Line.Word != "not-ready" {
		t.Fatalf("no table: %+v", r)
	}
}

func TestIdleTimeout(t *testing.T) {
	for _, mode := range copyModes(t) {
		t.Run(string(mode), func(t *testing.T) {
			b := startBackend(t, "127.0.0.1:0")
			g := startGateway(t, Config{IdleTimeout: 800 * time.Millisecond, CopyMode: mode}, echoTable(b.addr))
			// Traffic every 200 ms keeps a connection alive past the idle timeout (the margin
			// leaves room for a loaded CI machine).
			c, err := dialTLS(t, g.addr, echoSNI, b.pool)
			if err != nil {
				t.Fatal(err)
			}
			tick := time.NewTicker(200 * time.Millisecond)
			for i := 0; i < 6; i++ {
				<-tick.C
				echo(t, c, "keepalive")
			}
			tick.Stop()
			// Then silence: cut after ~800 ms.
			start := time.Now()
			if _, err := c.Read(make([]byte, 1)); err == nil {
				t.Fatal("read succeeded on an idle connection")
			}
			if el := time.Since(start); el > 3*time.Second {
				t.Fatalf("idle connection cut after %v", el)
			}
			waitFor(t, "idle counted", 2*time.Second, func() bool {
				return counter(g.m.conns.WithLabelValues("demo/echo", ProtocolSNI, ResultIdleTimeout)) == 1
			})
		})
	}
}

// Hellos other than Go's: a Chrome-like one with ECH GREASE is routed on its outer SNI,
// and every byte (fragmented or not) reaches the backend unchanged.
func TestHelloBytesReplayedUnchanged(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan []byte, 1)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			b, _ := io.ReadAll(c)
			c.Close()
			got <- b
		}
	}()
	g := startGateway(t, Config{}, echoTable(ln.Addr().String()))
	hellos := map[string][]byte{
		"browser-ech": tlstest.BrowserHello(echoSNI),
		"go":          tlstest.GoHello(t, &tls.Config{ServerName: echoSNI}),
	}
	for name, h := range hellos {
		c, err := net.Dial("tcp", g.addr)
		if err != nil {
			t.Fatal(err)
		}
		payload := append(append([]byte{}, h...), []byte("early bytes after the hello")...)
		c.Write(payload)
		c.(*net.TCPConn).CloseWrite()
		select {
		case b := <-got:
			if !bytes.Equal(b, payload) {
				t.Fatalf("%s: backend got %d bytes, sent %d, or different", name, len(b), len(payload))
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: not routed", name)
		}
		c.Close()
	}
}

func TestPickBalancesAndFallsBack(t *testing.T) {
	eps := []*epState{{addr: "a", weight: 1}, {addr: "b", weight: 1}, {addr: "c", weight: 2}}
	now := time.Now().UnixNano()
	// Power of two choices on active/weight: with c (weight 2) idle and a, b loaded, c wins
	// whenever it is one of the two candidates, and is never the worse pick.
	eps[0].active.Store(10)
	eps[1].active.Store(10)
	eps[2].active.Store(10) // load 10*1024/2, half of a's and b's
	counts := map[string]int{}
	for i := 0; i < 3000; i++ {
		counts[pick(eps, nil, now).addr]++
	}
	if counts["c"] < 1800 { // picked in 2 of 3 pairs
		t.Errorf("c picked %d/3000; power of two choices should favour the lightest endpoint", counts["c"])
	}
	// Ejected endpoints are skipped while another is usable.
	eps[2].eject(time.Now(), time.Minute, time.Hour)
	for i := 0; i < 100; i++ {
		if pick(eps, nil, time.Now().UnixNano()).addr == "c" {
			t.Fatal("picked an ejected endpoint while others were usable")
		}
	}
	// Tried endpoints are skipped; when all are ejected or tried, the soonest back is used.
	if e := pick(eps, []*epState{eps[0]}, time.Now().UnixNano()); e.addr != "b" {
		t.Fatalf("skip: got %s", e.addr)
	}
	eps[0].eject(time.Now(), time.Second, time.Hour)
	eps[1].eject(time.Now(), 10*time.Second, time.Hour)
	if e := pick(eps, nil, time.Now().UnixNano()); e.addr != "a" {
		t.Fatalf("all ejected: got %s, want the one back soonest (a)", e.addr)
	}
	// Ejection backs off exponentially up to the maximum, and success resets it.
	e := &epState{addr: "x", weight: 1}
	var last time.Duration
	for i := 0; i < 8; i++ {
		last = e.eject(time.Now(), time.Second, 30*time.Second)
	}
	if last != 30*time.Second {
		t.Fatalf("backoff after 8 failures: %v", last)
	}
	e.succeeded()
	if d := e.eject(time.Now(), time.Second, 30*time.Second); d != time.Second {
		t.Fatalf("backoff after success: %v", d)
	}
}

func TestFileSourceRefusesABadFirstFileAndIgnoresTouches(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "exports.yaml")
	os.WriteFile(path, []byte("services:\n  - {name: Echo, namespace: demo, ports: [{port: 8443}]}\n"), 0o644)
	err := (&FileSource{Path: path, Log: testLogger(t)}).Run(context.Background(), func(*RouteTable) { t.Fatal("update with a bad file") })
	if err == nil || !strings.Contains(err.Error(), "services[0].name") {
		t.Fatalf("bad first file: %v", err)
	}
	if err := (&FileSource{Path: filepath.Join(dir, "missing.yaml")}).Run(context.Background(), func(*RouteTable) {}); err == nil {
		t.Fatal("missing file accepted")
	}
	os.WriteFile(path, []byte("services:\n  - {name: echo, namespace: demo, ports: [{port: 8443, targetPort: 9443}], endpoints: [{address: 10.0.0.1}, {address: 10.0.0.2, ready: false, zone: z2}]}\n"), 0o644)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	updates := make(chan *RouteTable, 10)
	go (&FileSource{Path: path, Interval: 10 * time.Millisecond}).Run(ctx, func(rt *RouteTable) { updates <- rt })
	rt := <-updates
	eps := rt.Services[ServiceKey{Namespace: "demo", Name: "echo", Port: 8443}]
	if len(eps) != 2 || eps[0].HostPort() != "10.0.0.1:9443" || !eps[0].Ready || eps[1].Ready || eps[1].Zone != "z2" {
		t.Fatalf("table: %+v", eps)
	}
	// Touching the file (new mtime, same content) must not publish a new table.
	future := time.Now().Add(time.Hour)
	os.Chtimes(path, future, future)
	polls := time.After(300 * time.Millisecond) // ~30 polls: the touch is seen and ignored
	select {
	case <-updates:
		t.Fatal("a touch without a content change published a table")
	case <-polls:
	}
}
