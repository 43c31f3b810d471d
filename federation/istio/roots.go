package istio

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"sort"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/structpb"
	meshconfig "istio.io/api/mesh/v1alpha1"

	"github.com/meshfed/meshfed/internal/ctxtime"
	"github.com/meshfed/meshfed/keyspace/records"
)

// TypePCDS is istiod's PCDS type URL (istio's pkg/model ProxyConfigType): with
// ISTIO_MULTIROOT_MESH=true istiod answers it with a ProxyConfig whose caCertificatesPem is
// its merged workload trust bundle, pushed to every subscribed proxy when that changes.
const TypePCDS = "type.googleapis.com/istio.mesh.v1alpha1.ProxyConfig"

// Roots is what one istiod gives its proxies over PCDS, as the server's probe of that
// istiod last received it (see Options.IstiodXDS).
type Roots struct {
	// Addr is the istiod xDS address probed.
	Addr string `json:"addr"`
	// Fingerprints are the roots' sha256 fingerprints ("sha256:<hex>", as trust.Fingerprint),
	// sorted.
	Fingerprints []string `json:"fingerprints"`
	// Since is when the probe first received exactly these roots (zero: nothing yet).
	Since time.Time `json:"since,omitzero"`
	// Error says why the probe has no live answer (the fingerprints are the last received).
	Error string `json:"error,omitempty"`
}

// probeAddr is where the roots probe of stream c dials: Options.IstiodXDS, with the stream's
// peer host when it is ":PORT" ("" when there is no probe).
func (s *Server) probeAddr(c *conn) string {
	a := s.opts.IstiodXDS
	if a == "" || !strings.HasPrefix(a, ":") {
		return a
	}
	host, _, err := net.SplitHostPort(c.peer)
	if err != nil {
		return ""
	}
	return net.JoinHostPort(host, a[1:])
}

// probeNode is the probe's node toward istiod: a sidecar of istio-system named
// meshfed-roots-probe (istiod parses the id as type~ip~pod.ns~ns.svc.<domain>), asking for
// PCDS as an agent with PROXY_CONFIG_XDS_AGENT does. It asks for nothing else, so istiod
// builds no listeners or clusters for it.
func probeNode() *corev3.Node {
	md, _ := structpb.NewStruct(map[string]any{
		"NAMESPACE":              "istio-system",
		"NAME":                   "meshfed-roots-probe",
		"ISTIO_VERSION":          "1.31.0",
		"PROXY_CONFIG_XDS_AGENT": "true",
		"LABELS":                 map[string]any{"app": "meshfed-roots-probe"},
	})
	return &corev3.Node{Id: "sidecar~127.0.0.1~meshfed-roots-probe.istio-system~istio-system.svc.cluster.local", Metadata: md}
}

// probeRoots follows the PCDS of the istiod on stream c until ctx ends (the stream's end),
// reconnecting with backoff, and records what it gets in c.roots.
func (s *Server) probeRoots(ctx context.Context, c *conn, addr string) {
	backoff := 200 * time.Millisecond
	for {
		start := time.Now()
		err := s.followPCDS(ctx, c, addr)
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			err = errors.New("stream ended")
		}
		s.setRoots(c, func(r *Roots) { r.Error = probeError(err) })
		if time.Since(start) > 10*time.Second {
			backoff = 200 * time.Millisecond
		}
		s.log.Debug("istiod roots probe: retrying", "addr", addr, "node", c.nodeID(), "err", err, "retry_in", backoff)
		if !ctxtime.Sleep(ctx, backoff) {
			return
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// noAnswerYet is Roots.Error until istiod's first PCDS answer: istiod answers PCDS only
// with ISTIO_MULTIROOT_MESH=true (pilot/pkg/xds/pcds.go: otherwise it sends nothing at all).
const noAnswerYet = "no PCDS answer yet (istiod answers PCDS only when it runs with ISTIO_MULTIROOT_MESH=true)"

// probeError is Roots.Error for a failed or ended probe stream (Roots.Addr names the
// address): the error, and what a wrong address usually is. istiod's plaintext xDS is its
// --grpcAddr (port 15010 in an Istio install); a probe that reaches istiod's TLS xDS
// (15012) instead fails with no HTTP/2 server preface.
func probeError(err error) string {
	msg := err.Error()
	switch {
	case strings.Contains(msg, "server preface"):
		return msg + " (no plaintext gRPC answers there: is it istiod's TLS xDS port, 15012? the probe speaks plaintext xDS only, istiod's --grpcAddr, 15010 in an Istio install)"
	case strings.Contains(msg, "connection refused"):
		return msg + " (nothing listens there: istiod's plaintext xDS is its --grpcAddr, 15010 in an Istio install)"
	}
	return msg
}

func (s *Server) followPCDS(ctx context.Context, c *conn, addr string) error {
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(16<<20)))
	if err != nil {
		return err
	}
	defer cc.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(cc).StreamAggregatedResources(ctx)
	if err != nil {
		return err
	}
	if err := stream.Send(&discoveryv3.DiscoveryRequest{Node: probeNode(), TypeUrl: TypePCDS}); err != nil {
		return err
	}
	for {
		resp, err := stream.Recv()
		if err != nil {
			return err
		}
		ack := &discoveryv3.DiscoveryRequest{TypeUrl: resp.GetTypeUrl(), VersionInfo: resp.GetVersionInfo(), ResponseNonce: resp.GetNonce()}
		if resp.GetTypeUrl() == TypePCDS {
			fps, perr := pcdsFingerprints(resp)
			if perr != nil {
				s.setRoots(c, func(r *Roots) { r.Error = "istiod's PCDS answer: " + perr.Error() })
				ack.ErrorDetail = statusProto(perr)
			} else {
				s.setRoots(c, func(r *Roots) {
					if r.Since.IsZero() || strings.Join(r.Fingerprints, ",") != strings.Join(fps, ",") {
						r.Fingerprints, r.Since = fps, time.Now()
					}
					r.Error = ""
				})
			}
		}
		if err := stream.Send(ack); err != nil {
			return err
		}
	}
}

// pcdsFingerprints reads the roots of a PCDS answer (one ProxyConfig; none: no roots).
func pcdsFingerprints(resp *discoveryv3.DiscoveryResponse) ([]string, error) {
	fps := []string{}
	for _, a := range resp.GetResources() {
		pc := &meshconfig.ProxyConfig{}
		if err := a.UnmarshalTo(pc); err != nil {
			return nil, fmt.Errorf("not a ProxyConfig: %w", err)
		}
		for i, p := range pc.GetCaCertificatesPem() {
			rest := []byte(p)
			n := 0
			for {
				var b *pem.Block
				b, rest = pem.Decode(rest)
				if b == nil {
					break
				}
				if b.Type != "CERTIFICATE" {
					continue
				}
				if _, err := x509.ParseCertificate(b.Bytes); err != nil {
					return nil, fmt.Errorf("caCertificatesPem[%d]: %w", i, err)
				}
				fps = append(fps, records.Fingerprint(b.Bytes))
				n++
			}
			if n == 0 {
				return nil, fmt.Errorf("caCertificatesPem[%d]: no PEM certificate", i)
			}
		}
	}
	sort.Strings(fps)
	return dedupe(fps), nil
}

func dedupe(sorted []string) []string {
	out := sorted[:0]
	for i, v := range sorted {
		if i == 0 || v != sorted[i-1] {
			out = append(out, v)
		}
	}
	return out
}

// setRoots changes c's roots and wakes the status waiters.
func (s *Server) setRoots(c *conn, fn func(*Roots)) {
	c.mu.Lock()
	if c.roots == nil {
		c.roots = &Roots{Fingerprints: []string{}}
	}
	fn(c.roots)
	c.mu.Unlock()
	s.statusChanged()
}

// startRootsProbe starts following the PCDS of the istiod on stream c (not a relay: a relay
// probes its own istiods and reports their roots), when Options.IstiodXDS is set.
func (s *Server) startRootsProbe(c *conn) {
	addr := s.probeAddr(c)
	if addr == "" {
		return
	}
	s.setRoots(c, func(r *Roots) { r.Addr, r.Error = addr, noAnswerYet })
	go s.probeRoots(c.ctx, c, addr)
}
