package health

import (
	"context"
	"crypto/x509"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshfed/meshfed/api/healthwire"
	"github.com/meshfed/meshfed/internal/healthprobe"
)

// Options tune the checker; zero values take the defaults.
//
// A gateway that offers the stream mode (api/healthwire; every gateway since v2) is
// checked over one long-lived TLS connection: a ping every PingInterval, each answered
// with a status line. The address is down when a ping stays unanswered for DownAfter (a
// blackhole: detected within DownAfter+PingInterval), hard-down at once on a reset, a
// refusal or a not-ok line. Packet loss only delays answers (TCP retransmits, and the
// pings that follow make it recover fast), so it does not fail checks the way a lost SYN
// fails a one-shot check with a 500 ms timeout. Older gateways answer one line per
// connection; they are checked as before: one connection per Interval, down after
// FallThreshold failures in a row. docs/architecture.md#failover has the trade-off.
type Options struct {
	// Interval between two one-shot checks of one address (default 1s).
	Interval time.Duration
	// Timeout of one one-shot check: connect + handshake + line (default 500ms). Keep it
	// well under Interval: a blackholed gateway is marked down after FallThreshold
	// timeouts, so detection takes about (FallThreshold-1)*Interval + Timeout.
	Timeout time.Duration
	// FallThreshold failed one-shot checks in a row mark an address down (default 3).
	FallThreshold int
	// RiseThreshold good checks (or stream answers) in a row mark it up again (default 2).
	RiseThreshold int
	// FastInterval is the interval while an address is changing state (it failed a check
	// but is not down yet, or passed one but is not up yet), like HAProxy's fastinter:
	// the thresholds still apply, they are just confirmed sooner (default 250ms; at most
	// Interval). A blackholed gateway is then down after about Timeout*FallThreshold plus
	// up to one Interval, instead of (FallThreshold-1)*Interval + Timeout. It is also the
	// pause between two attempts to open a health stream.
	FastInterval time.Duration
	// PingInterval between two pings on a health stream (default 250ms).
	PingInterval time.Duration
	// DownAfter: a ping unanswered this long marks a streaming address down, as does
	// failing to reopen its stream for this long since its last good answer (default 2s;
	// at least 2*PingInterval). Connecting and the handshake get this long too.
	DownAfter time.Duration
	// NoStream checks with one connection per check only (the behaviour before streams).
	NoStream bool
}

func (o *Options) defaults() error {
	if o.Interval == 0 {
		o.Interval = time.Second
	}
	if o.Timeout == 0 {
		o.Timeout = 500 * time.Millisecond
	}
	if o.FallThreshold == 0 {
		o.FallThreshold = 3
	}
	if o.RiseThreshold == 0 {
		o.RiseThreshold = 2
	}
	if o.FastInterval == 0 {
		o.FastInterval = min(250*time.Millisecond, o.Interval)
	}
	if o.PingInterval == 0 {
		o.PingInterval = 250 * time.Millisecond
	}
	if o.DownAfter == 0 {
		o.DownAfter = max(2*time.Second, 2*o.PingInterval)
	}
	switch {
	case o.Interval < 10*time.Millisecond:
		return fmt.Errorf("health interval %v: use at least 10ms (default 1s)", o.Interval)
	case o.Timeout <= 0 || o.Timeout > o.Interval:
		return fmt.Errorf("health timeout %v: use more than 0 and at most the interval %v (default 500ms)", o.Timeout, o.Interval)
	case o.FastInterval < 0 || o.FastInterval > o.Interval:
		return fmt.Errorf("health fast interval %v: use more than 0 and at most the interval %v (default 250ms)", o.FastInterval, o.Interval)
	case o.FallThreshold < 1 || o.RiseThreshold < 1:
		return fmt.Errorf("health thresholds fall=%d rise=%d: use at least 1 (defaults 3 and 2)", o.FallThreshold, o.RiseThreshold)
	case o.PingInterval < 10*time.Millisecond:
		return fmt.Errorf("health ping interval %v: use at least 10ms (default 250ms)", o.PingInterval)
	case o.DownAfter < 2*o.PingInterval:
		return fmt.Errorf("health down-after %v: use at least twice the ping interval %v (default 2s)", o.DownAfter, o.PingInterval)
	}
	return nil
}

// Target is one checked gateway address of one cluster.
type Target struct {
	Cluster string
	Addr    string
}

// Status is what the checker knows about one target (for /debug pages and tests).
type Status struct {
	Target
	State     State
	Since     time.Time // last state change
	LastCheck time.Time
	LastError string // of the last failed check, "" after a good one
	LastLine  string // status word of the last line read
	RTT       time.Duration
	// Stream: the address answers over a health stream (false: one-shot checks, or not
	// reached yet).
	Stream bool
}

type target struct {
	Status
	fails, oks int
	lastGood   time.Time // last good answer (zero: none yet)
	cancel     context.CancelFunc
}

// Checker checks gateway addresses. Make it with New, give it targets with SetTargets
// (the xDS server does, from the clusters/ records), and Run it.
type Checker struct {
	opts Options
	log  *slog.Logger
	m    *metrics

	mu      sync.Mutex
	targets map[Target]*target
	roots   map[string]*x509.CertPool
	subs    []chan struct{}
	runCtx  context.Context
	wg      sync.WaitGroup
}

// New makes a checker; reg receives its metrics (nil: not registered).
func New(opts Options, log *slog.Logger, reg prometheus.Registerer) (*Checker, error) {
	if err := opts.defaults(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.Default()
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	return &Checker{opts: opts, log: log.With("component", "health"), m: m,
		targets: map[Target]*target{}, roots: map[string]*x509.CertPool{}}, nil
}

// Options returns the effective options (defaults filled in).
func (c *Checker) Options() Options { return c.opts }

// SetTargets replaces the checked addresses: cluster name → gateway addresses. New
// addresses start Unknown and are checked at once; addresses no longer listed are
// forgotten (their state too).
func (c *Checker) SetTargets(byCluster map[string][]string) {
	want := map[Target]bool{}
	for cl, addrs := range byCluster {
		for _, a := range addrs {
			want[Target{Cluster: cl, Addr: a}] = true
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	changed := false
	for k, t := range c.targets {
		if !want[k] {
			if t.cancel != nil {
				t.cancel()
			}
			delete(c.targets, k)
			c.m.forget(k)
			changed = true
			c.log.Info("stopped checking gateway", "cluster", k.Cluster, "gateway", k.Addr)
		}
	}
	for k := range want {
		if _, ok := c.targets[k]; ok {
			continue
		}
		t := &target{Status: Status{Target: k, State: Unknown, Since: time.Now()}}
		c.targets[k] = t
		c.m.setState(k, Unknown)
		changed = true
		c.log.Info("checking gateway", "cluster", k.Cluster, "gateway", k.Addr)
		if c.runCtx != nil {
			c.start(t)
		}
	}
	if changed {
		c.notifyLocked()
	}
}

// SetRoots sets the roots that cluster's gateway health certificates must chain to
// (the trust component calls it with the cluster's trust bundle). nil goes back to
// unauthenticated checks.
func (c *Checker) SetRoots(cluster string, pool *x509.CertPool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if pool == nil {
		delete(c.roots, cluster)
		return
	}
	c.roots[cluster] = pool
}

// State is the current state of one address; Unknown for an address not checked.
func (c *Checker) State(cluster, addr string) State {
	c.mu.Lock()
	defer c.mu.Unlock()
	if t, ok := c.targets[Target{cluster, addr}]; ok {
		return t.State
	}
	return Unknown
}

// Statuses lists every target, sorted by cluster then address.
func (c *Checker) Statuses() []Status {
	c.mu.Lock()
	out := make([]Status, 0, len(c.targets))
	for _, t := range c.targets {
		out = append(out, t.Status)
	}
	c.mu.Unlock()
	sort.Slice(out, func(i, j int) bool {
		if out[i].Cluster != out[j].Cluster {
			return out[i].Cluster < out[j].Cluster
		}
		return out[i].Addr < out[j].Addr
	})
	return out
}

// Subscribe returns a channel that receives (coalesced) after every state change and
// target set change. It is never closed.
func (c *Checker) Subscribe() <-chan struct{} {
	ch := make(chan struct{}, 1)
	c.mu.Lock()
	c.subs = append(c.subs, ch)
	c.mu.Unlock()
	return ch
}

func (c *Checker) notifyLocked() {
	for _, ch := range c.subs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// Run checks every target until ctx ends.
func (c *Checker) Run(ctx context.Context) error {
	c.mu.Lock()
	if c.runCtx != nil {
		c.mu.Unlock()
		return fmt.Errorf("health checker: Run called twice")
	}
	c.runCtx = ctx
	for _, t := range c.targets {
		c.start(t)
	}
	c.mu.Unlock()
	<-ctx.Done()
	c.wg.Wait()
	return nil
}

// start runs t's check loop; c.mu held.
func (c *Checker) start(t *target) {
	ctx, cancel := context.WithCancel(c.runCtx)
	t.cancel = cancel
	k := t.Target
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		c.loop(ctx, k)
	}()
}

// loop checks k until ctx ends: over a health stream while the gateway offers one, else
// with one-shot checks.
func (c *Checker) loop(ctx context.Context, k Target) {
	timer := time.NewTimer(0)
	defer timer.Stop()
	oneShot := c.opts.NoStream
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		start := time.Now()
		next := c.opts.Interval
		if oneShot {
			if c.check(ctx, k) {
				next = c.opts.FastInterval
			}
			timer.Reset(max(time.Until(start.Add(next)), 0))
			continue
		}
		c.mu.Lock()
		roots := c.roots[k.Cluster]
		c.mu.Unlock()
		dctx, cancel := context.WithTimeout(ctx, c.opts.DownAfter)
		tc, out := healthprobe.Dial(dctx, k.Addr, roots, true)
		if tc != nil && tc.ConnectionState().NegotiatedProtocol != healthwire.StreamALPN {
			// A gateway without the stream mode: it answers one line and closes. Use that
			// answer, then check it one connection at a time.
			out = healthprobe.ReadStatus(dctx, tc, k.Cluster, k.Addr)
			tc.Close()
			tc = nil
			oneShot = true
			c.setStream(k, false)
		}
		cancel()
		if tc != nil {
			c.setStream(k, true)
			c.stream(ctx, k, tc, start)
			next = c.opts.FastInterval // reopen soon: the stream's end was applied already
		} else if c.record(ctx, k, out, start) {
			next = c.opts.FastInterval
		} else if !oneShot {
			next = c.opts.FastInterval // a stream could not be opened: try again soon
		}
		timer.Reset(max(time.Until(start.Add(next)), 0))
	}
}

func (c *Checker) setStream(k Target, on bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if t, ok := c.targets[k]; ok {
		t.Stream = on
	}
}

// check probes k once (one-shot) and applies the result; it reports whether k is
// changing state (the next check then comes after FastInterval).
func (c *Checker) check(ctx context.Context, k Target) bool {
	c.mu.Lock()
	roots := c.roots[k.Cluster]
	c.mu.Unlock()
	start := time.Now()
	pctx, cancel := context.WithTimeout(ctx, c.opts.Timeout)
	out := healthprobe.Probe(pctx, k.Cluster, k.Addr, roots)
	cancel()
	return c.record(ctx, k, out, start)
}

// record counts one result (its RTT measured from start when not set) and applies it,
// unless ctx ended (target removed or shutting down: not a result).
func (c *Checker) record(ctx context.Context, k Target, out healthprobe.Outcome, start time.Time) bool {
	if ctx.Err() != nil {
		return false
	}
	if out.RTT == 0 {
		out.RTT = time.Since(start)
	}
	c.m.checks.WithLabelValues(k.Cluster, out.Result).Inc()
	c.m.duration.WithLabelValues(k.Cluster).Observe(out.RTT.Seconds())
	return c.apply(k, out, time.Now())
}

// apply runs the hysteresis for one result; it reports whether the address is between
// states (failing but not down, or passing but not up).
func (c *Checker) apply(k Target, out healthprobe.Outcome, now time.Time) (transitioning bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	t, ok := c.targets[k]
	if !ok {
		return false
	}
	defer func() {
		transitioning = (t.State.Usable() && t.fails > 0) || (!t.State.Usable() && t.oks > 0)
	}()
	t.LastCheck, t.RTT, t.LastLine = now, out.RTT, out.Line.Word
	prev := t.State
	next := prev
	if out.OK {
		t.fails, t.LastError, t.lastGood = 0, "", now
		t.oks++
		// The first good answer is enough for an unknown address; a down one needs
		// RiseThreshold in a row.
		if prev == Unknown || (prev != Up && t.oks >= c.opts.RiseThreshold) {
			next = Up
		}
	} else {
		t.oks = 0
		t.fails++
		t.LastError = out.Err.Error()
		switch {
		case out.Hard:
			next = HardDown
		case (prev == Up || prev == Unknown) && t.Stream:
			// Over a stream: down once nothing good came for DownAfter (an unanswered
			// ping, or a stream that cannot be reopened), not on one slow answer.
			ref := t.lastGood
			if ref.IsZero() {
				ref = t.Since
			}
			if now.Sub(ref) >= c.opts.DownAfter {
				next = Down
			}
		case (prev == Up || prev == Unknown) && t.fails >= c.opts.FallThreshold:
			// An unknown address falls like an up one: one slow first check must not
			// drop a cluster when a federation service restarts (static stability).
			next = Down
		}
	}
	if next == prev {
		return
	}
	t.State, t.Since = next, now
	c.m.setState(k, next)
	c.m.transitions.WithLabelValues(k.Cluster, next.String()).Inc()
	lvl := slog.LevelInfo
	if !next.Usable() {
		lvl = slog.LevelWarn
	}
	c.log.Log(context.Background(), lvl, "gateway health changed", "cluster", k.Cluster, "gateway", k.Addr,
		"from", prev.String(), "to", next.String(), "result", out.Result, "err", t.LastError)
	c.notifyLocked()
	return // transitioning is set by the deferred func
}
