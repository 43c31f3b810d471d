// Package harness starts a federation of N simulated clusters in one process: one embedded
// etcd, and per cluster a federation service, an east-west gateway on its own loopback
// address (127.<10+i>.0.1), and an exports file. Every end-to-end test and `meshfed dev up`
// build on it, so the parts are always exercised together the same way. It uses the real
// parts (etcd server, TCP, TLS), never fakes.
package harness
