package health

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/meshfed/meshfed/api/healthwire"
	"github.com/meshfed/meshfed/internal/healthprobe"
	"github.com/meshfed/meshfed/internal/testpki"
	"github.com/meshfed/meshfed/internal/waitfor"
)

// Modes of the test gateway: each is a real TCP behaviour.
const (
	modeOK        = "ok"
	modeRST       = "rst"       // accept, then close with SO_LINGER 0: the client sees a reset
	modeBlackhole = "blackhole" // accept and never answer: the TLS handshake never completes
	modeDraining  = "draining"  // answer "draining ..."
	modeWrong     = "wrong"     // answer as another cluster
	modeSlow      = "slow"      // stream mode: answer each ping late (fakeGateway.slow)
)

// fakeGateway answers the health name like the real gateway (TLS with its own certificate,
// one status line). It is not the eastwest gateway because this package's tests need to
// switch the wire behaviour at will (RST, blackhole) without the data plane; the xDS end-to-
// end test uses the real gateway.
type fakeGateway struct {
	t       testing.TB
	cluster string
	cert    tls.Certificate
	mode    atomic.Value
	// stream: offer the stream mode (api/healthwire), as gateways since v2 do.
	stream bool
	slow   time.Duration
	ln     net.Listener
	addr   string
	mu     sync.Mutex
	held   []net.Conn
	wg     sync.WaitGroup
}

func newFakeGateway(t testing.TB, cluster string) *fakeGateway {
	return newGateway(t, cluster, false, 0)
}

// newStreamGateway offers the stream mode; in modeSlow it answers slow late.
func newStreamGateway(t testing.TB, cluster string, slow time.Duration) *fakeGateway {
	return newGateway(t, cluster, true, slow)
}

func newGateway(t testing.TB, cluster string, stream bool, slow time.Duration) *fakeGateway {
	t.Helper()
	g := &fakeGateway{t: t, cluster: cluster, cert: testpki.New(t, testpki.Spec{CN: "health.meshfed.internal", DNS: []string{"health.meshfed.internal"},
		CA: true, EKU: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}).TLS(), stream: stream, slow: slow}
	g.mode.Store(modeOK)
	g.listen("127.0.0.1:0")
	t.Cleanup(g.close)
	return g
}

func (g *fakeGateway) listen(addr string) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		g.t.Fatalf("listen %s: %v", addr, err)
	}
	g.mu.Lock()
	g.ln, g.addr = ln, ln.Addr().String()
	g.mu.Unlock()
	g.wg.Add(1)
	go g.serve(ln)
}

func (g *fakeGateway) serve(ln net.Listener) {
	defer g.wg.Done()
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		switch g.mode.Load().(string) {
		case modeRST:
			_ = c.(*net.TCPConn).SetLinger(0)
			_ = c.Close()
		case modeBlackhole:
			g.mu.Lock()
			g.held = append(g.held, c)
			g.mu.Unlock()
		default:
			g.wg.Add(1)
			go func() {
				defer g.wg.Done()
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(5 * time.Second))
				cfg := &tls.Config{Certificates: []tls.Certificate{g.cert}}
				if g.stream {
					cfg.NextProtos = []string{healthwire.StreamALPN}
				}
				tc := tls.Server(c, cfg)
				if tc.Handshake() != nil {
					return
				}
				if tc.ConnectionState().NegotiatedProtocol == healthwire.StreamALPN {
					g.serveStream(c, tc)
					return
				}
				_, _ = tc.Write([]byte(g.line()))
				_ = tc.CloseWrite()
			}()
		}
	}
}

func (g *fakeGateway) line() string {
	switch g.mode.Load().(string) {
	case modeDraining:
		return "draining cluster=" + g.cluster + "\n"
	case modeWrong:
		return "ok cluster=someone-else\n"
	}
	return "ok cluster=" + g.cluster + " service_ports=1 ready_endpoints=2\n"
}

// serveStream answers pings as the gateway's stream mode does, with the mode in force at
// each ping: blackhole answers nothing, rst resets the connection, slow answers late.
func (g *fakeGateway) serveStream(c net.Conn, tc *tls.Conn) {
	br := bufio.NewReader(tc)
	for {
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		if healthwire.ReadPing(br) != nil {
			return
		}
		switch g.mode.Load().(string) {
		case modeBlackhole:
			continue
		case modeRST:
			_ = c.(*net.TCPConn).SetLinger(0)
			_ = c.Close()
			return
		case modeSlow:
			time.Sleep(g.slow) // the fake's behaviour: an answer that late
		}
		if _, err := tc.Write([]byte(g.line())); err != nil {
			return
		}
		if g.mode.Load().(string) == modeDraining {
			return
		}
	}
}

// stop closes the listener: connections are refused.
func (g *fakeGateway) stop() {
	g.mu.Lock()
	ln := g.ln
	g.mu.Unlock()
	_ = ln.Close()
}

// restart listens again on the same address.
func (g *fakeGateway) restart() { g.listen(g.addr) }

func (g *fakeGateway) close() {
	g.stop()
	g.mu.Lock()
	for _, c := range g.held {
		_ = c.Close()
	}
	g.held = nil
	g.mu.Unlock()
	g.wg.Wait()
}

// fast options keep the suite quick; the hysteresis counts are the production ones.
func fastOptions() Options {
	return Options{Interval: 150 * time.Millisecond, Timeout: 120 * time.Millisecond}
}

func startChecker(t *testing.T, opts Options) (*Checker, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	c, err := New(opts, nil, reg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = c.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return c, reg
}

func waitState(t *testing.T, c *Checker, cluster, addr string, want State) {
	t.Helper()
	waitfor.Cond(t, 5*time.Second, func() bool { return c.State(cluster, addr) == want },
		"%s %s: want %v, have %v", cluster, addr, want, c.State(cluster, addr))
}

func TestProbeOutcomes(t *testing.T) {
	g := newFakeGateway(t, "west")
	ctx := context.Background()
	probe := func(timeout time.Duration) healthprobe.Outcome {
		pctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		return healthprobe.Probe(pctx, "west", g.addr, nil)
	}
	cases := []struct {
		mode       string
		ok, hard   bool
		result     string
		wantInLine string
	}{
		{modeOK, true, false, healthprobe.ResultOK, "ok"},
		{modeRST, false, true, healthprobe.ResultReset, ""},
		{modeBlackhole, false, false, healthprobe.ResultTimeout, ""},
		{modeDraining, false, true, healthprobe.ResultStatus, "draining"},
		{modeWrong, false, true, healthprobe.ResultWrongCluster, "ok"},
	}
	for _, tc := range cases {
		t.Run(tc.mode, func(t *testing.T) {
			g.mode.Store(tc.mode)
			timeout := 5 * time.Second // generous: -race on 2 busy cores is slow
			if tc.mode == modeBlackhole {
				timeout = 300 * time.Millisecond
			}
			out := probe(timeout)
			if out.OK != tc.ok || out.Hard != tc.hard || out.Result != tc.result {
				t.Fatalf("mode %s: got ok=%v hard=%v result=%s err=%v; want ok=%v hard=%v result=%s",
					tc.mode, out.OK, out.Hard, out.Result, out.Err, tc.ok, tc.hard, tc.result)
			}
			if out.Line.Word != tc.wantInLine {
				t.Fatalf("line word %q, want %q", out.Line.Word, tc.wantInLine)
			}
		})
	}
	t.Run("refused", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		pctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		defer cancel()
		out := healthprobe.Probe(pctx, "west", addr, nil)
		if out.OK || !out.Hard || out.Result != healthprobe.ResultRefused {
			t.Fatalf("closed port: %+v", out)
		}
	})
}

func TestProbeRoots(t *testing.T) {
	g := newFakeGateway(t, "west")
	right := x509.NewCertPool()
	right.AddCert(g.cert.Leaf)
	wrong := x509.NewCertPool()
	wrong.AddCert(testpki.New(t, testpki.Spec{CN: "other", DNS: []string{"other"}, CA: true}).Cert)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if out := healthprobe.Probe(ctx, "west", g.addr, right); !out.OK {
		t.Fatalf("with the gateway's root: %+v", out)
	}
	out := healthprobe.Probe(ctx, "west", g.addr, wrong)
	if out.OK || out.Hard || out.Result != healthprobe.ResultTLS {
		t.Fatalf("with a foreign root: want a soft tls failure, got %+v", out)
	}
}

// TestHysteresis walks one address through every transition with real TCP behaviours.
func TestHysteresis(t *testing.T) {
	g := newFakeGateway(t, "west")
	c, reg := startChecker(t, fastOptions())
	changes := c.Subscribe()
	c.SetTargets(map[string][]string{"west": {g.addr}})
	waitState(t, c, "west", g.addr, Up)
	<-changes

	// Blackhole: soft failures, down only after FallThreshold of them.
	g.mode.Store(modeBlackhole)
	waitState(t, c, "west", g.addr, Down)
	if n := testutil.ToFloat64(c.m.checks.WithLabelValues("west", healthprobe.ResultTimeout)); n < 3 {
		t.Fatalf("down after %v timeouts, want at least 3", n)
	}

	// Back to healthy: up after RiseThreshold successes.
	g.mode.Store(modeOK)
	waitState(t, c, "west", g.addr, Up)

	// RST: hard-down on the first reset.
	before := testutil.ToFloat64(c.m.checks.WithLabelValues("west", healthprobe.ResultReset))
	g.mode.Store(modeRST)
	waitState(t, c, "west", g.addr, HardDown)
	if n := testutil.ToFloat64(c.m.checks.WithLabelValues("west", healthprobe.ResultReset)) - before; n != 1 {
		t.Fatalf("hard-down after %v resets, want exactly 1", n)
	}
	g.mode.Store(modeOK)
	waitState(t, c, "west", g.addr, Up)

	// Refused: hard-down on the first refusal; restore on the same port.
	g.stop()
	waitState(t, c, "west", g.addr, HardDown)
	g.restart()
	waitState(t, c, "west", g.addr, Up)

	// Draining: the gateway says so: hard-down at once.
	g.mode.Store(modeDraining)
	waitState(t, c, "west", g.addr, HardDown)
	g.mode.Store(modeOK)
	waitState(t, c, "west", g.addr, Up)

	if got := testutil.ToFloat64(c.m.state.WithLabelValues("west", g.addr)); got != float64(Up) {
		t.Fatalf("state gauge %v, want %v", got, float64(Up))
	}
	if n, err := testutil.GatherAndCount(reg, "meshfed_health_transitions_total"); err != nil || n == 0 {
		t.Fatalf("transitions metric: n=%d err=%v", n, err)
	}
	st := c.Statuses()
	if len(st) != 1 || st[0].State != Up || st[0].LastLine != "ok" {
		t.Fatalf("statuses: %+v", st)
	}
}

// TestUpNeedsRiseThreshold checks that one good answer between failures does not bring a
// down address back: the rise needs RiseThreshold successes in a row.
func TestUpNeedsRiseThreshold(t *testing.T) {
	c, err := New(Options{}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	k := Target{"west", "127.0.0.1:1"}
	c.SetTargets(map[string][]string{"west": {k.Addr}})
	now := time.Now()
	ok := healthprobe.Outcome{OK: true, Result: healthprobe.ResultOK}
	soft := healthprobe.Outcome{Result: healthprobe.ResultTimeout, Err: errTest}
	hard := healthprobe.Outcome{Hard: true, Result: healthprobe.ResultReset, Err: errTest}
	steps := []struct {
		out  healthprobe.Outcome
		want State
	}{
		{ok, Up},         // first result decides
		{soft, Up},       // 1 failure
		{soft, Up},       // 2
		{ok, Up},         // resets the count
		{soft, Up},       // 1
		{soft, Up},       // 2
		{soft, Down},     // 3: down
		{ok, Down},       // 1 success
		{soft, Down},     // resets the rise
		{ok, Down},       // 1
		{ok, Up},         // 2: up
		{hard, HardDown}, // at once
		{soft, HardDown},
		{ok, HardDown},
		{ok, Up},
	}
	for i, s := range steps {
		fast := c.apply(k, s.out, now)
		got := c.State(k.Cluster, k.Addr)
		if got != s.want {
			t.Fatalf("step %d (%s): state %v, want %v", i, s.out.Result, got, s.want)
		}
		// Between states (failing while usable, passing while not) the next check comes
		// after FastInterval.
		wantFast := (got.Usable() && !s.out.OK) || (!got.Usable() && s.out.OK)
		if fast != wantFast {
			t.Fatalf("step %d (%s, now %v): fast=%v, want %v", i, s.out.Result, got, fast, wantFast)
		}
	}
	// An unknown address falls like an up one (FallThreshold soft failures), and goes
	// hard-down at once.
	k2 := Target{"north", "127.0.0.1:2"}
	k3 := Target{"south", "127.0.0.1:3"}
	c.SetTargets(map[string][]string{"north": {k2.Addr}, "south": {k3.Addr}})
	for i, want := range []State{Unknown, Unknown, Down} {
		c.apply(k2, soft, now)
		if got := c.State(k2.Cluster, k2.Addr); got != want {
			t.Fatalf("unknown address, soft failure %d: %v, want %v", i+1, got, want)
		}
	}
	c.apply(k3, hard, now)
	if got := c.State(k3.Cluster, k3.Addr); got != HardDown {
		t.Fatalf("unknown address, reset: %v, want hard-down", got)
	}
	if c.State("west", k.Addr) != Unknown {
		t.Fatal("a target removed by SetTargets must be forgotten")
	}
}

type testErr string

func (e testErr) Error() string { return string(e) }

const errTest = testErr("test failure")

func TestTargetsFollowSetTargets(t *testing.T) {
	a := newFakeGateway(t, "west")
	b := newFakeGateway(t, "north")
	c, _ := startChecker(t, fastOptions())
	c.SetTargets(map[string][]string{"west": {a.addr}, "north": {b.addr}})
	waitState(t, c, "west", a.addr, Up)
	waitState(t, c, "north", b.addr, Up)
	c.SetTargets(map[string][]string{"north": {b.addr}})
	if c.State("west", a.addr) != Unknown || len(c.Statuses()) != 1 {
		t.Fatalf("west not forgotten: %+v", c.Statuses())
	}
}

func TestOptionsValidation(t *testing.T) {
	for _, o := range []Options{
		{Interval: time.Millisecond},
		{Interval: time.Second, Timeout: 2 * time.Second},
		{FallThreshold: -1},
		{Interval: time.Second, FastInterval: 2 * time.Second},
	} {
		if _, err := New(o, nil, nil); err == nil {
			t.Errorf("%+v accepted", o)
		} else if !strings.Contains(err.Error(), "default") {
			t.Errorf("%+v: message %q does not give the default", o, err)
		}
	}
}

// streamOptions: a ping every 20ms, down after 300ms unanswered.
func streamOptions() Options {
	o := fastOptions()
	o.PingInterval, o.DownAfter = 20*time.Millisecond, 300*time.Millisecond
	return o
}

// TestStream walks a streaming gateway through every transition: one connection carries
// the checks; an unanswered ping marks it down after DownAfter, not before; answers that
// come late but within DownAfter keep it up; a reset or a draining answer is hard-down at
// once.
func TestStream(t *testing.T) {
	g := newStreamGateway(t, "west", 100*time.Millisecond)
	c, _ := startChecker(t, streamOptions())
	c.SetTargets(map[string][]string{"west": {g.addr}})
	waitState(t, c, "west", g.addr, Up)
	if st := c.Statuses()[0]; !st.Stream {
		t.Fatalf("a gateway offering the stream is checked one-shot: %+v", st)
	}
	// Several answers over one stream: the checks counter grows, no new connection.
	before := testutil.ToFloat64(c.m.checks.WithLabelValues("west", healthprobe.ResultOK))
	waitfor.Cond(t, 5*time.Second, func() bool {
		return testutil.ToFloat64(c.m.checks.WithLabelValues("west", healthprobe.ResultOK)) >= before+5
	}, "no stream answers")

	// Slow answers (100ms, under DownAfter 300ms): still up, and the RTT says so.
	g.mode.Store(modeSlow)
	waitfor.Cond(t, 5*time.Second, func() bool { return c.Statuses()[0].RTT >= 100*time.Millisecond },
		"RTT of late answers: %v", c.Statuses()[0].RTT)
	if s := c.State("west", g.addr); s != Up {
		t.Fatalf("late answers within DownAfter: %v, want up", s)
	}

	// Blackhole: pings go unanswered; down after DownAfter.
	g.mode.Store(modeBlackhole)
	at := time.Now()
	waitState(t, c, "west", g.addr, Down)
	if d := time.Since(at); d < 300*time.Millisecond {
		t.Fatalf("down %v after the blackhole, before DownAfter (300ms)", d)
	}
	g.mode.Store(modeOK)
	waitState(t, c, "west", g.addr, Up)

	// Reset: hard-down at once.
	g.mode.Store(modeRST)
	waitState(t, c, "west", g.addr, HardDown)
	g.mode.Store(modeOK)
	waitState(t, c, "west", g.addr, Up)

	// Draining: hard-down at once.
	g.mode.Store(modeDraining)
	waitState(t, c, "west", g.addr, HardDown)
	g.mode.Store(modeOK)
	waitState(t, c, "west", g.addr, Up)
}

// TestStreamFallsBackToOneShot: a gateway that does not offer the stream is checked one
// connection at a time, with the one-shot hysteresis (TestHysteresis has the rest).
func TestStreamFallsBackToOneShot(t *testing.T) {
	g := newFakeGateway(t, "west") // no stream
	c, _ := startChecker(t, streamOptions())
	c.SetTargets(map[string][]string{"west": {g.addr}})
	waitState(t, c, "west", g.addr, Up)
	if st := c.Statuses()[0]; st.Stream {
		t.Fatalf("a gateway without the stream mode marked as streaming: %+v", st)
	}
	g.mode.Store(modeBlackhole)
	waitState(t, c, "west", g.addr, Down)
	if n := testutil.ToFloat64(c.m.checks.WithLabelValues("west", healthprobe.ResultTimeout)); n < 3 {
		t.Fatalf("down after %v timeouts, want FallThreshold (3)", n)
	}
}
