package eastwest

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Rejection reasons: the label values of meshfed_gateway_rejected_total.
const (
	ReasonNotTLS          = "not_tls"
	ReasonHelloTooLarge   = "hello_too_large"
	ReasonHelloTimeout    = "hello_timeout"
	ReasonMalformedHello  = "malformed_hello"
	ReasonClientClosed    = "client_closed"
	ReasonNoSNI           = "no_sni"
	ReasonUnknownSNI      = "unknown_sni"
	ReasonNoReadyEndpoint = "no_ready_endpoint"
	ReasonLimit           = "limit"
	ReasonServiceLimit    = "service_limit"
	ReasonUpstreamFailed  = "upstream_failed"
	ReasonDraining        = "draining"
	ReasonHealthHandshake = "health_handshake"

	// HBONE listener (protocol="hbone"): the handshake, then each CONNECT stream.
	ReasonHandshake        = "handshake"         // TLS handshake failed or timed out (not a certificate problem)
	ReasonNoClientCert     = "no_client_cert"    // the caller presented no certificate
	ReasonUntrustedClient  = "untrusted_client"  // its certificate is no SVID of an allowed, federated trust domain
	ReasonNotH2            = "not_h2"            // ALPN did not select h2
	ReasonMethod           = "method"            // not CONNECT (405)
	ReasonIPAuthority      = "ip_authority"      // :authority is an IP literal (400)
	ReasonBadAuthority     = "bad_authority"     // :authority is not <svc>.<ns>.svc.<domain>:<port> (400)
	ReasonUnknownAuthority = "unknown_authority" // names no exported service port here (404)
	ReasonNoHBONEEndpoint  = "no_hbone_endpoint" // ready endpoints, none with an HBONE port (503)
)

// Protocols: the label values of the protocol label.
const (
	ProtocolSNI   = "sni"   // TLS passthrough routed by SNI (--listen)
	ProtocolHBONE = "hbone" // HTTP/2 CONNECT over mTLS (--hbone-listen)
)

// Connection results: the label values of meshfed_gateway_connections_total.
const (
	ResultOK          = "ok"           // both sides closed cleanly
	ResultIdleTimeout = "idle_timeout" // closed after --idle-timeout without traffic
	ResultError       = "error"        // a read or write failed (reset, broken pipe)
	ResultDrained     = "drained"      // cut at the end of --drain-timeout
)

type metrics struct {
	active      *prometheus.GaugeVec
	conns       *prometheus.CounterVec
	bytes       *prometheus.CounterVec
	rejected    *prometheus.CounterVec
	helloSecs   prometheus.Histogram
	parseSecs   prometheus.Histogram
	connectSecs prometheus.Histogram
	connectErrs *prometheus.CounterVec
	ejections   *prometheus.CounterVec
	routes      prometheus.Gauge
	updates     prometheus.Counter
	reloads     *prometheus.CounterVec
	draining    prometheus.Gauge
	health      *prometheus.CounterVec
	open        prometheus.Gauge
}

// syncedCollector brings its values up to date (sync) before each scrape collects them:
// the byte counters of connections in the kernel path live in a BPF map until then.
type syncedCollector struct {
	prometheus.Collector
	sync func()
}

func (s syncedCollector) Collect(ch chan<- prometheus.Metric) {
	s.sync()
	s.Collector.Collect(ch)
}

// newMetrics registers the gateway's metrics; syncBytes runs before bytes_total is
// collected.
func newMetrics(reg prometheus.Registerer, syncBytes func()) *metrics {
	const ns, sub = "meshfed", "gateway"
	m := &metrics{
		active: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "connections_active",
			Help: "Proxied connections (HBONE: tunnels) open now, by service (namespace/name) and protocol (sni, hbone)."}, []string{"service", "protocol"}),
		conns: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "connections_total",
			Help: "Proxied connections (HBONE: tunnels) closed, by service, protocol and result (ok, idle_timeout, error, drained)."}, []string{"service", "protocol", "result"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "bytes_total",
			Help: "Bytes proxied, by service, protocol and direction (in: client to backend, out: backend to client; HBONE: the tunnelled stream's bytes)."}, []string{"service", "protocol", "direction"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "rejected_total",
			Help: "Connections (HBONE: handshakes and CONNECT streams) refused without being proxied, by protocol and reason."}, []string{"protocol", "reason"}),
		helloSecs: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub, Name: "hello_read_seconds",
			Help: "Time from accept to a complete ClientHello (network wait included).", Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10)}),
		parseSecs: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub, Name: "hello_parse_seconds",
			Help: "CPU time to reassemble and parse the last read of a ClientHello.", Buckets: prometheus.ExponentialBuckets(0.000001, 4, 8)}),
		connectSecs: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub, Name: "upstream_connect_seconds",
			Help: "Time to connect to the chosen endpoint (successful attempts).", Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10)}),
		connectErrs: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "upstream_connect_failures_total",
			Help: "Failed connection attempts to endpoints, by service (each is retried on another endpoint)."}, []string{"service"}),
		ejections: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "endpoint_ejections_total",
			Help: "Endpoints taken out of rotation after a failed connect, by service."}, []string{"service"}),
		routes: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "routes",
			Help: "Service ports in the route table in force."}),
		updates: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "route_table_updates_total",
			Help: "Route tables put in force."}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "route_source_reloads_total",
			Help: "Route source reload attempts, by result (ok, invalid)."}, []string{"result"}),
		draining: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "draining",
			Help: "1 while the gateway drains (health name failing, no new connections)."}),
		health: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "health_checks_total",
			Help: "Health-name connections answered, by status line (ok, draining, not_ready)."}, []string{"status"}),
		open: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "connections_open",
			Help: "Client connections and HBONE tunnels held now, in any phase (hello, health, proxied): what the connection limit bounds."}),
	}
	reg.MustRegister(m.active, m.conns, syncedCollector{m.bytes, syncBytes}, m.rejected, m.helloSecs, m.parseSecs, m.connectSecs, m.connectErrs,
		m.ejections, m.routes, m.updates, m.reloads, m.draining, m.health, m.open)
	return m
}
