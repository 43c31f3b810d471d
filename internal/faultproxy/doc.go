// Package faultproxy stands between clients and a TCP server (a test's east-west gateway)
// and injects the network faults the failover tests need, in user space (no root, no
// network namespaces): Kill closes the listener and resets every connection (what clients
// see when the gateway host dies), Blackhole stalls every connection and accepts new ones
// without ever answering (packets dropped), Restore brings it back on the same address.
package faultproxy
