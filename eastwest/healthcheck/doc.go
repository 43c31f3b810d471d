// Package healthcheck is the client side of the gateway's health name: a remote cluster's
// health checker calls Probe against a gateway address. The wire behaviour (documented in
// docs/eastwest.md) is: TLS with SNI health.meshfed.internal, read one line, "ok" first
// word means healthy; anything else, including a refused or cut connection, is not.
package healthcheck
