package eastwest

import (
	"math/rand/v2"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// epState is the live state of one endpoint (address:port). It outlives route table
// swaps (looked up by address), so active counts and ejections survive a reload.
type epState struct {
	addr   string
	zone   string
	weight int64
	// sa is addr for dialSend (poll-splice on Linux), made when the endpoint entered the
	// table; saErr why it could not be (then every raw connect to it fails with it).
	sa    sockaddr
	saErr error

	active       atomic.Int64
	failures     atomic.Int32
	ejectedUntil atomic.Int64 // unix nanoseconds; 0 when in rotation
}

// svcState is the live state of one service (namespace/name), shared by its ports and by
// both protocols (the per-service limit counts connections and tunnels together).
type svcState struct {
	name   string
	active atomic.Int64

	sni, hbone  protoStats
	connectErrs prometheus.Counter
	ejections   prometheus.Counter
}

// protoStats are one service's series of one protocol.
type protoStats struct {
	protocol    string
	activeGauge prometheus.Gauge
	bytesIn     prometheus.Counter
	bytesOut    prometheus.Counter
	// conns are its connections_total series by result (ok, idle_timeout, error,
	// drained), each looked up on its first use and kept: a label lookup hashes the
	// label values and takes the vector's lock, on every closed connection otherwise.
	conns [4]atomic.Pointer[prometheus.Counter]
}

// closedCounter is the connections_total series of svc for result.
func (s *protoStats) closedCounter(vec *prometheus.CounterVec, svc, result string) prometheus.Counter {
	i := 0
	switch result {
	case ResultIdleTimeout:
		i = 1
	case ResultError:
		i = 2
	case ResultDrained:
		i = 3
	}
	if c := s.conns[i].Load(); c != nil {
		return *c
	}
	c := vec.WithLabelValues(svc, s.protocol, result)
	s.conns[i].Store(&c)
	return c
}

// route is one routable name (an SNI, or an HBONE authority) in the compiled table.
type route struct {
	key   ServiceKey
	name  string // the SNI or the authority
	svc   *svcState
	stats *protoStats
	eps   []*epState // ready endpoints only (HBONE: those with an HBONE port, at it)
	// ready counts the service port's ready endpoints whatever their protocol, to tell
	// "no ready endpoint" from "none with an HBONE port".
	ready int
}

func (e *epState) ejected(now int64) bool { return e.ejectedUntil.Load() > now }

// eject takes the endpoint out of rotation for base·2^(failures-1), at most max.
func (e *epState) eject(now time.Time, base, max time.Duration) time.Duration {
	f := e.failures.Add(1)
	d := base << min(f-1, 16)
	if d > max || d <= 0 {
		d = max
	}
	e.ejectedUntil.Store(now.Add(d).UnixNano())
	return d
}

func (e *epState) succeeded() {
	if e.failures.Load() != 0 {
		e.failures.Store(0)
	}
	if e.ejectedUntil.Load() != 0 {
		e.ejectedUntil.Store(0)
	}
}

// load is active connections per unit of weight, scaled to stay integral.
func (e *epState) load() int64 { return e.active.Load() * 1024 / e.weight }

// pick chooses an endpoint by power of two choices on load among endpoints that are in
// rotation and not in skip. When every candidate is ejected it falls back to the one whose
// ejection ends first: trying a maybe-dead endpoint beats refusing outright.
func pick(eps []*epState, skip []*epState, now int64) *epState {
	n := len(eps)
	if n == 0 {
		return nil
	}
	usable := func(e *epState) bool {
		for _, s := range skip {
			if s == e {
				return false
			}
		}
		return !e.ejected(now)
	}
	if n == 1 {
		if usable(eps[0]) {
			return eps[0]
		}
	} else {
		// Two random distinct candidates; if either is unusable, scan from a random start.
		i := rand.IntN(n)
		j := rand.IntN(n - 1)
		if j >= i {
			j++
		}
		a, b := eps[i], eps[j]
		ua, ub := usable(a), usable(b)
		switch {
		case ua && ub:
			if b.load() < a.load() {
				return b
			}
			return a
		case ua:
			return a
		case ub:
			return b
		}
		start := rand.IntN(n)
		var best *epState
		for k := 0; k < n; k++ {
			e := eps[(start+k)%n]
			if usable(e) && (best == nil || e.load() < best.load()) {
				best = e
			}
		}
		if best != nil {
			return best
		}
	}
	// All ejected (or skipped): the soonest to come back that was not tried yet.
	var best *epState
	for _, e := range eps {
		skipped := false
		for _, s := range skip {
			if s == e {
				skipped = true
			}
		}
		if !skipped && (best == nil || e.ejectedUntil.Load() < best.ejectedUntil.Load()) {
			best = e
		}
	}
	return best
}
