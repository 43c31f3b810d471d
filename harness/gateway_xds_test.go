package harness_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshfed/meshfed/api/names"
	"github.com/meshfed/meshfed/eastwest"
	"github.com/meshfed/meshfed/eastwest/xdsroutes"
	"github.com/meshfed/meshfed/harness"
	"github.com/meshfed/meshfed/internal/metrictest"
	"github.com/meshfed/meshfed/internal/waitfor"
)

// twoWorkloads starts echo-0 and echo-1 of cluster i on the same port (one exports entry
// has one target port) at their two loopback addresses.
func twoWorkloads(t *testing.T, cluster string, i int) (*harness.Workload, *harness.Workload) {
	t.Helper()
	for try := 0; try < 20; try++ {
		w0, err := harness.StartWorkload(cluster, "echo-0", harness.WorkloadIP(i, 0)+":0", nil)
		if err != nil {
			t.Fatal(err)
		}
		_, port, _ := net.SplitHostPort(w0.Addr)
		w1, err := harness.StartWorkload(cluster, "echo-1", harness.WorkloadIP(i, 1)+":"+port, nil)
		if err != nil {
			w0.Close() // that port is taken on the second address: pick another
			continue
		}
		t.Cleanup(w0.Close)
		t.Cleanup(w1.Close)
		return w0, w1
	}
	t.Fatal("no common free port for two workloads")
	return nil, nil
}

// twoEndpointExports exports demo/echo (service port 8443) on both workloads, with readiness.
func twoEndpointExports(w0, w1 *harness.Workload, ready0, ready1 bool, extra string) string {
	h0, port, _ := net.SplitHostPort(w0.Addr)
	h1, _, _ := net.SplitHostPort(w1.Addr)
	return fmt.Sprintf(`services:
  - name: echo
    namespace: demo
    ports: [{name: tls, port: 8443, targetPort: %s}]
    endpoints: [{address: %s, zone: z0, ready: %t}, {address: %s, zone: z1, ready: %t}]
%s`, port, h0, ready0, h1, ready1, extra)
}

// callEcho opens TLS through the gateway with the service's SNI and returns which
// workload answered: its certificate, checked here, proves TLS went end to end.
func callEcho(gwAddr, sni string) (string, error) {
	var cn string
	cfg := &tls.Config{ServerName: sni,
		// The workload's certificate is self-signed for its own name, not the SNI: the
		// reply is checked against it below instead.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			cn = cs.PeerCertificates[0].Subject.CommonName
			return nil
		}}
	d := tls.Dialer{NetDialer: &net.Dialer{Timeout: 5 * time.Second}, Config: cfg}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := d.DialContext(ctx, "tcp", gwAddr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := fmt.Fprintf(c, "hello\n"); err != nil {
		return "", err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return "", err
	}
	// "<cluster> <workload>: hello" from the workload whose certificate we saw.
	fields := strings.Fields(line)
	if len(fields) != 3 || fields[2] != "hello" || cn != strings.TrimSuffix(fields[1], ":")+"."+fields[0]+".workload" {
		return "", fmt.Errorf("reply %q from certificate %q", line, cn)
	}
	return fields[0] + "/" + strings.TrimSuffix(fields[1], ":"), nil
}

// served makes n calls and counts who answered.
func served(t *testing.T, gwAddr, sni string, n int) map[string]int {
	t.Helper()
	out := map[string]int{}
	for i := 0; i < n; i++ {
		who, err := callEcho(gwAddr, sni)
		if err != nil {
			t.Fatalf("call %d through the gateway: %v", i, err)
		}
		out[who]++
	}
	return out
}

type memLog struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *memLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *memLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// testLog is a logger whose output the test prints only when it fails.
func testLog(t *testing.T) *slog.Logger {
	lb := &memLog{}
	t.Cleanup(func() {
		if t.Failed() {
			lb.mu.Lock()
			t.Log("logs:\n" + lb.b.String())
			lb.mu.Unlock()
		}
	})
	return slog.New(slog.NewTextHandler(lb, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

// TestGatewayRoutesFromFederationXDS: east exports demo/echo from a file; its federation
// service publishes it and its agent serves it over xDS (Cluster.XDSAddr); east's gateway
// (the real eastwest.Gateway, its route source eastwest/xdsroutes) takes its route table
// from there (meshfed gateway --federation) and a TLS client reaches the workloads through it.
// Readiness changes propagate; the federation stops and the gateway keeps routing with
// its last table; the federation comes back and updates resume; a gateway whose domain
// does not match is refused with a NACK the federation counts.
func TestGatewayRoutesFromFederationXDS(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	log := testLog(t)
	w0, w1 := twoWorkloads(t, "east", 0)
	westWL, err := harness.StartWorkload("west", "other-0", harness.WorkloadIP(1, 0)+":0", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(westWL.Close)
	wh, wp, _ := net.SplitHostPort(westWL.Addr)
	f, err := harness.Start(ctx, harness.Options{Log: log, Clusters: []harness.ClusterSpec{
		{Name: "east", NoGateway: true, Exports: twoEndpointExports(w0, w1, true, true, "")},
		{Name: "west", NoGateway: true, Exports: fmt.Sprintf("services:\n  - {name: other, namespace: demo, ports: [{port: 9000, targetPort: %s}], endpoints: [{address: %s}]}\n", wp, wh)},
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Close)
	east := f.Cluster("east")
	waitfor.Cond(t, 20*time.Second, func() bool {
		s := east.Federation().View().Services["demo/other"]
		return s != nil && s.Exporter("west") != nil
	}, "east imports west's demo/other")

	// East's gateway, routes from the xDS server of east's federation agent.
	xdsAddr := east.XDSAddr
	greg := prometheus.NewRegistry()
	src, err := xdsroutes.New(xdsroutes.Config{Address: xdsAddr, Cluster: "east", Host: "gw-0",
		BackoffBase: 20 * time.Millisecond, BackoffMax: 200 * time.Millisecond, Log: log, Registry: greg})
	if err != nil {
		t.Fatal(err)
	}
	gw, err := eastwest.New(eastwest.Config{Cluster: "east", Log: log, Registry: greg, DrainTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	srcCtx, stopSrc := context.WithCancel(context.Background())
	defer stopSrc()
	if err := gw.StartSource(srcCtx, src); err != nil {
		t.Fatal(err)
	}
	ln, err := eastwest.Listen(context.Background(), harness.ClusterIP(0)+":0", 0)
	if err != nil {
		t.Fatal(err)
	}
	gctx, stopGW := context.WithCancel(context.Background())
	gdone := make(chan error, 1)
	go func() { gdone <- gw.Serve(gctx, ln) }()
	t.Cleanup(func() { stopGW(); <-gdone })
	gwAddr := ln.Addr().String()
	echoSNI := names.ServiceSNI("demo", "echo", 8443)
	key := eastwest.ServiceKey{Namespace: "demo", Name: "echo", Port: 8443}
	readyAddrs := func() string {
		tbl := src.Status().Table
		var out []string
		for _, e := range tbl.Services[key] {
			if e.Ready {
				out = append(out, e.Address)
			}
		}
		return strings.Join(out, ",")
	}
	h0, _, _ := net.SplitHostPort(w0.Addr)
	h1, _, _ := net.SplitHostPort(w1.Addr)

	// 1. The file export is routed via xDS, and nothing else: west's export is not east's
	// to route (never an open relay).
	if got := readyAddrs(); got != h0+","+h1 {
		t.Fatalf("first table: ready endpoints %q (table %+v)", got, src.Status().Table)
	}
	if n := src.Status().Table.Len(); n != 1 {
		t.Fatalf("first table has %d service ports, want east's one", n)
	}
	for who := range served(t, gwAddr, echoSNI, 6) {
		if who != "east/echo-0" && who != "east/echo-1" {
			t.Fatalf("served by %s", who)
		}
	}
	if _, err := callEcho(gwAddr, names.ServiceSNI("demo", "other", 9000)); err == nil {
		t.Fatal("east's gateway routed west's export")
	}

	// 2. Readiness: echo-0 not ready in the exports file → gone from the gateway's table.
	if err := east.SetExports(twoEndpointExports(w0, w1, false, true, "")); err != nil {
		t.Fatal(err)
	}
	waitfor.Cond(t, 20*time.Second, func() bool { return readyAddrs() == h1 }, "echo-0 unready at the gateway (ready %q)", readyAddrs())
	if got := served(t, gwAddr, echoSNI, 6); got["east/echo-1"] != 6 {
		t.Fatalf("after echo-0 went unready: %v", got)
	}

	// 3. The federation stops (service and its xDS server): the gateway sees it, keeps its
	// table, stays ready and keeps routing by it. A change made meanwhile is not seen.
	before := readyAddrs()
	if err := east.StopFederation(); err != nil {
		t.Fatal(err)
	}
	waitfor.Cond(t, 10*time.Second, func() bool { return !src.Status().Connected }, "gateway sees the federation gone")
	if metrictest.Sum(t, greg, "meshfed_gateway_xds_connected") != 0 {
		t.Fatal("connected gauge still 1")
	}
	if err := east.SetExports(twoEndpointExports(w0, w1, true, false, "")); err != nil {
		t.Fatal(err)
	}
	if err := gw.Ready(); err != nil {
		t.Fatalf("gateway unready while the federation is down: %v", err)
	}
	waitfor.Cond(t, 10*time.Second, func() bool { return metrictest.Sum(t, greg, "meshfed_gateway_xds_disconnects_total") >= 2 },
		"the gateway retries")
	if got := served(t, gwAddr, echoSNI, 10); got["east/echo-1"] != 10 {
		t.Fatalf("while the federation is down: %v (the last table routes to echo-1 only)", got)
	}
	if got := readyAddrs(); got != before {
		t.Fatalf("table changed while the federation was down: %q -> %q", before, got)
	}

	// 4. The federation returns on the same address: the gateway reconnects and takes
	// what changed while it was away (echo-1 unready, echo-0 ready), then a new export.
	if err := east.StartFederation(ctx); err != nil {
		t.Fatal(err)
	}
	if err := east.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	if east.XDSAddr != xdsAddr {
		t.Fatalf("the federation came back with xDS at %s, not %s", east.XDSAddr, xdsAddr)
	}
	waitfor.Cond(t, 20*time.Second, func() bool { return src.Status().Connected && readyAddrs() == h0 },
		"gateway reconnected with echo-0 the only ready endpoint (ready %q, status %+v)", readyAddrs(), src.Status())
	if got := served(t, gwAddr, echoSNI, 6); got["east/echo-0"] != 6 {
		t.Fatalf("after the federation returned: %v", got)
	}
	w2, err := harness.StartWorkload("east", "late-0", harness.WorkloadIP(0, 2)+":0", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w2.Close)
	h2, p2, _ := net.SplitHostPort(w2.Addr)
	late := fmt.Sprintf("  - {name: late, namespace: demo, ports: [{port: 7443, targetPort: %s}], endpoints: [{address: %s}]}\n", p2, h2)
	if err := east.SetExports(twoEndpointExports(w0, w1, true, false, late)); err != nil {
		t.Fatal(err)
	}
	lateSNI := names.ServiceSNI("demo", "late", 7443)
	waitfor.Cond(t, 20*time.Second, func() bool { return src.Status().Table.Len() == 2 }, "a new export reaches the gateway")
	if got := served(t, gwAddr, lateSNI, 3); got["east/late-0"] != 3 {
		t.Fatalf("new export: %v", got)
	}

	// 5. NACK: a gateway configured for another domain refuses every inbound cluster; the
	// federation counts the NACKs, the misconfigured gateway never gets a table.
	bad, err := xdsroutes.New(xdsroutes.Config{Address: xdsAddr, Cluster: "east", Host: "gw-wrong", Domain: "corp.example",
		BackoffBase: 20 * time.Millisecond, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	badCtx, stopBad := context.WithCancel(context.Background())
	badDone := make(chan error, 1)
	go func() {
		badDone <- bad.Run(badCtx, func(*eastwest.RouteTable) { t.Error("a table from clusters of another domain") })
	}()
	waitfor.Cond(t, 10*time.Second, func() bool {
		return metrictest.Sum(t, east.Metrics(), "meshfed_xds_nacks_total", "class", "gateway", "type", "cds") >= 1
	}, "the federation counts the gateway's NACK")
	stopBad()
	if err := <-badDone; err != nil {
		t.Fatal(err)
	}
	if bad.Status().Table != nil {
		t.Fatal("the NACKing gateway has a table")
	}
	if n := metrictest.Sum(t, greg, "meshfed_gateway_xds_nacks_total"); n != 0 {
		t.Fatalf("the good gateway NACKed %v times", n)
	}
	stopSrc()
}
