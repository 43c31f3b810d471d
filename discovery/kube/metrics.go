package kube

import (
	"fmt"

	"github.com/hashicorp/go-multierror"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshfed/meshfed/api/validate"
)

type sourceMetrics struct {
	exports      *prometheus.GaugeVec
	snapshots    prometheus.Counter
	statusWrites *prometheus.CounterVec
}

func newSourceMetrics(reg prometheus.Registerer) (*sourceMetrics, error) {
	m := &sourceMetrics{
		exports: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "meshfed_kube_source_exports",
			Help: "ServiceExports seen, by state (valid: exported; invalid: Valid=False).",
		}, []string{"state"}),
		snapshots: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meshfed_kube_source_snapshots_total",
			Help: "Export snapshots handed to the publisher.",
		}),
		statusWrites: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshfed_kube_source_status_writes_total",
			Help: "ServiceExport status updates, by result (ok, conflict, error).",
		}, []string{"result"}),
	}
	return m, register(reg, m.exports, m.snapshots, m.statusWrites)
}

type importerMetrics struct {
	objects    *prometheus.GaugeVec
	writes     *prometheus.CounterVec
	missingNS  prometheus.Gauge
	noGateways prometheus.Gauge
	passes     *prometheus.CounterVec
	duration   prometheus.Histogram
	revision   prometheus.Gauge
}

func newImporterMetrics(reg prometheus.Registerer) (*importerMetrics, error) {
	m := &importerMetrics{
		objects: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "meshfed_kube_importer_objects",
			Help: "Objects the importer keeps, by kind (ServiceImport, EndpointSlice, Gateway).",
		}, []string{"kind"}),
		writes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshfed_kube_importer_writes_total",
			Help: "Kubernetes writes by the importer, by kind, verb and result.",
		}, []string{"kind", "verb", "result"}),
		missingNS: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "meshfed_kube_importer_missing_namespaces",
			Help: "Namespaces that imported services need but that do not exist here (meshfed does not create namespaces).",
		}),
		noGateways: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "meshfed_kube_importer_clusters_without_gateways",
			Help: "Exporting clusters with no cluster record (no gateway address): their endpoints cannot be imported.",
		}),
		passes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshfed_kube_importer_passes_total",
			Help: "Reconcile passes, by result (ok, error).",
		}, []string{"result"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "meshfed_kube_importer_pass_seconds",
			Help:    "Duration of one reconcile pass.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 8),
		}),
		revision: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "meshfed_kube_importer_view_revision",
			Help: "etcd revision of the import view last applied without error.",
		}),
	}
	return m, register(reg, m.objects, m.writes, m.missingNS, m.noGateways, m.passes, m.duration, m.revision)
}

func register(reg prometheus.Registerer, cs ...prometheus.Collector) error {
	if reg == nil {
		return nil
	}
	errs := validate.NewList()
	for _, c := range cs {
		errs = multierror.Append(errs, reg.Register(c))
	}
	if err := errs.ErrorOrNil(); err != nil {
		return fmt.Errorf("register kube metrics: %w", err)
	}
	return nil
}
