package drill

import (
	"crypto/tls"
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/meshfed/meshfed/internal/workloadapitest"
	"github.com/meshfed/meshfed/operator"
	"github.com/meshfed/meshfed/operator/internal/optest"
	"github.com/meshfed/meshfed/trust"
	"github.com/meshfed/meshfed/trust/devca"
)

// TestDrillIdentityFromWorkloadAPI: with SPIFFESocket (--spiffe-socket) the drill's
// traffic presents the SVID a SPIFFE Workload API agent gives it (a fake agent here): a
// workload of west that demands client certificates of east's trust domain sees east's
// SPIFFE ID on every request, and the drill names west as the serving cluster from the
// workload's own SPIFFE ID.
func TestDrillIdentityFromWorkloadAPI(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	east, err := devca.Init(dir, "east.test", devca.Options{})
	if err != nil {
		t.Fatal(err)
	}
	west, err := devca.Init(dir, "west.test", devca.Options{})
	if err != nil {
		t.Fatal(err)
	}
	roots := func(ca *devca.CA) []*x509.Certificate {
		r, err := ca.Roots()
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	const clientID = "spiffe://east.test/ns/ops/sa/drill-runner"
	svid, err := east.Issue(devca.IssueRequest{ID: clientID})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := workloadapitest.Response(clientID, svid.Chain, svid.Key, roots(east), map[string][]*x509.Certificate{"west.test": roots(west)})
	if err != nil {
		t.Fatal(err)
	}
	agent, err := workloadapitest.Start(filepath.Join(dir, "agent.sock"), resp)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(agent.Close)

	// west's workload: mTLS, east's clients only; it records who called.
	wl, err := west.Issue(devca.IssueRequest{ID: "spiffe://west.test/ns/demo/sa/echo"})
	if err != nil {
		t.Fatal(err)
	}
	eastPool := x509.NewCertPool()
	for _, r := range roots(east) {
		eastPool.AddCert(r)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{*wl.TLSCertificate()},
		ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: eastPool})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var mu sync.Mutex
	callers := map[string]int{}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				tc := c.(*tls.Conn)
				id := "no SPIFFE ID"
				if err := tc.Handshake(); err != nil {
					// A client that gave up (request timeout) shows as EOF or a reset; a
					// missing or untrusted certificate names the certificate.
					if !strings.Contains(err.Error(), "certificate") {
						return
					}
					id = "refused: " + err.Error()
				} else if pc := tc.ConnectionState().PeerCertificates; len(pc) > 0 {
					if sid, err := x509svid.IDFromCert(pc[0]); err == nil {
						id = sid.String()
					}
				}
				mu.Lock()
				callers[id]++
				mu.Unlock()
			}()
		}
	}()
	westCA := filepath.Join(dir, "west-ca.pem")
	if err := os.WriteFile(westCA, trust.CertsPEM(roots(west)), 0o644); err != nil {
		t.Fatal(err)
	}

	_, st := optest.EtcdNoAuth(t)
	ctx := optest.Ctx(t)
	for _, c := range [][2]string{{"east", "east.test"}, {"west", "west.test"}} {
		if _, err := operator.Join(ctx, st, joinReq(t, c[0], "eu", c[1])); err != nil {
			t.Fatal(err)
		}
	}
	prog := &optest.SyncWriter{}
	rep, err := Run(ctx, st, Request{Fail: "west", From: "east", Target: ln.Addr().String(), SPIFFESocket: agent.Addr, CAFile: westCA,
		Duration: time.Second, LeaseTTL: 5 * time.Second, Warmup: time.Second, Rate: 5, RequestTimeout: 5 * time.Second, RecoveryTimeout: 3 * time.Second,
		Progress: prog, Actor: "test"})
	if err != nil {
		t.Fatalf("drill: %v\n%s", err, prog)
	}
	if !strings.Contains(prog.String(), "client identity "+clientID+" (workload API "+agent.Addr+")") {
		t.Errorf("progress does not name the Workload API identity:\n%s", prog)
	}
	tr := rep.Traffic
	if tr == nil || tr.ByCluster["west"] < 3 {
		t.Fatalf("traffic: %+v", tr)
	}
	// On a loaded machine a request may time out; nothing else may fail.
	for k := range tr.ErrorKinds {
		if k != "no answer within the request timeout" {
			t.Errorf("%d errors %q", tr.ErrorKinds[k], k)
		}
	}
	// The drill counts a request answered once its TLS 1.3 handshake is done, when the
	// workload may still be reading the client's certificate (and a client closing at once
	// may cut that): the workload's count can trail by a few, never name anyone else.
	mu.Lock()
	defer mu.Unlock()
	if len(callers) != 1 || callers[clientID] < tr.ByCluster["west"]*3/4 {
		t.Fatalf("the workload saw callers %v, want %s on (nearly) each of the %d requests answered", callers, clientID, tr.ByCluster["west"])
	}
	t.Logf("the workload saw %s on %d connections; the drill counted %d answered by west, %d errors (%v)", clientID, callers[clientID], tr.ByCluster["west"], tr.Errors, tr.ErrorKinds)
}
