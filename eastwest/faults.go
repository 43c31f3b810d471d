package eastwest

import (
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshfed/meshfed/api/fault"
)

// Drill faults (api/fault) arrive with the route table (RouteTable.Faults) and are carried
// out here, at the two places a connection is decided:
//
//   - at accept, before anything is read: a global blackhole holds the connection, a
//     global reset resets it, a global error fault resets that fraction;
//   - once the ClientHello names a service (or the health name): a fault narrowed to that
//     service does the same there, and a delay fault (global or narrowed) holds the
//     connection that long before it is forwarded or answered.
//
// Blackhole: the connection is accepted (the kernel completes the TCP handshake; nothing a
// user-space process can refuse silently) and then held without reading or writing a
// byte: no answer, no FIN, no RST, as if the packets vanished. When the fault ends the
// held connection goes on as if the network had come back: its hello is read and routed.
// Reset: SO_LINGER 0 and close, which sends an RST. Health streams already open (the
// federations' checkers) get the same treatment at their next ping: blackholed pings go
// unanswered, a reset cuts the stream, a delay holds each answer. Connections already
// spliced before a fault are not touched: faults act on new connections and on the
// health name.
//
// Every fault ends at its deadline by this process's clock: the check is made against
// time.Now() at each decision, and a timer wakes what is held at the earliest deadline,
// whether or not the federation is reachable.

// faultSet is the faults in force; it is replaced, never edited, and changed is closed
// when it is.
type faultSet struct {
	list    []fault.Fault
	changed chan struct{}
}

type faultState struct {
	cur   atomic.Pointer[faultSet] // read on every connection
	mu    sync.Mutex               // serializes setFaults
	timer *time.Timer
	m     *faultMetrics
}

type faultMetrics struct {
	active *prometheus.GaugeVec
	conns  *prometheus.CounterVec
}

func newFaultMetrics(reg prometheus.Registerer) *faultMetrics {
	m := &faultMetrics{
		active: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "meshfed", Subsystem: "gateway", Name: "faults_active",
			Help: "Drill faults in force at this gateway, by kind (blackhole, reset, delay, error)."}, []string{"kind"}),
		conns: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "meshfed", Subsystem: "gateway", Name: "fault_connections_total",
			Help: "Connections and health answers a drill fault acted on, by kind and action (held, reset, delayed)."}, []string{"kind", "action"}),
	}
	reg.MustRegister(m.active, m.conns)
	return m
}

// Faults returns the faults in force now.
func (g *Gateway) Faults() []fault.Fault {
	fs := g.faults.load()
	now := time.Now()
	var out []fault.Fault
	for _, f := range fs.list {
		if f.Active(now) {
			out = append(out, f)
		}
	}
	return out
}

func (s *faultState) init(reg prometheus.Registerer) {
	s.m = newFaultMetrics(reg)
	s.cur.Store(&faultSet{changed: make(chan struct{})})
}

func (s *faultState) load() *faultSet { return s.cur.Load() }

// set puts list in force (expired faults dropped); a list equal to the one in force
// changes nothing.
func (g *Gateway) setFaults(list []fault.Fault) {
	s := &g.faults
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	live := make([]fault.Fault, 0, len(list))
	for _, f := range list {
		if f.Active(now) {
			live = append(live, f.Normal())
		}
	}
	old := s.cur.Load()
	if slices.Equal(live, old.list) {
		return
	}
	for _, f := range old.list {
		if !slices.Contains(live, f) {
			if f.Active(now) {
				g.log.Info("drill fault lifted by the federation", "fault", f.String())
			} else {
				g.log.Info("drill fault ended at its deadline", "fault", f.String())
			}
		}
	}
	for _, f := range live {
		if !slices.Contains(old.list, f) {
			g.log.Warn("drill fault in force", "fault", f.String(), "ends_in", f.Deadline.Sub(now).Round(time.Millisecond))
		}
	}
	s.cur.Store(&faultSet{list: live, changed: make(chan struct{})})
	close(old.changed)
	s.m.active.Reset()
	var next time.Time
	for _, f := range live {
		s.m.active.WithLabelValues(string(f.Kind)).Inc()
		if next.IsZero() || f.Deadline.Before(next) {
			next = f.Deadline
		}
	}
	if s.timer != nil {
		s.timer.Stop()
		s.timer = nil
	}
	if !next.IsZero() {
		// Re-evaluated at the earliest deadline: the list without what has expired.
		s.timer = time.AfterFunc(time.Until(next), func() { g.setFaults(g.faults.load().list) })
	}
}

// global is the first fault in force over every connection, or nil.
func (fs *faultSet) global(now time.Time) *fault.Fault {
	for i := range fs.list {
		if f := &fs.list[i]; f.Global() && f.Active(now) {
			return f
		}
	}
	return nil
}

// narrowed is the first fault in force over namespace/service only, or nil.
func (fs *faultSet) narrowed(now time.Time, namespace, service string) *fault.Fault {
	for i := range fs.list {
		if f := &fs.list[i]; !f.Global() && f.Covers(namespace, service) && f.Active(now) {
			return f
		}
	}
	return nil
}

// faultOnAccept carries out a global blackhole, reset or error fault on a new connection.
// It reports whether c was reset (the caller is done with it); a blackholed connection
// returns once the fault is over, to be handled as usual.
func (g *Gateway) faultOnAccept(c clientConn) (done bool) {
	return g.actOn(g.resetConn(c), func(fs *faultSet, now time.Time) *fault.Fault { return fs.global(now) }, onAccept)
}

// faultOnService does the same for a fault narrowed to the connection's service, and
// holds the connection for a delay fault (global or narrowed). health is true for the
// health name (which only global faults cover).
func (g *Gateway) faultOnService(c clientConn, k ServiceKey, health bool) (done bool) {
	pick := func(fs *faultSet, now time.Time) *fault.Fault {
		if health {
			if f := fs.global(now); f != nil && f.Kind == fault.Delay {
				return f
			}
			return nil
		}
		if f := fs.narrowed(now, k.Namespace, k.Name); f != nil {
			return f
		}
		if f := fs.global(now); f != nil && f.Kind == fault.Delay {
			return f
		}
		return nil
	}
	return g.actOn(g.resetConn(c), pick, onHello)
}

// faultOnStream is faultOnService for one HBONE tunnel of service k: a reset (or an error
// fraction) returns true and the caller resets the stream; a blackhole or delay holds it.
func (g *Gateway) faultOnStream(k ServiceKey) (reset bool) {
	pick := func(fs *faultSet, now time.Time) *fault.Fault {
		if f := fs.narrowed(now, k.Namespace, k.Name); f != nil {
			return f
		}
		if f := fs.global(now); f != nil && f.Kind == fault.Delay {
			return f
		}
		return nil
	}
	return g.actOn(func(f *fault.Fault) { g.faults.m.conns.WithLabelValues(string(f.Kind), "reset").Inc() }, pick, onHello)
}

// Where a fault is carried out: delays wait for the hello, error fractions act on new
// connections only.
type faultPoint int

const (
	onAccept faultPoint = iota // a new connection, before its hello
	onHello                    // a new connection whose hello named its service
	onPing                     // a ping on a health stream already open
)

// actOn carries out the fault pick finds (if any) at point p; reset resets what is faulted
// (a connection, a stream), and actOn then returns true.
func (g *Gateway) actOn(reset func(*fault.Fault), pick func(*faultSet, time.Time) *fault.Fault, p faultPoint) bool {
	fs := g.faults.load()
	f := pick(fs, time.Now())
	if f == nil {
		return false
	}
	switch f.Kind {
	case fault.Reset:
		reset(f)
		return true
	case fault.Error:
		if p != onPing && rand.Float64() < f.Fraction {
			reset(f)
			return true
		}
	case fault.Blackhole:
		g.faults.m.conns.WithLabelValues(string(f.Kind), "held").Inc()
		g.holdWhile(func(fs *faultSet, now time.Time) *fault.Fault {
			if f := pick(fs, now); f != nil && f.Kind == fault.Blackhole {
				return f
			}
			return nil
		})
	case fault.Delay:
		if p != onAccept {
			g.faults.m.conns.WithLabelValues(string(f.Kind), "delayed").Inc()
			g.delayWhile(f.Delay, pick)
		}
	}
	return false
}

func (g *Gateway) resetConn(c clientConn) func(*fault.Fault) {
	return func(f *fault.Fault) { g.faultReset(c, f) }
}

func (g *Gateway) faultReset(c clientConn, f *fault.Fault) {
	g.faults.m.conns.WithLabelValues(string(f.Kind), "reset").Inc()
	_ = c.SetLinger(0)
	c.Close()
}

// holdWhile blocks while cond finds a fault in force (re-checked whenever the fault set
// changes, at the latest at its deadline), or until the gateway drains.
func (g *Gateway) holdWhile(cond func(*faultSet, time.Time) *fault.Fault) {
	for {
		fs := g.faults.load()
		if cond(fs, time.Now()) == nil {
			return
		}
		select {
		case <-fs.changed:
		case <-g.drainCh:
			return
		}
	}
}

// delayWhile holds for d from now, cut short when the delay fault pick finds is lifted.
func (g *Gateway) delayWhile(d time.Duration, pick func(*faultSet, time.Time) *fault.Fault) {
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		fs := g.faults.load()
		if f := pick(fs, time.Now()); f == nil || f.Kind != fault.Delay {
			return
		}
		select {
		case <-t.C:
			return
		case <-fs.changed:
		case <-g.drainCh:
			return
		}
	}
}

// faultOnHealthPing is what a global fault does to a ping on a health stream already
// open: it reports whether the stream must end (reset: cut with an RST). An error
// fraction acts on new connections only.
func (g *Gateway) faultOnHealthPing(c clientConn) (cut bool) {
	return g.actOn(g.resetConn(c), func(fs *faultSet, now time.Time) *fault.Fault { return fs.global(now) }, onPing)
}
