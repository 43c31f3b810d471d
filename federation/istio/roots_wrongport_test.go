package istio

import (
	"crypto/tls"
	"net"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/meshfed/meshfed/internal/testpki"
	"github.com/meshfed/meshfed/internal/waitfor"
)

// TestRootsProbeWrongPort: a probe pointed at istiod's TLS xDS (15012) or at a closed port
// reports no roots and an error that says what is there and where istiod's plaintext xDS
// is; nothing looks like an answer.
func TestRootsProbeWrongPort(t *testing.T) {
	ca := testpki.New(t, testpki.Spec{CN: "istiod test CA", CA: true})
	leaf := ca.Issue(t, testpki.Spec{CN: "istiod", IPs: []net.IP{net.ParseIP("127.0.0.1")}})
	tlsLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{leaf.TLS()}})))
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(gs, &fakeIstiodPCDS{streams: map[chan struct{}]bool{}})
	go func() { _ = gs.Serve(tlsLn) }()
	t.Cleanup(gs.Stop)

	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := closed.Addr().String()
	closed.Close()

	for _, tt := range []struct{ name, addr, want string }{
		{"tls-port", tlsLn.Addr().String(), "is it istiod's TLS xDS port, 15012?"},
		{"closed-port", closedAddr, "nothing listens there"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s, _ := startServer(t, Options{IstiodXDS: tt.addr})
			c := dial(t, s.Addr())
			c.Send(&discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: "istiod-0"}, TypeUrl: TypeServiceEntry})
			waitfor.Cond(t, 10*time.Second, func() bool {
				r := rootsOf(s)
				return r != nil && r.Addr == tt.addr && strings.Contains(r.Error, tt.want) && len(r.Fingerprints) == 0 && r.Since.IsZero()
			}, "the probe's error says %q: %+v", tt.want, rootsOf(s))
		})
	}
}
