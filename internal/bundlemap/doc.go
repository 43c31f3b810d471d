// Package bundlemap reads the SPIFFE bundle map that `meshfed federation --bundle-dir`
// writes (bundle-map.json: {"trust_domains": {"<td>": <SPIFFE bundle JWKS>}}), each bundle
// parsed by go-spiffe's spiffebundle as trust/ parses bundles, so that a data-plane
// process (the gateway's HBONE listener) verifies callers against the federated set
// without linking trust/, the keyspace or an etcd client.
package bundlemap
