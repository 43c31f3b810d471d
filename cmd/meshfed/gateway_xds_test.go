package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/meshfed/meshfed/api/names"
	"github.com/meshfed/meshfed/harness"
	"github.com/meshfed/meshfed/internal/atomicfile"
	"github.com/meshfed/meshfed/internal/healthprobe"
	"github.com/meshfed/meshfed/internal/testetcd"
	"github.com/meshfed/meshfed/internal/waitfor"
	"github.com/meshfed/meshfed/trust/devca"
)

func TestGatewayRouteSourceFlags(t *testing.T) {
	base := gatewayFlags{cluster: "east", listen: ":15443", admin: "127.0.0.1:0", domain: "cluster.local",
		maxHelloBytes: 16384, helloTimeout: time.Second, connectTimeout: time.Second, pollInterval: time.Second,
		connectAttempts: 3, copyMode: "poll-splice"}
	for name, tc := range map[string]struct {
		exports, federation, want string
	}{
		"neither": {"", "", "--exports: required"},
		"both":    {"x.yaml", "127.0.0.1:15010", "--federation: give --federation or --exports, not both"},
		"bad":     {"", "federation", "--federation: \"federation\" is not HOST:PORT"},
		"cache":   {"x.yaml", "", "--federation-cache: only with --federation"},
		"tls":     {"", "127.0.0.1:15010", "--federation-ca: required with --federation-cert"},
	} {
		f := base
		f.exports, f.federation = tc.exports, tc.federation
		switch name {
		case "cache":
			f.federationCache = "/var/lib/meshfed/routes.json"
		case "tls":
			f.fedCert, f.fedKey = "gw.pem", "gw-key.pem"
		}
		if err := f.validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", name, err, tc.want)
		}
	}
	f := base
	f.federation = "127.0.0.1:15010"
	if err := f.validate(); err != nil {
		t.Fatalf("--federation alone: %v", err)
	}
}

// startInboundXDS serves the gateway contract (one inbound cluster, one endpoint) from a
// real go-control-plane ADS server on loopback.
func startInboundXDS(t *testing.T, endpoint string) string {
	t.Helper()
	name := names.InboundClusterName("demo", "echo", 8443, "")
	cds := cachev3.NewLinearCache(resourcev3.ClusterType)
	eds := cachev3.NewLinearCache(resourcev3.EndpointType)
	ads := &corev3.ConfigSource{ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}}
	cds.SetResources(map[string]types.Resource{name: &clusterv3.Cluster{Name: name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		EdsClusterConfig:     &clusterv3.Cluster_EdsClusterConfig{EdsConfig: ads}}})
	host, port, _ := net.SplitHostPort(endpoint)
	p, _ := net.LookupPort("tcp", port)
	eds.SetResources(map[string]types.Resource{name: &endpointv3.ClusterLoadAssignment{ClusterName: name,
		Endpoints: []*endpointv3.LocalityLbEndpoints{{LbEndpoints: []*endpointv3.LbEndpoint{{
			HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: &corev3.Address{
				Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{Address: host,
					PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(p)}}}}}}}}}}}})
	mux := &cachev3.MuxCache{Classify: func(r *cachev3.Request) string { return r.GetTypeUrl() },
		Caches: map[string]cachev3.Cache{resourcev3.ClusterType: cds, resourcev3.EndpointType: eds}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	gs := grpc.NewServer()
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(gs, serverv3.NewServer(ctx, mux, nil))
	go func() { _ = gs.Serve(ln) }()
	t.Cleanup(func() { gs.Stop(); cancel() })
	return ln.Addr().String()
}

// The command with --federation: routes from xDS, health says ok with the routed service,
// and a clean exit on cancellation. Started against a federation that is not there, it
// waits (not listening, not ready) and still stops cleanly.
func TestGatewayCommandFromFederation(t *testing.T) {
	xdsAddr := startInboundXDS(t, "127.0.0.1:9")
	addr := freeAddr(t)
	cmd := newGatewayCmd()
	cmd.SetArgs([]string{"--cluster", "east", "--listen", addr, "--admin", "127.0.0.1:0", "--federation", xdsAddr, "--drain-timeout", "2s"})
	stop := startCmd(t, cmd)
	var line string
	waitfor.Cond(t, 10*time.Second, func() bool {
		r := healthprobe.Probe(context.Background(), "", addr, nil)
		line = r.Text
		return r.OK && r.Line.Fields["service_ports"] == "1"
	}, "gateway healthy with the federation's route (last line %q)", line)
	if err := stop(); err != nil {
		t.Fatal(err)
	}

	// Nothing at the federation's address: the gateway waits for its first table.
	adminAddr := freeAddr(t)
	cmd = newGatewayCmd()
	cmd.SetArgs([]string{"--cluster", "east", "--listen", addr, "--admin", adminAddr, "--federation", freeAddr(t)})
	stop = startCmd(t, cmd)
	// The admin endpoints are up while it waits: alive, not ready, and why.
	var body string
	waitfor.Cond(t, 10*time.Second, func() bool {
		r, err := http.Get("http://" + adminAddr + "/readyz")
		if err != nil {
			return false
		}
		defer r.Body.Close()
		b, _ := io.ReadAll(r.Body)
		body = string(b)
		return r.StatusCode == http.StatusServiceUnavailable && strings.Contains(body, "no route table yet")
	}, "/readyz says no route table yet (last %q)", body)
	if r, err := http.Get("http://" + adminAddr + "/metrics"); err != nil {
		t.Fatal(err)
	} else {
		b, _ := io.ReadAll(r.Body)
		r.Body.Close()
		if !strings.Contains(string(b), "meshfed_gateway_xds_connected 0") {
			t.Fatalf("metrics lack the xDS link:\n%s", b)
		}
	}
	if r := healthprobe.Probe(context.Background(), "", addr, nil); r.OK {
		t.Fatal("gateway listening without a route table")
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}

// The two commands together, as an operator runs them: `meshfed federation --exports F
// --xds-listen X` on an embedded etcd, and `meshfed gateway --federation X`. The gateway
// routes the file's export through TLS to the workload, follows a change of the file, and
// keeps routing when the federation command stops.
func TestGatewayWithFederationCommand(t *testing.T) {
	etcd := testetcd.Start(t)
	wl, err := harness.StartWorkload("east", "echo-0", "127.0.0.1:0", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(wl.Close)
	host, port, _ := net.SplitHostPort(wl.Addr)
	dir := t.TempDir()
	exports := filepath.Join(dir, "exports.yaml")
	write := func(extra string) {
		data := fmt.Sprintf("services:\n  - {name: echo, namespace: demo, ports: [{port: 8443, targetPort: %s}], endpoints: [{address: %s}]}\n%s", port, host, extra)
		if err := atomicfile.Write(exports, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("")
	xdsAddr, gwAddr := freeAddr(t), freeAddr(t)

	// The xDS link runs over mTLS, with SVIDs of a development CA: the federation's server
	// certificate is checked by SPIFFE ID, the gateway's client certificate by the CA.
	ca, err := devca.Init(filepath.Join(dir, "ca"), "east.test", devca.Options{})
	if err != nil {
		t.Fatal(err)
	}
	svid := func(id, name string) (string, string) {
		s, err := ca.Issue(devca.IssueRequest{ID: id})
		if err != nil {
			t.Fatal(err)
		}
		cert, key := filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem")
		if err := s.WriteFiles(cert, key); err != nil {
			t.Fatal(err)
		}
		return cert, key
	}
	fedCert, fedKey := svid("spiffe://east.test/meshfed/federation", "federation")
	gwCert, gwKey := svid("spiffe://east.test/meshfed/gateway", "gateway")
	caFile := filepath.Join(dir, "ca.pem")
	roots, err := ca.Roots()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: roots[0].Raw}), 0o644); err != nil {
		t.Fatal(err)
	}

	fed := newFederationCmd()
	fed.SetArgs([]string{"--cluster", "east", "--exports", exports, "--exports-poll-interval", "50ms", "--etcd-endpoints", strings.Join(etcd.Clients, ","),
		"--admin", "127.0.0.1:0", "--xds-listen", xdsAddr,
		"--xds-tls-cert", fedCert, "--xds-tls-key", fedKey, "--xds-tls-client-ca", caFile})
	stopFed := startCmd(t, fed)

	gw := newGatewayCmd()
	gw.SetArgs([]string{"--cluster", "east", "--listen", gwAddr, "--admin", "127.0.0.1:0", "--federation", xdsAddr, "--drain-timeout", "1s",
		"--federation-ca", caFile, "--federation-cert", gwCert, "--federation-key", gwKey, "--federation-server-name", "spiffe://east.test/meshfed/federation"})
	startCmd(t, gw)

	ports := func() string {
		r := healthprobe.Probe(context.Background(), "", gwAddr, nil)
		if !r.OK {
			return r.Err.Error()
		}
		return r.Line.Fields["service_ports"]
	}
	waitfor.Cond(t, 30*time.Second, func() bool { return ports() == "1" }, "gateway routes the federation's export (%s)", ports())
	callThrough := func() string {
		c, err := tls.Dial("tcp", gwAddr, &tls.Config{ServerName: names.ServiceSNI("demo", "echo", 8443), InsecureSkipVerify: true})
		if err != nil {
			return err.Error()
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		fmt.Fprintf(c, "hi\n")
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil {
			return err.Error()
		}
		return strings.TrimSpace(line)
	}
	if got := callThrough(); got != "east echo-0: hi" {
		t.Fatalf("call through the gateway: %q", got)
	}

	// The xDS listener refuses a client without a certificate, and plaintext.
	waitfor.Cond(t, 10*time.Second, func() bool {
		c, err := tls.Dial("tcp", xdsAddr, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"}})
		if err != nil {
			return false
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		_, err = c.Read(make([]byte, 1)) // TLS 1.3: the server's verdict on the client comes after the handshake
		return err != nil && strings.Contains(err.Error(), "certificate required")
	}, "the xDS listener requires a client certificate")
	pc, err := grpc.NewClient(xdsAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	pctx, pcancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer pcancel()
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(pc).StreamAggregatedResources(pctx)
	if err == nil {
		_, err = stream.Recv()
	}
	if err == nil {
		t.Fatal("a plaintext xDS client got an answer from the TLS listener")
	}

	write("  - {name: late, namespace: demo, ports: [{port: 7443, targetPort: " + port + "}], endpoints: [{address: " + host + "}]}\n")
	waitfor.Cond(t, 30*time.Second, func() bool { return ports() == "2" }, "a new export reaches the gateway (%s)", ports())

	if err := stopFed(); err != nil {
		t.Fatalf("federation: %v", err)
	}
	if got := callThrough(); got != "east echo-0: hi" || ports() != "2" {
		t.Fatalf("after the federation stopped: %q, %s service ports", got, ports())
	}
}
