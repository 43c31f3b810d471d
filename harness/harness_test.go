package harness_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/meshfed/meshfed/api/names"
	"github.com/meshfed/meshfed/harness"
	"github.com/meshfed/meshfed/internal/waitfor"
)

func echoExports(addr string) string {
	host, port, _ := net.SplitHostPort(addr)
	return fmt.Sprintf(`services:
  - name: echo
    namespace: demo
    ports: [{name: tls, port: 8443, targetPort: %s}]
    endpoints: [{address: %s}]
`, port, host)
}

// TestCrossClusterCallThroughGateway: west exports echo; east sees it in its import view
// and a client calls it through west's gateway by SNI, with TLS end to end.
func TestCrossClusterCallThroughGateway(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	wl, err := harness.StartWorkload("west", "echo-0", harness.WorkloadIP(1, 0)+":0", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer wl.Close()
	f, err := harness.Start(ctx, harness.Options{Clusters: []harness.ClusterSpec{
		{Name: "east"}, {Name: "west", Exports: echoExports(wl.Addr)}, {Name: "north", Region: "region-2"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	east, west := f.Cluster("east"), f.Cluster("west")
	waitfor.Cond(t, 10*time.Second, func() bool {
		s := east.Federation().View().Services["demo/echo"]
		return s != nil && s.Exporter("west") != nil && s.Exporter("west").ReadyEndpoints() == 1
	}, "east imports demo/echo from west")
	rec := east.Federation().View().Clusters["west"]
	if rec == nil || rec.Gateways[0] != west.GatewayAddr {
		t.Fatalf("west's cluster record = %+v, want gateway %s", rec, west.GatewayAddr)
	}
	// Call through west's gateway as an importer in east would.
	var conn *tls.Conn
	waitfor.Cond(t, 10*time.Second, func() bool {
		conn, err = tls.Dial("tcp", rec.Gateways[0], &tls.Config{ServerName: names.ServiceSNI("demo", "echo", 8443), InsecureSkipVerify: true})
		return err == nil
	}, "dial west's gateway: %v", err)
	defer conn.Close()
	// TLS was not terminated by the gateway: the certificate is the workload's own.
	if got := conn.ConnectionState().PeerCertificates[0].Subject.CommonName; got != "echo-0.west.workload" {
		t.Fatalf("peer certificate CN = %q, want the workload's", got)
	}
	fmt.Fprintf(conn, "hello\n")
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "west echo-0: hello") {
		t.Fatalf("reply %q, %v", line, err)
	}
}
