package health

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	checks      *prometheus.CounterVec
	duration    *prometheus.HistogramVec
	state       *prometheus.GaugeVec
	transitions *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		checks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshfed_health_checks_total",
			Help: "Gateway health checks by remote cluster and result (ok, timeout, refused, reset, closed, tls, status, wrong_cluster, bad_line, error).",
		}, []string{"cluster", "result"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "meshfed_health_check_duration_seconds",
			Help:    "Time of one gateway health check: connect, TLS handshake and status line.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1},
		}, []string{"cluster"}),
		state: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "meshfed_health_gateway_state",
			Help: "Gateway address health: 0 unknown, 1 up, 2 down, 3 hard-down.",
		}, []string{"cluster", "gateway"}),
		transitions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshfed_health_transitions_total",
			Help: "Gateway health state changes by remote cluster and new state.",
		}, []string{"cluster", "to"}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.checks, m.duration, m.state, m.transitions} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("register health metrics: %w", err)
			}
		}
	}
	return m, nil
}

func (m *metrics) setState(k Target, s State) {
	m.state.WithLabelValues(k.Cluster, k.Addr).Set(float64(s))
}

func (m *metrics) forget(k Target) {
	m.state.DeleteLabelValues(k.Cluster, k.Addr)
}
