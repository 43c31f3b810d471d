// Package operator is the logic behind meshfed's operator commands: join and leave
// (cluster records, per-cluster etcd users and roles, audit records), failover policies,
// status gathering (liveness, live gateway probes, exports, bundles and acks, failover
// order from one cluster's point of view) and the drill's lease-bound cordon; the failover
// drill itself (with its load generator that measures the switch) is operator/drill.
// cmd/meshfed only wires flags to it; everything here works on a *store.Store so tests
// drive it against a real embedded etcd.
package operator
