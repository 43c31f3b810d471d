package istio

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	streams      prometheus.Gauge
	pushes       *prometheus.CounterVec
	pushSeconds  prometheus.Histogram
	nacks        *prometheus.CounterVec
	unknownTypes *prometheus.CounterVec
	saveErrors   prometheus.Counter
	resources    *prometheus.GaugeVec
	skipped      *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		streams: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "meshfed_istio_mcp_streams",
			Help: "istiod config-source streams open on the MCP listener.",
		}),
		pushes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshfed_istio_mcp_pushes_total",
			Help: "Full-state responses sent to istiods, by type URL.",
		}, []string{"type"}),
		pushSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "meshfed_istio_mcp_push_seconds",
			Help:    "Time to send one full-state response to one istiod.",
			Buckets: prometheus.ExponentialBuckets(0.00005, 4, 10),
		}),
		nacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshfed_istio_mcp_nacks_total",
			Help: "Responses an istiod rejected, by type URL and reason (gRPC code of its error detail).",
		}, []string{"type", "reason"}),
		unknownTypes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshfed_istio_mcp_unknown_types_total",
			Help: "Subscriptions to type URLs this meshfed does not know (answered empty): version skew with istiod.",
		}, []string{"type"}),
		saveErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meshfed_istio_mcp_state_save_errors_total",
			Help: "Failures to write the last good Istio state to disk (--istio-mcp-state-file).",
		}),
		resources: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "meshfed_istio_mcp_resources",
			Help: "Resources in the served Istio state, by type URL.",
		}, []string{"type"}),
		skipped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshfed_istio_mcp_skipped_total",
			Help: "Plan parts not expressible for istiod and left out, by reason (e.g. gateway-hostname).",
		}, []string{"reason"}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.streams, m.pushes, m.pushSeconds, m.nacks, m.unknownTypes, m.saveErrors, m.resources, m.skipped} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("register istio mcp metrics: %w", err)
			}
		}
	}
	return m, nil
}
