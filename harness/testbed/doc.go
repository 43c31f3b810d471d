// Package testbed runs a clusterset on real networks: every simulated cluster and every
// etcd member in its own Linux network namespace with an address in 198.18.0.0/15, all
// joined by a bridge in the root namespace, with nftables rules so that the only paths
// between clusters are the east-west gateways (and each cluster's path to etcd). The
// processes are the real `meshfed` binary (etcd members, federation services, gateways,
// demo workloads and proxyless grpc-go clients), started inside the namespaces.
//
// Faults come from the network itself (a blackholed or resetting gateway, packet loss,
// a partition from etcd or from one peer) or from killing processes, and the package
// measures what the clients saw. It needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN); where
// namespaces cannot be created, Available says why and tests skip. Everything a testbed
// creates carries its slot's name and is removed by Close; a run that was killed is
// cleaned up by the next one (docs/testbed.md).
package testbed
