// Command benchload is the load generator and measuring side of bench/10-gateway.sh. It
// runs the backends every proxy under test points at, then drives each target in turn
// (direct, meshfed, HAProxy, nginx) through the same phases and prints one table:
//
//	latency   sequential connections: TCP + TLS handshake + 32-byte echo + close (p50/p99)
//	conns     the same at concurrency --conc for --conn-time: connections per second
//	bulk      one ClientHello then raw bytes on --streams streams for --bulk-time (no
//	          crypto after the hello, so the proxy's data path is what is measured)
//	idle      --idle connections held open and idle: RSS, file descriptors and kernel slab
//	          growth of the proxy process(es) per connection
//
// Proxy CPU time comes from /proc/<pid>/stat (utime+stime of every pid given).
package main
