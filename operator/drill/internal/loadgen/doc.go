// Package loadgen is the drill's small load generator: at a fixed rate it opens one TLS
// connection per request to the address a Router picks (so every request sees the
// current failover decision), sends one line and reads one line back. Demo workloads
// answer "<cluster> <workload>: <line>", so each result names the cluster that served it.
package loadgen
