package xds

import (
	"fmt"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	streams      *prometheus.GaugeVec
	responses    *prometheus.CounterVec
	nacks        *prometheus.CounterVec
	updates      *prometheus.CounterVec
	invalid      *prometheus.CounterVec
	planSeconds  prometheus.Histogram
	planServices prometheus.Histogram
	services     prometheus.Gauge
	reassigned   prometheus.Counter
	held         prometheus.Counter
	panicking    prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		streams: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "meshfed_xds_streams",
			Help: "Open xDS streams by client class (grpc, envoy, gateway) and protocol (sotw, delta).",
		}, []string{"class", "protocol"}),
		responses: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshfed_xds_responses_total",
			Help: "xDS responses sent, by resource type (cds, eds, lds, rds, sds).",
		}, []string{"type"}),
		nacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshfed_xds_nacks_total",
			Help: "xDS responses rejected by a client, by class and resource type.",
		}, []string{"class", "type"}),
		updates: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshfed_xds_resource_updates_total",
			Help: "Resources changed in the xDS caches (set or deleted), by cache.",
		}, []string{"cache"}),
		invalid: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshfed_xds_invalid_resources_total",
			Help: "Resources that failed Validate() and were not served (a bug: please report).",
		}, []string{"type"}),
		planSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "meshfed_xds_plan_seconds",
			Help:    "Time of one planning pass (changed services only) including cache updates.",
			Buckets: prometheus.ExponentialBuckets(0.00005, 4, 10),
		}),
		planServices: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "meshfed_xds_plan_services",
			Help:    "Services re-planned per pass.",
			Buckets: prometheus.ExponentialBuckets(1, 4, 9),
		}),
		services: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "meshfed_xds_services",
			Help: "Imported services served over xDS.",
		}),
		reassigned: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meshfed_xds_priority_reassignments_total",
			Help: "Changes of a service's cluster order that were served.",
		}),
		held: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meshfed_xds_priority_reassignments_held_total",
			Help: "Plans held back by the one-reassignment-per-interval rule.",
		}),
		panicking: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "meshfed_xds_panic_service_ports",
			Help: "Service ports whose every cluster failed health checks, served anyway (panic routing).",
		}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.streams, m.responses, m.nacks, m.updates, m.invalid,
			m.planSeconds, m.planServices, m.services, m.reassigned, m.held, m.panicking} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("register xds metrics: %w", err)
			}
		}
	}
	return m, nil
}

// shortType turns a type URL into cds, eds, lds, rds or sds.
func shortType(typeURL string) string {
	switch {
	case strings.HasSuffix(typeURL, ".Cluster"):
		return "cds"
	case strings.HasSuffix(typeURL, ".ClusterLoadAssignment"):
		return "eds"
	case strings.HasSuffix(typeURL, ".Listener"):
		return "lds"
	case strings.HasSuffix(typeURL, ".RouteConfiguration"):
		return "rds"
	case strings.HasSuffix(typeURL, ".Secret"):
		return "sds"
	}
	return "other"
}
