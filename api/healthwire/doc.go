// Package healthwire is the wire format of the east-west gateway's health name,
// health.meshfed.internal, shared by the gateway, the federation's health checker and the
// operator tools: after a TLS handshake with that SNI the gateway writes one line,
//
//	<status> key=value ...      e.g. "ok cluster=west service_ports=3 ready_endpoints=7 open_connections=12"
//
// where status is ok, draining or not-ready and only "ok" is healthy. Readers ignore keys
// and tokens they do not know, so a newer gateway never fails an older checker.
//
// Stream mode: a checker that offers the ALPN protocol StreamALPN in its ClientHello, and a
// gateway that selects it, keep the connection open. The checker then writes a ping line
// (Ping) whenever it wants a status, and the gateway answers each ping, in order, with one
// status line as above. One connection then carries a check every few hundred
// milliseconds, and a lost packet is retransmitted by TCP instead of failing a check. A
// gateway that does not know StreamALPN selects no protocol and answers one line and
// closes, as before; a checker that sees no protocol selected reads that line and goes on
// with one connection per check.
package healthwire
