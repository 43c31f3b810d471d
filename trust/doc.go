// Package trust holds the SPIFFE trust bundle of meshfed: parsing and validating bundles
// (PEM roots or SPIFFE JSON bundles), their canonical form and digest, and immutable sets
// of federated bundles that the outputs (files, SDS, bundle endpoint, health checks) read.
//
// Subpackages do the rest: devca is the development CA, source reads a cluster's own
// bundle (file, Workload API, bundle endpoint, dev CA), federate syncs bundles through etcd
// and writes them out, rotation runs root rotation jobs, expiry watches certificate expiry.
package trust
