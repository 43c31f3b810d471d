package xdsroutes

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	connected   prometheus.Gauge
	updates     *prometheus.CounterVec
	nacks       *prometheus.CounterVec
	disconnects prometheus.Counter
	cacheErrors prometheus.Counter
}

// newMetrics registers the source's metrics on reg (namespace meshfed_gateway_xds_). The
// two ages are computed at scrape time from the source's state.
func newMetrics(reg prometheus.Registerer, s *Source) (*metrics, error) {
	const ns, sub = "meshfed", "gateway_xds"
	m := &metrics{
		connected: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "connected",
			Help: "1 while the ADS stream to the federation's xDS server is up and answering, else 0."}),
		updates: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "updates_total",
			Help: "xDS responses accepted (ACKed), by type (cds, eds)."}, []string{"type"}),
		nacks: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "nacks_total",
			Help: "xDS responses rejected (NACKed) because a resource was unusable, by type (cds, eds)."}, []string{"type"}),
		disconnects: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "disconnects_total",
			Help: "ADS streams or connection attempts that ended in an error (each is retried with backoff)."}),
		cacheErrors: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "cache_write_failures_total",
			Help: "Route tables that could not be written to the cache file (--federation-cache)."}),
	}
	for _, t := range []string{"cds", "eds"} {
		m.updates.WithLabelValues(t)
		m.nacks.WithLabelValues(t)
	}
	if reg == nil {
		return m, nil
	}
	age := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "last_update_age_seconds",
		Help: "Seconds since the last xDS response was accepted (since start when none was)."}, func() float64 {
		st := s.Status()
		return time.Since(st.LastUpdate).Seconds()
	})
	stale := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "stale_seconds",
		Help: "Seconds since the federation became unreachable (since start before the first connection); 0 while connected. The last good route table stays in force meanwhile."}, func() float64 {
		st := s.Status()
		if st.Connected {
			return 0
		}
		return time.Since(st.StaleSince).Seconds()
	})
	for _, c := range []prometheus.Collector{m.connected, m.updates, m.nacks, m.disconnects, m.cacheErrors, age, stale} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
