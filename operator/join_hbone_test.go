package operator

import (
	"crypto/tls"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshfed/meshfed/trust/devca"
)

// hboneLikeListener serves TLS on loopback the way meshfed's HBONE listener does (TLS 1.3,
// ALPN h2, a client certificate required) with an SVID of spiffe://<td>/ns/meshfed-system/
// sa/meshfed-gateway from a dev CA, on addr.
func hboneLikeListener(t *testing.T, td, addr string) string {
	t.Helper()
	ca, err := devca.Init(t.TempDir(), td, devca.Options{})
	if err != nil {
		t.Fatal(err)
	}
	svid, err := ca.Issue(devca.IssueRequest{ID: "spiffe://" + td + "/ns/meshfed-system/sa/meshfed-gateway"})
	if err != nil {
		t.Fatal(err)
	}
	cert := tls.Certificate{PrivateKey: svid.Key, Leaf: svid.Chain[0]}
	for _, c := range svid.Chain {
		cert.Certificate = append(cert.Certificate, c.Raw)
	}
	ln, err := tls.Listen("tcp", addr, &tls.Config{MinVersion: tls.VersionTLS13, NextProtos: []string{"h2"},
		ClientAuth: tls.RequireAnyClientCert, Certificates: []tls.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
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
			_ = c.(*tls.Conn).Handshake() // refused: no client certificate
			c.Close()
		}
	}()
	return ln.Addr().String()
}

// TestJoinProbesHBONEGateways: join probes each --hbone-gateway address (health.ProbeHBONE)
// with the joining cluster's trust domain, shows the result in the plan and its table, and
// goes on when one fails (the gateway is often deployed after join); cmd/ names the flag.
func TestJoinProbesHBONEGateways(t *testing.T) {
	t.Parallel()
	_, st := etcdNoAuth(t)
	ctx := tctx(t)
	// One port for all HBONE addresses (join requires it): loopback addresses share it.
	ours := hboneLikeListener(t, "west.example.org", "127.0.0.1:0")
	port := ours[strings.LastIndexByte(ours, ':'):]
	theirs := hboneLikeListener(t, "north.example.org", "127.0.0.2"+port)
	r := joinReq(t, "west", "us", "west.example.org")
	r.HBONEGateways = []string{ours, theirs, "127.0.0.3" + port}
	r.DryRun = true
	r.ProbeTimeout = 10 * time.Second // a TLS handshake each; the race detector on a loaded machine is slow
	plan, err := Join(ctx, st, r)
	if err != nil {
		t.Fatal(err)
	}
	if len(plan.HBONEGateways) != 3 {
		t.Fatalf("HBONE checks %+v", plan.HBONEGateways)
	}
	want := []struct {
		ok     bool
		result string
	}{{true, "ok"}, {false, "wrong_cluster"}, {false, "refused"}}
	for i, w := range want {
		g := plan.HBONEGateways[i]
		if g.Address != r.HBONEGateways[i] || g.OK != w.ok || g.Result != w.result {
			t.Errorf("check %d: %+v, want ok=%v result=%s", i, g, w.ok, w.result)
		}
	}
	if !strings.Contains(plan.HBONEGateways[1].Detail, "spiffe://north.example.org/") || !strings.Contains(plan.HBONEGateways[1].Detail, "west.example.org") {
		t.Errorf("wrong trust domain detail: %q", plan.HBONEGateways[1].Detail)
	}
	var b strings.Builder
	if err := plan.WriteTable(&b); err != nil {
		t.Fatal(err)
	}
	for _, line := range []string{"hbone gateway    " + ours + ": ok", "hbone gateway    " + theirs + ": NOT AN HBONE LISTENER OF THIS CLUSTER (wrong_cluster)",
		"hbone gateway    " + r.HBONEGateways[2] + ": NOT ANSWERING (refused)"} {
		if !strings.Contains(b.String(), line) {
			t.Errorf("table lacks %q:\n%s", line, b.String())
		}
	}
}
