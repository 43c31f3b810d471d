// Package tlstest makes the TLS material the gateway's tests need: real ClientHellos
// captured from crypto/tls, a Chrome-like hello with ECH GREASE, certificates, and ECH
// configurations. It is imported by tests only.
package tlstest
