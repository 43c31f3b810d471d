package istio

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/prometheus/client_golang/prometheus"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	mcp "istio.io/api/mcp/v1alpha1"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/meshfed/meshfed/internal/istiotest"
	"github.com/meshfed/meshfed/internal/metrictest"
	"github.com/meshfed/meshfed/internal/waitfor"
)

func startServer(t *testing.T, opts Options) (*Server, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	if opts.Listen == "" {
		opts.Listen = "127.0.0.1:0"
	}
	s, err := NewServer(nil, reg, opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return s, reg
}

type client = istiotest.MCPClient

func dial(t *testing.T, addr string) *client { return istiotest.DialMCP(t, addr) }

func seState(t *testing.T, hosts ...string) *State {
	t.Helper()
	var rs []*mcp.Resource
	for _, h := range hosts {
		r, err := resource("demo", NamePrefix+h, &networking.ServiceEntry{Hosts: []string{h + ".demo.svc.cluster.local"}}, nil)
		if err != nil {
			t.Fatal(err)
		}
		rs = append(rs, r)
	}
	st, err := NewState(map[string][]*mcp.Resource{TypeServiceEntry: rs})
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// TestServerAnswersEveryType: nothing before a state (istiod must not hear "empty"), then one
// full state per type — produced, known-but-empty and unknown alike — and afterwards only the
// types whose version changed; the same content has the same version.
func TestServerAnswersEveryType(t *testing.T) {
	s, reg := startServer(t, Options{})
	c := dial(t, s.Addr())
	types := append(append([]string(nil), KnownTypes...), "example.istio.io/v9/Future")
	for _, ty := range types {
		c.Send(&discoveryv3.DiscoveryRequest{TypeUrl: ty})
	}
	c.None(200 * time.Millisecond)
	if s.Ready() == nil {
		t.Fatal("ready without a state")
	}

	s.SetState(seState(t, "a", "b"))
	got := map[string]*discoveryv3.DiscoveryResponse{}
	for range types {
		r := c.Next(5 * time.Second)
		got[r.GetTypeUrl()] = r
		c.Send(&discoveryv3.DiscoveryRequest{TypeUrl: r.GetTypeUrl(), VersionInfo: r.GetVersionInfo(), ResponseNonce: r.GetNonce()})
	}
	for _, ty := range types {
		r := got[ty]
		if r == nil {
			t.Fatalf("no answer for %s", ty)
		}
		want := 0
		if ty == TypeServiceEntry {
			want = 2
		}
		if len(r.GetResources()) != want {
			t.Errorf("%s: %d resources, want %d", ty, len(r.GetResources()), want)
		}
	}
	if n := metrictest.Sum(t, reg, "meshfed_istio_mcp_unknown_types_total", "type", "example.istio.io/v9/Future"); n != 1 {
		t.Errorf("unknown type counted %v times, want 1", n)
	}
	seV := got[TypeServiceEntry].GetVersionInfo()

	// The same content again: nothing is pushed.
	s.SetState(seState(t, "b", "a"))
	c.None(200 * time.Millisecond)

	// One more service: only ServiceEntry moves.
	s.SetState(seState(t, "a", "b", "c"))
	r := c.Next(5 * time.Second)
	if r.GetTypeUrl() != TypeServiceEntry || len(r.GetResources()) != 3 || r.GetVersionInfo() == seV {
		t.Fatalf("got %s with %d resources version %s", r.GetTypeUrl(), len(r.GetResources()), r.GetVersionInfo())
	}
	c.None(200 * time.Millisecond)

	// A NACK is counted by type and reason and shown in status; nothing crashes, nothing is
	// resent until the state changes.
	c.Send(&discoveryv3.DiscoveryRequest{TypeUrl: r.GetTypeUrl(), VersionInfo: seV, ResponseNonce: r.GetNonce(),
		ErrorDetail: &statuspb.Status{Code: int32(codes.InvalidArgument), Message: "bad ServiceEntry"}})
	var st []ConnStatus
	if !waitfor.Poll(5*time.Second, func() bool { st = s.Status(); return len(st) == 1 && st[0].NACKs == 1 }) {
		t.Fatalf("status %+v", st)
	}
	if n := metrictest.Sum(t, reg, "meshfed_istio_mcp_nacks_total", "type", TypeServiceEntry, "reason", "InvalidArgument"); n != 1 {
		t.Errorf("nacks %v", n)
	}
	c.None(100 * time.Millisecond)
}

// TestServerStateFile: a restarted server serves the last state from disk before any plan,
// with the same versions.
func TestServerStateFile(t *testing.T) {
	file := filepath.Join(t.TempDir(), "istio-state.json")
	s1, _ := startServer(t, Options{StateFile: file})
	st := seState(t, "a")
	s1.SetState(st)

	s2, _ := startServer(t, Options{StateFile: file})
	if err := s2.Ready(); err != nil {
		t.Fatal(err)
	}
	c := dial(t, s2.Addr())
	c.Send(&discoveryv3.DiscoveryRequest{TypeUrl: TypeServiceEntry})
	r := c.Next(5 * time.Second)
	if len(r.GetResources()) != 1 || r.GetVersionInfo() != st.Type(TypeServiceEntry).Version {
		t.Fatalf("from disk: %d resources, version %s want %s", len(r.GetResources()), r.GetVersionInfo(), st.Type(TypeServiceEntry).Version)
	}
}

// TestRelayKeepsServing: the relay copies the upstream's state to its local server; with the
// upstream gone, a new relay process (new local server on the same state file) serves the
// last state at once.
func TestRelayKeepsServing(t *testing.T) {
	up, _ := startServer(t, Options{})
	full := func(hosts ...string) *State {
		st := seState(t, hosts...)
		st.types[TypeWorkloadEntry] = &TypeState{Version: emptyVersion}
		st.types[TypeDestinationRule] = &TypeState{Version: emptyVersion}
		return st
	}
	up.SetState(full("a", "b"))
	file := filepath.Join(t.TempDir(), "relay.json")

	upCtx, stopUp := context.WithCancel(context.Background())
	local1, _ := startServer(t, Options{StateFile: file})
	r := &Relay{Upstream: up.Addr(), Node: "relay-test", Local: local1}
	done := make(chan struct{})
	go func() { _ = r.Run(upCtx); close(done) }()
	waitfor.Cond(t, 10*time.Second, func() bool {
		return local1.State().Type(TypeServiceEntry).Version == up.State().Type(TypeServiceEntry).Version
	}, "relay did not copy the upstream state")
	up.SetState(full("a", "b", "c"))
	waitfor.Cond(t, 10*time.Second, func() bool { return len(local1.State().Type(TypeServiceEntry).Names) == 3 }, "relay did not follow")
	stopUp()
	<-done

	local2, _ := startServer(t, Options{StateFile: file})
	c := dial(t, local2.Addr())
	c.Send(&discoveryv3.DiscoveryRequest{TypeUrl: TypeServiceEntry})
	if resp := c.Next(5 * time.Second); len(resp.GetResources()) != 3 {
		t.Fatalf("restarted relay serves %d resources, want 3", len(resp.GetResources()))
	}
}

// TestTwoIstiodsSameState: two istiod replicas (two streams) get the same full state with the
// same versions, and both follow a change. TestIstiodReplicasSameState checks the same with
// two real istiods and their sidecars' EDS.
func TestTwoIstiodsSameState(t *testing.T) {
	s, _ := startServer(t, Options{})
	s.SetState(seState(t, "a"))
	a, b := dial(t, s.Addr()), dial(t, s.Addr())
	for _, c := range []*client{a, b} {
		c.Send(&discoveryv3.DiscoveryRequest{TypeUrl: TypeServiceEntry})
	}
	ra, rb := a.Next(5*time.Second), b.Next(5*time.Second)
	if ra.GetVersionInfo() != rb.GetVersionInfo() || len(ra.GetResources()) != 1 || len(rb.GetResources()) != 1 {
		t.Fatalf("replicas differ: %s/%d vs %s/%d", ra.GetVersionInfo(), len(ra.GetResources()), rb.GetVersionInfo(), len(rb.GetResources()))
	}
	for _, p := range []struct {
		c *client
		r *discoveryv3.DiscoveryResponse
	}{{a, ra}, {b, rb}} {
		p.c.Send(&discoveryv3.DiscoveryRequest{TypeUrl: TypeServiceEntry, VersionInfo: p.r.GetVersionInfo(), ResponseNonce: p.r.GetNonce()})
	}
	s.SetState(seState(t, "a", "b"))
	ra, rb = a.Next(5*time.Second), b.Next(5*time.Second)
	if ra.GetVersionInfo() != rb.GetVersionInfo() || len(ra.GetResources()) != 2 || len(rb.GetResources()) != 2 {
		t.Fatalf("after a change replicas differ: %s/%d vs %s/%d", ra.GetVersionInfo(), len(ra.GetResources()), rb.GetVersionInfo(), len(rb.GetResources()))
	}
	waitfor.Cond(t, 5*time.Second, func() bool { return len(s.Status()) == 2 }, "two istiods in status")
}

// TestRelayReportsIstiods: an istiod behind a relay (`meshfed istio source`) is in the
// upstream's Report with Via = the relay, with its ACK state, then its NACK (counted by
// type and reason, logged once however often it repeats), and the unknown type it asked
// for; a bogus error code or a flood of type URLs keeps the labels bounded.
func TestRelayReportsIstiods(t *testing.T) {
	up, _ := startServer(t, Options{})
	st := seState(t, "a")
	st.types[TypeWorkloadEntry] = &TypeState{Version: emptyVersion}
	st.types[TypeDestinationRule] = &TypeState{Version: emptyVersion}
	up.SetState(st)
	var logs syncBuffer
	reg := prometheus.NewRegistry()
	local, err := NewServer(slog.New(slog.NewTextHandler(&logs, nil)), reg, Options{Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = local.Run(ctx) }()
	waitfor.Cond(t, 5*time.Second, func() bool { return local.Addr() != "" }, "local listens")
	go func() { _ = (&Relay{Upstream: up.Addr(), Node: "source-1", Local: local}).Run(ctx) }()
	waitState(t, local)

	ist := dial(t, local.Addr())
	ist.Send(&discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: "istiod-0"}, TypeUrl: TypeServiceEntry})
	ist.Send(&discoveryv3.DiscoveryRequest{TypeUrl: "example.istio.io/v9/Future"})
	for range 2 {
		r := ist.Next(5 * time.Second)
		ist.Send(&discoveryv3.DiscoveryRequest{TypeUrl: r.GetTypeUrl(), VersionInfo: r.GetVersionInfo(), ResponseNonce: r.GetNonce()})
	}
	var rep *Report
	waitfor.Cond(t, 10*time.Second, func() bool {
		rep = up.Report()
		return len(rep.Istiods) == 1 && rep.Istiods[0].Synced && len(rep.UnknownTypes) == 1
	}, "the upstream's report names the istiod behind the relay, synced, and its unknown type")
	if i := rep.Istiods[0]; i.Node != "istiod-0" || i.Via != "source-1" || i.LastPush.IsZero() || i.LastAck.IsZero() {
		t.Fatalf("istiod in the upstream's report: %+v", i)
	}
	if fmt.Sprint(rep.Sources) != "[source-1]" || rep.UnknownTypes[0] != "example.istio.io/v9/Future" {
		t.Fatalf("report %+v", rep)
	}

	// The upstream changes; istiod NACKs the new ServiceEntry state, twice.
	st2 := seState(t, "a", "b")
	st2.types[TypeWorkloadEntry] = &TypeState{Version: emptyVersion}
	st2.types[TypeDestinationRule] = &TypeState{Version: emptyVersion}
	up.SetState(st2)
	r := ist.Next(5 * time.Second)
	for range 2 {
		ist.Send(&discoveryv3.DiscoveryRequest{TypeUrl: r.GetTypeUrl(), ResponseNonce: r.GetNonce(),
			ErrorDetail: &statuspb.Status{Code: int32(codes.InvalidArgument), Message: "bad ServiceEntry"}})
	}
	// A bogus code and a type nobody asked for: bounded labels.
	ist.Send(&discoveryv3.DiscoveryRequest{TypeUrl: "x/y/Z", ResponseNonce: "n", ErrorDetail: &statuspb.Status{Code: 999, Message: "?"}})
	waitfor.Cond(t, 10*time.Second, func() bool {
		rep = up.Report()
		return len(rep.Istiods) == 1 && len(rep.Istiods[0].Types) > 0 && !rep.Istiods[0].Synced && len(rep.NACKs) == 1 && rep.NACKs[0].Count == 2
	}, "the NACK reaches the upstream's report")
	if n := rep.NACKs[0]; n.Type != TypeServiceEntry || n.Reason != "InvalidArgument" {
		t.Fatalf("nack count %+v", n)
	}
	nacked := ""
	for _, ty := range rep.Istiods[0].Types {
		if ty.NACK != "" {
			nacked = ty.Type + ": " + ty.NACK
		}
	}
	if nacked != TypeServiceEntry+": bad ServiceEntry" {
		t.Fatalf("NACKed type in the report: %q", nacked)
	}
	if n := metrictest.Sum(t, reg, "meshfed_istio_mcp_nacks_total", "type", TypeServiceEntry, "reason", "InvalidArgument"); n != 2 {
		t.Errorf("nacks counted %v, want 2", n)
	}
	if n := strings.Count(logs.String(), "rejected (NACK)"); n != 1 {
		t.Errorf("the NACK was logged %d times, want once:\n%s", n, logs.String())
	}
	// The bogus one did not crash anything and did not become a label of its own.
	for i := range maxUnknownTypes + 5 {
		ist.Send(&discoveryv3.DiscoveryRequest{TypeUrl: fmt.Sprintf("flood.example/v1/T%d", i)})
	}
	waitfor.Cond(t, 10*time.Second, func() bool { return len(local.Report().UnknownTypes) == maxUnknownTypes+1 }, "unknown types bounded")
	// The log line follows the report's update: wait for it, then for nothing more.
	waitfor.Cond(t, 10*time.Second, func() bool { return strings.Count(logs.String(), "does not know") >= maxUnknownTypes+1 }, "unknown types logged")
	ist.Send(&discoveryv3.DiscoveryRequest{TypeUrl: "flood.example/v1/last"})
	waitfor.Cond(t, 10*time.Second, func() bool {
		for _, cs := range local.Status() {
			for _, ty := range cs.Types {
				if ty.Type == "flood.example/v1/last" {
					return true
				}
			}
		}
		return false
	}, "the last request processed")
	if n := strings.Count(logs.String(), "does not know"); n != maxUnknownTypes+1 {
		t.Errorf("unknown types logged %d times, want %d (each once, then one for the rest)", n, maxUnknownTypes+1)
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
