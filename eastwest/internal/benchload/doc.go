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
//
// bench/11-gateway-cost.sh runs its cost subcommand (fixed work per target, counted) and
// three floors beside the proxies: floor (accept, connect, hand both sockets to the
// kernel's sockmap redirect), relay (one thread, one epoll set, raw non-blocking system
// calls: the least a user-space relay process costs) and, with cost --kernel-floor, the
// kernel's share of the second TCP connection alone (kernelFloor); with RATES, its rate
// subcommand (each target at fixed open-loop connection rates, and idle).
package main
