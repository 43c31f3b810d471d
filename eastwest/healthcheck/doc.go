// Package healthcheck is a client of the gateway's health name for tools and tests (the
// gateway demo, the command tests): Probe checks one gateway address once. Remote
// clusters' federation services check gateways with federation/health, over the same
// wire (api/healthwire). The wire behaviour (documented in
// docs/eastwest.md) is: TLS with SNI health.meshfed.internal, read one line, "ok" first
// word means healthy; anything else, including a refused or cut connection, is not.
package healthcheck
