package hbone

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// ztunnel is the destination "ztunnel": it terminates the inner mTLS with the destination
// workload's SVID (as ztunnel does for the pods of its node), requires a caller SVID of
// one of its trusted roots, takes HTTP/2 CONNECT and forwards each stream to the app over
// TCP, carrying EOF both ways (CloseWrite to the app; end of the response stream).
type ztunnel struct {
	addr string
	mu   sync.Mutex
	// callers are the SPIFFE IDs that opened inner mTLS sessions; authorities the CONNECT
	// authorities.
	callers, authorities []string
}

func startZtunnel(t *testing.T, cert tls.Certificate, app string, roots ...*ca) *ztunnel {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	z := &ztunnel{addr: ln.Addr().String()}
	cfg := &tls.Config{
		MinVersion:   tls.VersionTLS13,
		NextProtos:   []string{"h2"},
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.RequireAnyClientCert,
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			id, err := verifySPIFFE(raw, roots...)
			if err == nil {
				z.mu.Lock()
				z.callers = append(z.callers, id)
				z.mu.Unlock()
			}
			return err
		},
	}
	h2 := &http2.Server{}
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		z.mu.Lock()
		z.authorities = append(z.authorities, r.Host)
		z.mu.Unlock()
		if r.Method != http.MethodConnect {
			http.Error(w, "CONNECT only", http.StatusMethodNotAllowed)
			return
		}
		up, err := net.Dial("tcp", app)
		if err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		defer up.Close()
		w.WriteHeader(http.StatusOK)
		rc := http.NewResponseController(w)
		_ = rc.Flush()
		go func() {
			_, _ = io.Copy(up, r.Body)
			_ = up.(*net.TCPConn).CloseWrite() // the caller's EOF reaches the app
		}()
		buf := make([]byte, 32<<10)
		for {
			n, err := up.Read(buf)
			if n > 0 {
				if _, werr := w.Write(buf[:n]); werr != nil {
					return
				}
				_ = rc.Flush()
			}
			if err != nil {
				return // returning ends the response stream: the app's EOF reaches the caller
			}
		}
	})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				tc := tls.Server(c, cfg)
				if err := tc.Handshake(); err != nil {
					c.Close()
					return
				}
				h2.ServeConn(tc, &http2.ServeConnOpts{Handler: handler})
			})
		}
	})
	t.Cleanup(func() { ln.Close() })
	return z
}

func (z *ztunnel) seen() (callers, authorities []string) {
	z.mu.Lock()
	defer z.mu.Unlock()
	return append([]string(nil), z.callers...), append([]string(nil), z.authorities...)
}

// appConn is what the app saw of one connection.
type appConn struct {
	received int64
	eof      bool
}

// app is the destination workload: mode "echo" echoes every byte and reports how many it
// read before EOF; mode "greet" reads 4 bytes, answers "pong", closes its write side
// (half-close) and then reads until EOF.
type app struct {
	addr  string
	conns chan appConn
}

func startApp(t *testing.T, mode string) *app {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := &app{addr: ln.Addr().String(), conns: make(chan appConn, 16)}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				var n int64
				var err error
				switch mode {
				case "echo":
					n, err = io.Copy(c, c)
				case "greet":
					buf := make([]byte, 4)
					if _, err = io.ReadFull(c, buf); err == nil {
						_, err = c.Write([]byte("pong"))
						_ = c.(*net.TCPConn).CloseWrite()
						var m int64
						m, err = io.Copy(io.Discard, c)
						n = 4 + m
					}
				}
				a.conns <- appConn{received: n, eof: err == nil}
			}()
		}
	}()
	t.Cleanup(func() { ln.Close() })
	return a
}

func (a *app) next(t *testing.T) appConn {
	t.Helper()
	select {
	case c := <-a.conns:
		return c
	case <-time.After(20 * time.Second):
		t.Fatal("the app saw no connection end within 20s")
	}
	return appConn{}
}

// gateway is a running `meshfed gateway` process.
type gateway struct {
	hbone, sni, admin string
	out               *strings.Builder
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// startGateway runs $MESHFED_BIN gateway for cluster west with an exports file whose one
// service has one endpoint reachable over HBONE at the ztunnel, and waits for /readyz.
func startGateway(t *testing.T, dir, certFile, keyFile, ztunnelAddr string) *gateway {
	t.Helper()
	bin := os.Getenv("MESHFED_BIN")
	if bin == "" {
		t.Skip("MESHFED_BIN is not set: run hack/interop/hbone/run.sh (it builds meshfed and runs this test)")
	}
	host, port, _ := net.SplitHostPort(ztunnelAddr)
	exports := fmt.Sprintf(`{"services":[{"name":"echo","namespace":"demo","ports":[{"name":"tls","port":8443,"protocol":"TCP"}],
"endpoints":[{"address":%q,"hbonePort":%s}]}]}`, host, port)
	exportsFile := filepath.Join(dir, "exports.json")
	if err := os.WriteFile(exportsFile, []byte(exports), 0o644); err != nil {
		t.Fatal(err)
	}
	g := &gateway{hbone: freeAddr(t), sni: freeAddr(t), admin: freeAddr(t), out: &strings.Builder{}}
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, bin, "gateway", "--cluster", "west", "--exports", exportsFile,
		"--listen", g.sni, "--admin", g.admin, "--hbone-listen", g.hbone,
		"--hbone-cert", certFile, "--hbone-key", keyFile, "--bundle-dir", dir)
	cmd.Stdout, cmd.Stderr = g.out, g.out
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cancel()
		<-exited
		if t.Failed() {
			t.Logf("meshfed gateway output:\n%s", g.out.String())
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case err := <-exited:
			t.Fatalf("meshfed gateway exited: %v\n%s", err, g.out.String())
		default:
		}
		resp, err := http.Get("http://" + g.admin + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return g
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("meshfed gateway not ready within 30s (last: %v)\n%s", err, g.out.String())
		}
		// Poll /readyz: the condition is the gateway saying it is ready, bounded above.
		select {
		case err := <-exited:
			t.Fatalf("meshfed gateway exited: %v\n%s", err, g.out.String())
		case <-time.After(50 * time.Millisecond):
		}
	}
}
