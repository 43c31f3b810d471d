// Package agent is one federation process, embeddable: the federation service (publisher,
// heartbeat, import view), the gateway health checker, the failover-aware xDS server, and
// optionally the trust component, wired together the one way they always are. The
// `meshfed federation` command, the in-process harness of simulated clusters and
// `meshfed dev up` all run an Agent, so what the tests exercise is what users run (the
// way etcd's server/main.go is a shim over server/embed).
package agent
