// Package service is the federation service of one cluster: it publishes the cluster's
// exports (from a discovery source) to etcd, keeps the cluster's heartbeat, mirrors the
// whole keyspace with one watch, and merges every cluster's exports into the import view
// that the planner, the xDS server and the Kubernetes importer consume.
//
// Static stability: when etcd is unreachable nothing is cleared; the last view stays.
// A cluster whose heartbeat expires is marked stale and its exports stay in the view for
// the grace period (default 10 min); only then are they dropped from the view (they stay
// in etcd: only their own cluster, or an operator's `meshfed leave`, deletes them).
package service
