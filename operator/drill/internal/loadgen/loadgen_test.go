package loadgen

import (
	"context"
	"crypto/tls"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshfed/meshfed/harness"
	"github.com/meshfed/meshfed/internal/testpki"
)

type fixed struct{ rt Route }

func (f fixed) Route() (Route, error) { return f.rt, nil }

// TestGeneratorAgainstTLSWorkload: real TLS connections to a demo workload; every answer
// names the workload's cluster; a dead address gives errors, not hangs.
func TestGeneratorAgainstTLSWorkload(t *testing.T) {
	wl, err := harness.StartWorkload("west", "echo-0", "127.0.0.1:0", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer wl.Close()
	g := &Generator{Router: fixed{Route{Cluster: "west", Addr: wl.Addr, SNI: "x"}}, Rate: 50, Timeout: 2 * time.Second,
		TLS: &tls.Config{InsecureSkipVerify: true}} //nolint:gosec // self-signed demo workload
	ctx, cancel := context.WithCancel(context.Background())
	var mu sync.Mutex
	var res []Result
	done := make(chan struct{})
	go func() {
		_ = g.Run(ctx, func(r Result) {
			mu.Lock()
			res = append(res, r)
			n := len(res)
			mu.Unlock()
			if n == 10 {
				cancel()
			}
		})
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("generator did not finish")
	}
	mu.Lock()
	defer mu.Unlock()
	if len(res) < 10 {
		t.Fatalf("%d results", len(res))
	}
	for _, r := range res {
		if r.Err != "" || r.Cluster != "west" || r.Expected != "west" || r.Latency <= 0 {
			t.Fatalf("result %+v", r)
		}
	}

	l := &Generator{Router: fixed{Route{Addr: "127.0.0.1:1"}}, Rate: 10, Timeout: time.Second}
	_, err = l.Request(context.Background(), Route{Addr: "127.0.0.1:1"}, 1)
	if err == nil || !strings.Contains(err.Error(), "connect") {
		t.Fatalf("dead address: %v", err)
	}
}

func TestParseServer(t *testing.T) {
	for in, want := range map[string]string{"west echo-0: hi\n": "west", "a-1 w: x": "a-1"} {
		if got, err := ParseServer(in); err != nil || got != want {
			t.Errorf("ParseServer(%q) = %q, %v", in, got, err)
		}
	}
	for _, bad := range []string{"", "west", "West echo: x", "west echo x", "-a b: c"} {
		if _, err := ParseServer(bad); err == nil {
			t.Errorf("ParseServer(%q) accepted", bad)
		}
	}
}

// TestRefusedCertificateIsAnError: in TLS 1.3 the client's handshake ends before the
// workload has judged the client certificate; a workload that refuses the drill's
// certificate (an alert one round trip later) must count as a failed request, not as served.
func TestRefusedCertificateIsAnError(t *testing.T) {
	workloadCA := testpki.New(t, testpki.Spec{CN: "west root", CA: true})
	trustedCA := testpki.New(t, testpki.Spec{CN: "east root", CA: true})
	strangerCA := testpki.New(t, testpki.Spec{CN: "stranger root", CA: true})
	server := workloadCA.Issue(t, testpki.Spec{URIs: []string{"spiffe://west.example/ns/demo/sa/echo"}})
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
		MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{server.TLS()},
		ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: trustedCA.Pool(),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				if c.(*tls.Conn).Handshake() != nil {
					return
				}
				io.Copy(io.Discard, c) // accepted: wait for the client to go
			}()
		}
	}()
	identify := func(cs tls.ConnectionState) (string, error) { return "west", nil }
	request := func(client *testpki.Cert) (string, error) {
		g := &Generator{Timeout: 2 * time.Second, Identify: identify, TLS: &tls.Config{
			RootCAs: workloadCA.Pool(), ServerName: "x", Certificates: []tls.Certificate{client.TLS()},
			VerifyConnection:   func(tls.ConnectionState) error { return nil },
			InsecureSkipVerify: true, //nolint:gosec // the server certificate carries no DNS name; only the client side is under test
		}}
		return g.Request(context.Background(), Route{Cluster: "west", Addr: ln.Addr().String()}, 1)
	}
	for i := 0; i < 5; i++ {
		if c, err := request(strangerCA.Issue(t, testpki.Spec{URIs: []string{"spiffe://stranger.example/x"}})); err == nil {
			t.Fatalf("a refused client certificate counted as served by %q", c)
		} else if !strings.Contains(err.Error(), "refused") {
			t.Fatalf("refusal: %v; want it named", err)
		}
		if c, err := request(trustedCA.Issue(t, testpki.Spec{URIs: []string{"spiffe://east.example/drill"}})); err != nil || c != "west" {
			t.Fatalf("accepted client certificate: %q %v", c, err)
		}
	}
}
