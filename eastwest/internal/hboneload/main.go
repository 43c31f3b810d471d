package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"flag"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
)

const (
	sniEcho   = "outbound_.8443_._.echo.demo.svc.cluster.local"
	sniBulk   = "outbound_.8443_._.bulk.demo.svc.cluster.local"
	authEcho  = "echo.demo.svc.cluster.local:8443"
	authBulk  = "bulk.demo.svc.cluster.local:8443"
	tdGateway = "west.example"
	tdClient  = "east.example"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: hboneload pki DIR | run [flags]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "pki":
		err = writePKI(os.Args[2])
	case "run":
		err = run(os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "hboneload:", err)
		os.Exit(1)
	}
}

// writePKI writes a CA per trust domain, the gateway's SVID (west), the client's (east)
// and bundle-map.json holding both roots.
func writePKI(dir string) error {
	tds := map[string]any{}
	for _, td := range []string{tdGateway, tdClient} {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return err
		}
		u, _ := url.Parse("spiffe://" + td)
		ca := &x509.Certificate{SerialNumber: big.NewInt(1), URIs: []*url.URL{u}, NotBefore: time.Now().Add(-time.Hour),
			NotAfter: time.Now().Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
		der, err := x509.CreateCertificate(rand.Reader, ca, ca, &key.PublicKey, key)
		if err != nil {
			return err
		}
		caCert, _ := x509.ParseCertificate(der)
		pub, _ := key.PublicKey.ECDH()
		raw := pub.Bytes() // 0x04 || X || Y
		tds[td] = map[string]any{"spiffe_sequence": 1, "keys": []any{map[string]any{"use": "x509-svid", "kty": "EC", "crv": "P-256",
			"x": base64.RawURLEncoding.EncodeToString(raw[1:33]), "y": base64.RawURLEncoding.EncodeToString(raw[33:]),
			"x5c": []string{base64.StdEncoding.EncodeToString(der)}}}}
		name, path := "client", "/ns/demo/sa/client"
		if td == tdGateway {
			name, path = "gateway", "/ns/istio-system/sa/meshfed-gateway"
		}
		lk, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		lu, _ := url.Parse("spiffe://" + td + path)
		leaf := &x509.Certificate{SerialNumber: big.NewInt(2), URIs: []*url.URL{lu}, NotBefore: time.Now().Add(-time.Hour),
			NotAfter: time.Now().Add(24 * time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
		ld, err := x509.CreateCertificate(rand.Reader, leaf, caCert, &lk.PublicKey, key)
		if err != nil {
			return err
		}
		kd, _ := x509.MarshalPKCS8PrivateKey(lk)
		if err := os.WriteFile(filepath.Join(dir, name+".pem"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ld}), 0o600); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, name+"-key.pem"), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kd}), 0o600); err != nil {
			return err
		}
	}
	b, _ := json.Marshal(map[string]any{"trust_domains": tds})
	return os.WriteFile(filepath.Join(dir, "bundle-map.json"), b, 0o644)
}

// streamConn is one HTTP/2 CONNECT stream as a net.Conn.
type streamConn struct {
	io.ReadCloser
	w    *io.PipeWriter
	tcp  net.Conn // the outer connection when it is this stream's alone (closed with it)
	addr net.Addr
}

func (s *streamConn) Write(b []byte) (int, error) { return s.w.Write(b) }
func (s *streamConn) Close() error {
	s.w.Close()
	err := s.ReadCloser.Close()
	if s.tcp != nil {
		s.tcp.Close()
	}
	return err
}
func (s *streamConn) LocalAddr() net.Addr              { return s.addr }
func (s *streamConn) RemoteAddr() net.Addr             { return s.addr }
func (s *streamConn) SetDeadline(time.Time) error      { return nil }
func (s *streamConn) SetReadDeadline(time.Time) error  { return nil }
func (s *streamConn) SetWriteDeadline(time.Time) error { return nil }

// hboneClient opens CONNECT streams to the gateway's HBONE listener: on a new outer mTLS
// connection each time (pooled=false), or on one per worker (pooled, as ztunnel pools).
type hboneClient struct {
	addr   string
	tlsCfg *tls.Config
	tr     *http2.Transport
}

func (h *hboneClient) outer() (*http2.ClientConn, net.Conn, error) {
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", h.addr, h.tlsCfg)
	if err != nil {
		return nil, nil, err
	}
	cc, err := h.tr.NewClientConn(c)
	if err != nil {
		c.Close()
		return nil, nil, err
	}
	return cc, c, nil
}

func (h *hboneClient) connect(cc *http2.ClientConn, authority string) (*streamConn, error) {
	pr, pw := io.Pipe()
	req, _ := http.NewRequest(http.MethodConnect, "https://"+h.addr, pr)
	req.Host = authority
	resp, err := cc.RoundTrip(req)
	if err != nil {
		pw.Close()
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		pw.Close()
		return nil, fmt.Errorf("CONNECT %s: %s", authority, resp.Status)
	}
	return &streamConn{ReadCloser: resp.Body, w: pw, addr: &net.TCPAddr{}}, nil
}

var echoMsg = bytes.Repeat([]byte("x"), 32)

// echoOnce does the unit of work: TLS handshake with the echo backend over c (with sni as
// the server name: the SNI path routes by it), 32 bytes there and back, close.
func echoOnce(c net.Conn, sni string) error {
	tc := tls.Client(c, &tls.Config{InsecureSkipVerify: true, ServerName: sni}) //nolint:gosec // the bench's backend
	defer tc.Close()
	if err := tc.Handshake(); err != nil {
		return err
	}
	if _, err := tc.Write(echoMsg); err != nil {
		return err
	}
	buf := make([]byte, len(echoMsg))
	_, err := io.ReadFull(tc, buf)
	return err
}

type target struct {
	name string
	// conn returns a fresh connection to the echo backend through this path (a worker's
	// state in *any); bulk one to the sink, after its hello.
	conn func(state *any) (net.Conn, error)
	bulk func() (net.Conn, error)
}

type figures struct {
	connPerSec, cpuPerConn, gbps, cpuPerGB []float64
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	return s[len(s)/2]
}

func rawHello(sni string) []byte {
	c1, c2 := net.Pipe()
	go func() {
		_ = tls.Client(c1, &tls.Config{ServerName: sni, InsecureSkipVerify: true}).Handshake() //nolint:gosec
	}()
	buf := make([]byte, 16<<10)
	n, _ := c2.Read(buf)
	c2.Close()
	c1.Close()
	return buf[:n]
}

func run(args []string) error {
	fs := flag.NewFlagSet("run", flag.ExitOnError)
	echo := fs.String("echo", "", "TLS echo backend HOST:PORT (direct)")
	sink := fs.String("sink", "", "sink backend HOST:PORT (direct; reads a hello, then discards)")
	sni := fs.String("sni", "", "gateway SNI listener HOST:PORT")
	hb := fs.String("hbone", "", "gateway HBONE listener HOST:PORT")
	pki := fs.String("pki", "", "directory `hboneload pki` wrote")
	pidsFlag := fs.String("pids", "", "comma-separated PIDs of the gateway and backends (their CPU is counted)")
	conc := fs.Int("conc", 16, "concurrent connections in the conn/s phase")
	connTime := fs.Duration("conn-time", 3*time.Second, "conn/s phase per target and round")
	bulkTime := fs.Duration("bulk-time", 3*time.Second, "bulk phase per target and round")
	streams := fs.Int("streams", 4, "bulk streams")
	rounds := fs.Int("rounds", 3, "interleaved rounds")
	fs.Parse(args)

	cert, err := tls.LoadX509KeyPair(filepath.Join(*pki, "client.pem"), filepath.Join(*pki, "client-key.pem"))
	if err != nil {
		return err
	}
	hc := &hboneClient{addr: *hb, tr: &http2.Transport{},
		tlsCfg: &tls.Config{Certificates: []tls.Certificate{cert}, InsecureSkipVerify: true, NextProtos: []string{"h2"}}} //nolint:gosec // load generator: the gateway's identity is not what is measured
	var pids []int
	for _, p := range strings.Split(*pidsFlag, ",") {
		if n, err := strconv.Atoi(strings.TrimSpace(p)); err == nil {
			pids = append(pids, n)
		}
	}
	pids = append(pids, os.Getpid())
	dial := func(addr string) (net.Conn, error) { return (&net.Dialer{Timeout: 5 * time.Second}).Dial("tcp", addr) }
	withHello := func(c net.Conn, err error, sni string) (net.Conn, error) {
		if err != nil {
			return nil, err
		}
		if _, err := c.Write(rawHello(sni)); err != nil {
			c.Close()
			return nil, err
		}
		return c, nil
	}
	targets := []target{
		{name: "direct", conn: func(*any) (net.Conn, error) { return dial(*echo) },
			bulk: func() (net.Conn, error) { c, err := dial(*sink); return withHello(c, err, sniBulk) }},
		{name: "SNI (meshfed)", conn: func(*any) (net.Conn, error) {
			c, err := dial(*sni)
			if err != nil {
				return nil, err
			}
			// The SNI the gateway routes: the hello's server name; echoOnce's own hello
			// then carries it to the backend.
			return &sniConn{Conn: c}, nil
		}, bulk: func() (net.Conn, error) { c, err := dial(*sni); return withHello(c, err, sniBulk) }},
		{name: "HBONE new outer conn", conn: func(*any) (net.Conn, error) {
			cc, tcp, err := hc.outer()
			if err != nil {
				return nil, err
			}
			s, err := hc.connect(cc, authEcho)
			if err != nil {
				tcp.Close()
				return nil, err
			}
			s.tcp = tcp
			return s, nil
		}, bulk: func() (net.Conn, error) {
			cc, tcp, err := hc.outer()
			if err != nil {
				return nil, err
			}
			s, err := hc.connect(cc, authBulk)
			if err != nil {
				tcp.Close()
				return nil, err
			}
			s.tcp = tcp
			return withHello(s, nil, sniBulk)
		}},
		{name: "HBONE pooled outer conn", conn: func(state *any) (net.Conn, error) {
			cc, _ := (*state).(*http2.ClientConn)
			if cc == nil || !cc.CanTakeNewRequest() {
				var err error
				if cc, _, err = hc.outer(); err != nil {
					return nil, err
				}
				*state = cc
			}
			return hc.connect(cc, authEcho)
		}},
	}
	res := make([]figures, len(targets))
	for r := 0; r < *rounds; r++ {
		for i, t := range targets {
			n, errs, el, cpu := connPhase(t, *conc, *connTime, pids)
			if n == 0 {
				return fmt.Errorf("%s: no connection succeeded (%d errors)", t.name, errs)
			}
			res[i].connPerSec = append(res[i].connPerSec, float64(n)/el.Seconds())
			res[i].cpuPerConn = append(res[i].cpuPerConn, float64(cpu.Microseconds())/float64(n))
			if t.bulk != nil {
				before := stalled.Load()
				bytes, el, cpu, err := bulkPhase(t, *streams, *bulkTime, pids)
				if err != nil {
					return fmt.Errorf("%s bulk: %w", t.name, err)
				}
				if n := stalled.Load() - before; n > 0 {
					fmt.Fprintf(os.Stderr, "note: %s, round %d: %d of %d bulk streams stalled (a write blocked >3s past the phase) and were cut\n", t.name, r+1, n, *streams)
				}
				gb := float64(bytes) / 1e9
				res[i].gbps = append(res[i].gbps, gb/el.Seconds())
				res[i].cpuPerGB = append(res[i].cpuPerGB, cpu.Seconds()/gb)
			}
		}
	}
	fmt.Printf("| path | conn/s | vs SNI | CPU µs/conn | added vs direct | vs SNI added | bulk GB/s | vs SNI | CPU s/GB |\n|---|---|---|---|---|---|---|---|---|\n")
	d, s := res[0], res[1]
	dCPU, sCPU := median(d.cpuPerConn), median(s.cpuPerConn)
	for i, t := range targets {
		f := res[i]
		cps, cpu := median(f.connPerSec), median(f.cpuPerConn)
		bulk, bulkCPU := "-", "-"
		bulkRatio := "-"
		if len(f.gbps) > 0 {
			bulk = fmt.Sprintf("%.2f", median(f.gbps))
			bulkCPU = fmt.Sprintf("%.2f", median(f.cpuPerGB))
			bulkRatio = fmt.Sprintf("%.2f", median(f.gbps)/median(s.gbps))
		}
		added := cpu - dCPU
		addedRatio := "-"
		if i > 0 && sCPU-dCPU > 0 {
			addedRatio = fmt.Sprintf("%.2f", added/(sCPU-dCPU))
		}
		fmt.Printf("| %s | %.0f | %.2f | %.0f | %.0f | %s | %s | %s | %s |\n", t.name, cps, cps/median(s.connPerSec), cpu, added, addedRatio, bulk, bulkRatio, bulkCPU)
	}
	return nil
}

// sniConn makes echoOnce's TLS client send the gateway's SNI.
type sniConn struct{ net.Conn }

func connPhase(t target, conc int, d time.Duration, pids []int) (n, errs int64, el time.Duration, cpu time.Duration) {
	var ok, bad atomic.Int64
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	cpu0 := benchCPU(pids)
	start := time.Now()
	var wg sync.WaitGroup
	for range conc {
		wg.Go(func() {
			var state any
			for ctx.Err() == nil {
				c, err := t.conn(&state)
				if err == nil {
					// A tunnel that stalls is cut and counted as an error, never waited for.
					cut := time.AfterFunc(10*time.Second, func() { c.Close() })
					if sc, isSNI := c.(*sniConn); isSNI {
						err = echoOnce(sc.Conn, sniEcho)
					} else {
						err = echoOnce(c, "echo")
					}
					cut.Stop()
				}
				if err != nil {
					bad.Add(1)
					continue
				}
				ok.Add(1)
			}
		})
	}
	wg.Wait()
	return ok.Load(), bad.Load(), time.Since(start), benchCPU(pids) - cpu0
}

// stalled counts bulk streams cut because a write blocked past the phase's end.
var stalled atomic.Int64

func bulkPhase(t target, streams int, d time.Duration, pids []int) (int64, time.Duration, time.Duration, error) {
	var total atomic.Int64
	var first atomic.Value
	cpu0 := benchCPU(pids)
	start := time.Now()
	end := start.Add(d)
	var wg sync.WaitGroup
	for range streams {
		wg.Go(func() {
			c, err := t.bulk()
			if err != nil {
				first.Store(err)
				return
			}
			defer c.Close()
			// A stream whose writes stall past the phase is cut and counted, never waited for.
			var cut atomic.Bool
			timer := time.AfterFunc(time.Until(end)+3*time.Second, func() { cut.Store(true); c.Close() })
			defer timer.Stop()
			buf := make([]byte, 256<<10)
			for time.Now().Before(end) {
				n, err := c.Write(buf)
				total.Add(int64(n))
				if err != nil {
					if cut.Load() {
						stalled.Add(1)
						return
					}
					first.Store(err)
					return
				}
			}
		})
	}
	wg.Wait()
	el, cpu := time.Since(start), benchCPU(pids)-cpu0
	if e, ok := first.Load().(error); ok {
		return total.Load(), el, cpu, e
	}
	return total.Load(), el, cpu, nil
}

// benchCPU is the CPU time of the benchmark's processes (this load generator, the gateway,
// the backends) and of every kernel thread, as bench/10-gateway.sh's benchload counts it:
// the machine's CPU less the other users' processes on a shared machine.
func benchCPU(pids []int) time.Duration {
	var total time.Duration
	want := map[int]bool{}
	for _, p := range pids {
		want[p] = true
	}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+2:]))
		if len(f) < 13 {
			continue
		}
		if ppid, _ := strconv.Atoi(f[1]); !want[pid] && ppid != 2 && pid != 2 {
			continue
		}
		ut, _ := strconv.ParseInt(f[11], 10, 64)
		st, _ := strconv.ParseInt(f[12], 10, 64)
		total += time.Duration(ut+st) * time.Second / 100
	}
	return total
}
