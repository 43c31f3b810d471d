// Package federation is meshfed's control plane: the federation service that publishes
// this cluster's exports and keeps the import view current (service), the gateway health
// checker (health), the failover planner (planner), the xDS server that feeds local data
// planes (xds), and the agent that composes them with discovery and trust into one
// federation process (agent). The records, the etcd store and the import view they share
// are the keyspace layer's (keyspace/). See docs/federation.md and docs/xds.md.
package federation
