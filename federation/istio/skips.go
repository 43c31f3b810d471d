package istio

import (
	"fmt"
	"log/slog"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// SkipReporter reports what the builders left out, once per skip: a warning (Skip.Explain:
// what it means and the fix) and a count by reason when a skip appears; nothing while it
// stays; it is forgotten when it goes, so a skip that comes back is reported again.
type SkipReporter struct {
	log     *slog.Logger
	counter *prometheus.CounterVec // label "reason"; may be nil
	mu      sync.Mutex
	current map[Skip]bool
}

// NewSkipReporter reports to log and counter (label reason; nil: no count). what names
// the output in the warning (e.g. "istiod (MCP)", "ambient entries").
func NewSkipReporter(log *slog.Logger, counter *prometheus.CounterVec, what string) *SkipReporter {
	if log == nil {
		log = slog.Default()
	}
	return &SkipReporter{log: log.With("output", what), counter: counter, current: map[Skip]bool{}}
}

// Report takes the whole set of skips now (every service's), reports the new ones and
// forgets the ones gone.
func (r *SkipReporter) Report(skips []Skip) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := make(map[Skip]bool, len(skips))
	for _, sk := range skips {
		if now[sk] {
			continue
		}
		now[sk] = true
		if r.current[sk] {
			continue
		}
		if r.counter != nil {
			r.counter.WithLabelValues(sk.Reason).Inc()
		}
		r.log.Warn("part of an imported service cannot be given to Istio as it is: "+sk.Explain(), "service", sk.Service, "cluster", sk.Cluster, "reason", sk.Reason)
	}
	r.current = now
}

// NewAmbientSkipReporter is the SkipReporter of the ambient entries (BuildAmbientSkips),
// counting in meshfed_istio_ambient_skipped_total{reason} on reg (nil: not registered).
func NewAmbientSkipReporter(log *slog.Logger, reg prometheus.Registerer) (*SkipReporter, error) {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "meshfed_istio_ambient_skipped_total",
		Help: "Parts of imported services left out of the Istio ambient ServiceEntries/WorkloadEntries, by reason (e.g. no-service-account).",
	}, []string{"reason"})
	if reg != nil {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register istio ambient metrics: %w", err)
		}
	}
	return NewSkipReporter(log, c, "ambient entries"), nil
}
