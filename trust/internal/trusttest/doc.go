// Package trusttest runs simulated clusters for trust tests: a real embedded etcd, one
// federate.Service per cluster with its heartbeat and cluster record, and workloads that
// hold dev CA SVIDs (renewed on issuer switch) and do real mTLS handshakes verified
// through the federated bundles.
package trusttest
