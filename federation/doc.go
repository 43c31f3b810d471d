// Package federation is meshfed's control plane: the typed etcd store of the keyspace
// (records, store), the federation service that publishes this cluster's exports and
// merges everyone's into the import view, the failover planner and the xDS server that
// feeds local data planes. See docs/federation.md and docs/xds.md.
package federation
