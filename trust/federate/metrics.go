package federate

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshfed/meshfed/trust"
	"github.com/meshfed/meshfed/trust/expiry"
)

type metrics struct {
	bundles      prometheus.Gauge
	sequence     *prometheus.GaugeVec
	rejected     *prometheus.CounterVec
	publishes    *prometheus.CounterVec
	publishBlock prometheus.Gauge
	outputErrors *prometheus.CounterVec
	acks         prometheus.Counter
	// rotationPhase: unix time the running rotation job of a trust domain entered its phase.
	rotationPhase *prometheus.GaugeVec
}

func newMetrics(reg prometheus.Registerer, set func() *trust.Set) *metrics {
	m := &metrics{
		bundles: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "meshfed_trust_bundles", Help: "Trust domains in the federated set this cluster writes out."}),
		sequence: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "meshfed_trust_bundle_sequence", Help: "Sequence of the bundle in force per trust domain."}, []string{"trust_domain"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshfed_trust_bundle_rejected_total", Help: "Bundle records rejected (the last good bundle stays), by reason."}, []string{"trust_domain", "reason"}),
		publishes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshfed_trust_publish_total", Help: "Attempts to publish the cluster's own bundle, by result (published, unchanged, refused, error; shared: the cluster shares another member's trust domain and only read it)."}, []string{"result"}),
		publishBlock: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "meshfed_trust_publish_refused", Help: "1 while the cluster's bundle source is refused (a rotation holds the lock, or the source lacks a rotated-in root)."}),
		outputErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshfed_trust_output_errors_total", Help: "Failed writes of the federated set, by output (files, configmap, subscriber)."}, []string{"output"}),
		acks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meshfed_trust_acks_total", Help: "Acks written (a bundle sequence written out to every output)."}),
		rotationPhase: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "meshfed_trust_rotation_phase_entered_timestamp_seconds",
			Help: "Unix time the running root rotation job of a trust domain entered its phase (one series per running job; none when no job runs)."}, []string{"trust_domain", "phase"}),
	}
	if reg != nil {
		reg.MustRegister(m.bundles, m.sequence, m.rejected, m.publishes, m.publishBlock, m.outputErrors, m.acks, m.rotationPhase,
			expiry.NewRootCollector(set))
	}
	return m
}
