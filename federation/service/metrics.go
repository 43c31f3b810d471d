package service

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	published      *prometheus.CounterVec
	publishErrors  prometheus.Counter
	invalidRecords prometheus.Counter
	services       prometheus.Gauge
	staleClusters  prometheus.Gauge
	viewBuilds     prometheus.Counter
	viewBuildSecs  prometheus.Histogram
	viewRevision   prometheus.Gauge
	heartbeatUp    prometheus.Gauge
	watchUp        prometheus.Gauge
	resyncs        prometheus.Counter
	leader         prometheus.Gauge
	clusterStale   *prometheus.GaugeVec
	propagation    prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		published: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "meshfed_federation_exports_published_total",
			Help: "Export records written to etcd by this cluster, by operation (put, delete)."}, []string{"op"}),
		publishErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "meshfed_federation_publish_errors_total",
			Help: "Failed attempts to publish this cluster's exports (retried)."}),
		invalidRecords: prometheus.NewCounter(prometheus.CounterOpts{Name: "meshfed_federation_invalid_records_total",
			Help: "Records in etcd that failed to decode or validate and were ignored."}),
		services: prometheus.NewGauge(prometheus.GaugeOpts{Name: "meshfed_federation_imported_services",
			Help: "Services in the import view."}),
		staleClusters: prometheus.NewGauge(prometheus.GaugeOpts{Name: "meshfed_federation_stale_clusters",
			Help: "Clusters with exports but no heartbeat (kept during the grace period)."}),
		viewBuilds: prometheus.NewCounter(prometheus.CounterOpts{Name: "meshfed_federation_view_builds_total",
			Help: "Import view rebuilds."}),
		viewBuildSecs: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "meshfed_federation_view_build_seconds",
			Help: "Time to rebuild the import view after a change.", Buckets: prometheus.ExponentialBuckets(0.00005, 4, 10)}),
		viewRevision: prometheus.NewGauge(prometheus.GaugeOpts{Name: "meshfed_federation_view_revision",
			Help: "etcd revision the import view reflects."}),
		heartbeatUp: prometheus.NewGauge(prometheus.GaugeOpts{Name: "meshfed_federation_heartbeat_up",
			Help: "1 while this cluster's heartbeat key is held in etcd."}),
		watchUp: prometheus.NewGauge(prometheus.GaugeOpts{Name: "meshfed_federation_etcd_watch_up",
			Help: "1 while the etcd watch is established."}),
		resyncs: prometheus.NewCounter(prometheus.CounterOpts{Name: "meshfed_federation_etcd_resyncs_total",
			Help: "Full re-lists of the keyspace after etcd compacted past the watch."}),
		clusterStale: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "meshfed_federation_cluster_stale",
			Help: "1 for each other cluster whose heartbeat is gone while its exports are kept (grace running)."}, []string{"cluster"}),
		propagation: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "meshfed_federation_propagation_seconds",
			Help:    "Time from another cluster writing an export (its updatedAt) to this mirror receiving it; includes clock skew between the two clusters.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}}),
		leader: prometheus.NewGauge(prometheus.GaugeOpts{Name: "meshfed_federation_leader",
			Help: "1 while this replica publishes exports and holds the heartbeat (always 1 without --leader-elect)."}),
	}
	if reg != nil {
		reg.MustRegister(m.published, m.publishErrors, m.invalidRecords, m.services, m.staleClusters,
			m.viewBuilds, m.viewBuildSecs, m.viewRevision, m.heartbeatUp, m.watchUp, m.resyncs, m.leader, m.clusterStale, m.propagation)
	}
	return m
}
