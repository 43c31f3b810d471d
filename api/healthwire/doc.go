// Package healthwire is the wire format of the east-west gateway's health name,
// health.meshfed.internal, shared by the gateway, the federation's health checker and the
// operator tools: after a TLS handshake with that SNI the gateway writes one line,
//
//	<status> key=value ...      e.g. "ok cluster=west service_ports=3 ready_endpoints=7 open_connections=12"
//
// where status is ok, draining or not-ready and only "ok" is healthy. Readers ignore keys
// and tokens they do not know, so a newer gateway never fails an older checker.
package healthwire
