package loadgen

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// Route is where one request goes.
type Route struct {
	// Cluster is the cluster the router expects to serve it ("" when unknown, e.g. a
	// direct target behind a proxy).
	Cluster string
	Addr    string // HOST:PORT to dial
	SNI     string // TLS server name to send
}

// Router picks the route of each request.
type Router interface {
	Route() (Route, error)
}

// Result is one request.
type Result struct {
	Seq     int64
	Start   time.Time
	Latency time.Duration
	// Cluster is the serving cluster as the response names it; "" on error.
	Cluster string
	// Expected is the cluster the router picked ("" when unknown).
	Expected string
	Addr     string
	Err      string
}

// MaxLine bounds the response line read.
const MaxLine = 1024

// Generator drives requests at Rate per second until its context ends.
type Generator struct {
	Router  Router
	Rate    int
	Timeout time.Duration
	// TLS is the client config; ServerName is set per request from the route.
	TLS *tls.Config
	// Identify names the serving cluster from the workload's certificate (its SPIFFE
	// ID's trust domain); "" when it cannot. Nil: the answer line must name it.
	Identify func(tls.ConnectionState) (string, error)
	// GRPC makes each request a gRPC health check (grpc.health.v1, service "") over the
	// connection: the workload itself must answer SERVING.
	GRPC bool
	// MaxInFlight bounds concurrent requests (default Rate*timeout seconds + 16); a tick
	// that finds the limit reached records an error instead of piling up goroutines.
	MaxInFlight int

	seq atomic.Int64
}

// Run sends requests until ctx ends, calling onResult (from many goroutines) for each;
// it returns once every request in flight has finished.
func (g *Generator) Run(ctx context.Context, onResult func(Result)) error {
	if g.Rate < 1 {
		return errors.New("loadgen: rate must be at least 1 per second")
	}
	if g.Timeout <= 0 {
		g.Timeout = time.Second
	}
	limit := g.MaxInFlight
	if limit <= 0 {
		limit = int(float64(g.Rate)*g.Timeout.Seconds()) + 16
	}
	sem := make(chan struct{}, limit)
	var wg sync.WaitGroup
	t := time.NewTicker(time.Second / time.Duration(g.Rate))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			wg.Wait()
			return nil
		case <-t.C:
		}
		seq := g.seq.Add(1)
		select {
		case sem <- struct{}{}:
		default:
			onResult(Result{Seq: seq, Start: time.Now(), Err: fmt.Sprintf("%d requests in flight: not sending", limit)})
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			// Stopping the generator stops new requests; those in flight finish within
			// their own timeout (a stop must not turn them into errors).
			onResult(g.one(context.WithoutCancel(ctx), seq))
		}()
	}
}

func (g *Generator) one(ctx context.Context, seq int64) Result {
	start := time.Now()
	res := Result{Seq: seq, Start: start}
	rt, err := g.Router.Route()
	if err != nil {
		res.Err = "no route: " + err.Error()
		res.Latency = time.Since(start)
		return res
	}
	res.Expected, res.Addr = rt.Cluster, rt.Addr
	cluster, err := g.Request(ctx, rt, seq)
	res.Latency = time.Since(start)
	if err != nil {
		res.Err = err.Error()
		return res
	}
	res.Cluster = cluster
	return res
}

// Request sends one request over a new TLS connection and returns the serving cluster.
func (g *Generator) Request(ctx context.Context, rt Route, seq int64) (string, error) {
	rctx, cancel := context.WithTimeout(ctx, g.Timeout)
	defer cancel()
	var d net.Dialer
	raw, err := d.DialContext(rctx, "tcp", rt.Addr)
	if err != nil {
		return "", fmt.Errorf("connect %s: %w", rt.Addr, err)
	}
	defer raw.Close()
	dl, _ := rctx.Deadline()
	_ = raw.SetDeadline(dl)
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if g.TLS != nil {
		cfg = g.TLS.Clone()
	}
	if rt.SNI != "" {
		cfg.ServerName = rt.SNI
	}
	if g.GRPC {
		cfg.NextProtos = []string{"h2"}
	}
	tc := tls.Client(raw, cfg)
	hsStart := time.Now()
	if err := tc.HandshakeContext(rctx); err != nil {
		return "", fmt.Errorf("tls with %s: %w", rt.Addr, err)
	}
	hs := time.Since(hsStart)
	peer := ""
	if g.Identify != nil {
		c, err := g.Identify(tc.ConnectionState())
		if err != nil {
			return "", fmt.Errorf("tls with %s: %w", rt.Addr, err)
		}
		peer = c
	}
	if g.GRPC {
		if peer == "" {
			return "", fmt.Errorf("tls with %s: the workload's certificate names no single cluster of the clusterset (no certificate, or a trust domain several clusters share)", rt.Addr)
		}
		return peer, healthCheck(rctx, tc, rt.Addr)
	}
	if peer != "" {
		// The TLS handshake was with the workload itself (the gateway never terminates
		// TLS): its certificate says which cluster served, once the workload has accepted
		// ours.
		if err := awaitVerdict(tc, hs, dl); err != nil {
			return "", fmt.Errorf("tls with %s: %w", rt.Addr, err)
		}
		return peer, nil
	}
	if _, err := fmt.Fprintf(tc, "meshfed-drill %d\n", seq); err != nil {
		return "", fmt.Errorf("write to %s: %w", rt.Addr, err)
	}
	line, err := bufio.NewReaderSize(io.LimitReader(tc, MaxLine), MaxLine).ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("read from %s: %w", rt.Addr, err)
	}
	return ParseServer(line)
}

// MinVerdictWait is the least time awaitVerdict gives a TLS 1.3 workload to refuse the
// drill's certificate.
const MinVerdictWait = 20 * time.Millisecond

// awaitVerdict waits for a TLS 1.3 workload's verdict on the client certificate. In TLS 1.3
// the client's handshake ends before the server has checked the client's certificate; a
// refusal arrives as an alert about one round trip later. So, for twice the handshake's
// own time (at least MinVerdictWait, never past deadline), a read must
// not fail: an alert is the workload's refusal; silence, data or a clean close its acceptance.
// TLS 1.2 settles the client certificate inside the handshake.
func awaitVerdict(tc *tls.Conn, hs time.Duration, deadline time.Time) error {
	if tc.ConnectionState().Version < tls.VersionTLS13 {
		return nil
	}
	until := time.Now().Add(max(2*hs, MinVerdictWait))
	if !deadline.IsZero() && deadline.Before(until) {
		until = deadline
	}
	_ = tc.SetReadDeadline(until)
	var b [1]byte
	_, err := tc.Read(b[:])
	var ne net.Error
	switch {
	case err == nil:
		return nil // the workload spoke first: it accepted us
	case errors.As(err, &ne) && ne.Timeout():
		return nil
	case errors.Is(err, io.EOF):
		return nil // a clean close (close_notify) after a finished handshake: it accepted us
	default:
		return fmt.Errorf("the workload refused the connection after the handshake: %w", err)
	}
}

// healthCheck makes one gRPC health check over the TLS connection tc.
func healthCheck(ctx context.Context, tc *tls.Conn, addr string) error {
	used := false
	cc, err := grpc.NewClient("passthrough:///"+addr,
		grpc.WithContextDialer(func(context.Context, string) (net.Conn, error) {
			if used {
				return nil, errors.New("one connection per request")
			}
			used = true
			return tc, nil
		}),
		// TLS is already up on tc (done above, with the drill's identity).
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer cc.Close()
	resp, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		return fmt.Errorf("grpc health check via %s: %w", addr, err)
	}
	if st := resp.GetStatus(); st != healthpb.HealthCheckResponse_SERVING {
		return fmt.Errorf("grpc health check via %s: the workload answered %v", addr, st)
	}
	return nil
}

// ParseServer reads the serving cluster from a response line "<cluster> <workload>: ...".
func ParseServer(line string) (string, error) {
	f := strings.Fields(line)
	if len(f) < 2 || !strings.HasSuffix(f[1], ":") || !label(f[0]) {
		return "", fmt.Errorf("response %q does not name its cluster (want \"<cluster> <workload>: ...\")", truncate(line, 80))
	}
	return f[0], nil
}

func label(s string) bool {
	if len(s) == 0 || len(s) > 63 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return s[0] != '-' && s[len(s)-1] != '-'
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}
