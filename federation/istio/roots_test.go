package istio

import (
	"context"
	"crypto/x509"
	"net"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/anypb"
	meshconfig "istio.io/api/mesh/v1alpha1"

	"github.com/meshfed/meshfed/internal/waitfor"
	"github.com/meshfed/meshfed/keyspace/records"
)

// TestMCPAckTracking: what the server records per istiod stream and type — an ACK of the
// version sent moves ackedVersion; a NACK keeps the version last ACKed and records the error;
// an answer to an old nonce changes nothing.
func TestMCPAckTracking(t *testing.T) {
	type step struct {
		nack       bool
		staleNonce bool
	}
	tests := []struct {
		name      string
		steps     []step // each after a new state is pushed (v1, v2, ...)
		wantAcked int    // index of the state version ACKed at the end (-1: none)
		wantNACK  bool
	}{
		{"ack", []step{{}}, 0, false},
		{"ack then ack", []step{{}, {}}, 1, false},
		{"ack then nack keeps the old", []step{{}, {nack: true}}, 0, true},
		{"nack first: nothing acked", []step{{nack: true}}, -1, true},
		{"nack then ack clears the nack", []step{{}, {nack: true}, {}}, 2, false},
		{"stale nonce ignored", []step{{}, {staleNonce: true}}, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, _ := startServer(t, Options{})
			c := dial(t, s.Addr())
			c.Send(&discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: "istiod-0"}, TypeUrl: TypeServiceEntry})
			var versions []string
			oldNonce := ""
			for i, st := range tt.steps {
				s.SetState(seState(t, strings.Repeat("a", i+1)))
				r := c.Next(10 * time.Second)
				versions = append(versions, r.GetVersionInfo())
				req := &discoveryv3.DiscoveryRequest{TypeUrl: TypeServiceEntry, VersionInfo: r.GetVersionInfo(), ResponseNonce: r.GetNonce()}
				if st.nack {
					req.VersionInfo = ""
					if i > 0 {
						req.VersionInfo = versions[i-1] // what istiod keeps
					}
					req.ErrorDetail = &statuspb.Status{Code: 3, Message: "bad"}
				}
				if st.staleNonce {
					req.ResponseNonce = oldNonce
				}
				oldNonce = r.GetNonce()
				c.Send(req)
				if !st.staleNonce {
					// The next state only once this answer is processed: an answer to a
					// nonce older than the last push is stale (ADS), and ignored.
					waitfor.Cond(t, 10*time.Second, func() bool {
						ts := seStatus(s)
						return ts != nil && (ts.NACK != "") == st.nack && (st.nack || ts.AckedVersion == versions[i])
					}, "step %d processed", i)
				}
			}
			want := ""
			if tt.wantAcked >= 0 {
				want = versions[tt.wantAcked]
			}
			// A request after the last answer: once it is processed, so is the answer.
			c.Send(&discoveryv3.DiscoveryRequest{TypeUrl: TypeGateway})
			waitfor.Cond(t, 10*time.Second, func() bool {
				for _, cs := range s.Status() {
					return len(cs.Types) == 2
				}
				return false
			}, "the last request processed")
			ts := seStatus(s)
			if ts.AckedVersion != want || (ts.NACK != "") != tt.wantNACK || ts.SentVersion != versions[len(versions)-1] {
				t.Fatalf("got acked %q nack %q sent %q; want acked %q nack %v sent %q", ts.AckedVersion, ts.NACK, ts.SentVersion, want, tt.wantNACK, versions[len(versions)-1])
			}
		})
	}
}

func seStatus(s *Server) *TypeStatus {
	for _, cs := range s.Status() {
		for _, ts := range cs.Types {
			if ts.Type == TypeServiceEntry {
				return &ts
			}
		}
	}
	return nil
}

// fakeIstiodPCDS is istiod's PCDS side: it answers the first PCDS request, and every Push,
// with a ProxyConfig holding the roots (nil roots: a resource that is not a ProxyConfig).
type fakeIstiodPCDS struct {
	discoveryv3.UnimplementedAggregatedDiscoveryServiceServer
	mu      sync.Mutex
	roots   []string
	bad     bool
	streams map[chan struct{}]bool
	acks    []*discoveryv3.DiscoveryRequest
	gs      *grpc.Server
	addr    string
}

func startFakeIstiod(t *testing.T, roots ...*x509.Certificate) *fakeIstiodPCDS {
	f := &fakeIstiodPCDS{streams: map[chan struct{}]bool{}}
	f.setRoots(roots...)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f.addr = ln.Addr().String()
	f.gs = grpc.NewServer()
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(f.gs, f)
	go func() { _ = f.gs.Serve(ln) }()
	t.Cleanup(f.gs.Stop)
	return f
}

func (f *fakeIstiodPCDS) setRoots(roots ...*x509.Certificate) {
	f.mu.Lock()
	f.roots, f.bad = nil, false
	for _, r := range roots {
		f.roots = append(f.roots, pemOf(r))
	}
	f.mu.Unlock()
}

// Push sends the current roots on every stream.
func (f *fakeIstiodPCDS) Push() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for ch := range f.streams {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

func (f *fakeIstiodPCDS) StreamAggregatedResources(st discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesServer) error {
	req, err := st.Recv()
	if err != nil || req.GetTypeUrl() != TypePCDS || req.GetNode().GetId() == "" {
		return err
	}
	push := make(chan struct{}, 1)
	push <- struct{}{}
	f.mu.Lock()
	f.streams[push] = true
	f.mu.Unlock()
	defer func() { f.mu.Lock(); delete(f.streams, push); f.mu.Unlock() }()
	go func() {
		for {
			r, err := st.Recv()
			if err != nil {
				return
			}
			f.mu.Lock()
			f.acks = append(f.acks, r)
			f.mu.Unlock()
		}
	}()
	n := 0
	for {
		select {
		case <-st.Context().Done():
			return nil
		case <-push:
		}
		n++
		f.mu.Lock()
		var res *anypb.Any
		if f.bad {
			res, _ = anypb.New(&corev3.Node{Id: "not a ProxyConfig"})
		} else {
			res, _ = anypb.New(&meshconfig.ProxyConfig{CaCertificatesPem: append([]string(nil), f.roots...)})
		}
		f.mu.Unlock()
		if err := st.Send(&discoveryv3.DiscoveryResponse{TypeUrl: TypePCDS, VersionInfo: time.Now().String(), Nonce: string(rune('a' + n)), Resources: []*anypb.Any{res}}); err != nil {
			return err
		}
	}
}

func rootsOf(s *Server) *Roots {
	for _, cs := range s.Status() {
		if cs.Roots != nil {
			return cs.Roots
		}
	}
	return nil
}

func fps(certs ...*x509.Certificate) string {
	var out []string
	for _, c := range certs {
		out = append(out, records.Fingerprint(c.Raw))
	}
	sort.Strings(out)
	return strings.Join(dedupe(out), ",")
}

// TestRootsProbe: the server follows each connected istiod's PCDS at IstiodXDS (":PORT" =
// the stream's peer host) and reports the roots it gives its proxies; a change of roots
// moves Since; an answer that does not decode is NACKed and keeps the last good roots with
// the error; an istiod whose xDS is gone keeps its last roots with the error; no probe
// without IstiodXDS.
func TestRootsProbe(t *testing.T) {
	a, b := testRoot(t, "root-a"), testRoot(t, "root-b")
	fake := startFakeIstiod(t, a)
	_, port, _ := net.SplitHostPort(fake.addr)
	s, _ := startServer(t, Options{IstiodXDS: ":" + port})
	c := dial(t, s.Addr())
	c.Send(&discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: "istiod-0"}, TypeUrl: TypeServiceEntry})

	waitfor.Cond(t, 10*time.Second, func() bool {
		r := rootsOf(s)
		return r != nil && r.Error == "" && strings.Join(r.Fingerprints, ",") == fps(a) && r.Addr == fake.addr
	}, "istiod's roots (a) reported: %+v", rootsOf(s))
	since := rootsOf(s).Since

	fake.setRoots(a, b)
	fake.Push()
	waitfor.Cond(t, 10*time.Second, func() bool {
		r := rootsOf(s)
		return strings.Join(r.Fingerprints, ",") == fps(a, b) && r.Since.After(since)
	}, "istiod's roots (a, b) reported with a later since: %+v", rootsOf(s))
	since = rootsOf(s).Since

	// The same roots again: since stays.
	fake.Push()
	fake.mu.Lock()
	fake.bad = true
	fake.mu.Unlock()
	fake.Push()
	waitfor.Cond(t, 10*time.Second, func() bool {
		r := rootsOf(s)
		return strings.Contains(r.Error, "not a ProxyConfig") && strings.Join(r.Fingerprints, ",") == fps(a, b) && r.Since.Equal(since)
	}, "a bad answer keeps the last roots, with the error: %+v", rootsOf(s))
	waitfor.Cond(t, 10*time.Second, func() bool {
		fake.mu.Lock()
		defer fake.mu.Unlock()
		for _, r := range fake.acks {
			if r.GetErrorDetail() != nil {
				return true
			}
		}
		return false
	}, "the probe NACKs the bad answer")

	fake.gs.Stop()
	waitfor.Cond(t, 10*time.Second, func() bool {
		r := rootsOf(s)
		return r.Addr == fake.addr && r.Error != "" && r.Error != noAnswerYet && strings.Join(r.Fingerprints, ",") == fps(a, b)
	}, "an unreachable istiod keeps its last roots, with the error: %+v", rootsOf(s))

	// Without IstiodXDS: no probe, no roots.
	s2, _ := startServer(t, Options{})
	c2 := dial(t, s2.Addr())
	c2.Send(&discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: "istiod-1"}, TypeUrl: TypeServiceEntry})
	waitfor.Cond(t, 10*time.Second, func() bool { return len(s2.Status()) == 1 && s2.Status()[0].Node == "istiod-1" }, "istiod-1 connected")
	if r := rootsOf(s2); r != nil {
		t.Fatalf("roots without a probe: %+v", r)
	}
}

// TestRelayReportsRoots: a `meshfed istio source` beside istiod follows its istiod's PCDS
// (IstiodXDS HOST:PORT) and reports the roots upstream; the federation does not probe the
// relay itself.
func TestRelayReportsRoots(t *testing.T) {
	a := testRoot(t, "root-a")
	fake := startFakeIstiod(t, a)
	up, _ := startServer(t, Options{IstiodXDS: ":1"}) // a probe of the relay would fail
	st := seState(t, "a")
	st.types[TypeWorkloadEntry] = &TypeState{Version: emptyVersion}
	st.types[TypeDestinationRule] = &TypeState{Version: emptyVersion}
	up.SetState(st)
	local, _ := startServer(t, Options{IstiodXDS: fake.addr})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = (&Relay{Upstream: up.Addr(), Node: "source-1", Local: local}).Run(ctx) }()
	waitState(t, local)
	ist := dial(t, local.Addr())
	ist.Send(&discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: "istiod-0"}, TypeUrl: TypeServiceEntry})
	waitfor.Cond(t, 10*time.Second, func() bool {
		rep := up.Report()
		return len(rep.Istiods) == 1 && rep.Istiods[0].Via == "source-1" && rep.Istiods[0].Roots != nil &&
			rep.Istiods[0].Roots.Error == "" && strings.Join(rep.Istiods[0].Roots.Fingerprints, ",") == fps(a)
	}, "the upstream's report carries the roots of the istiod behind the relay: %+v", up.Report())
	for _, cs := range up.Status() {
		if cs.Relay && cs.Roots != nil {
			t.Fatalf("the federation probed the relay: %+v", cs.Roots)
		}
	}
}
