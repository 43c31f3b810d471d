// Package expiry keeps the expiry of trust roots visible: a Prometheus gauge of the seconds
// left for every root of the federated set, and the warnings `meshfed status` prints below
// WarnBefore (roots in etcd, certificate files). The certificates a process itself uses
// (gateway, health check, etcd client) are internal/certexpiry's gauge. A root that expires
// unnoticed has caused several mesh outages (Istio, Linkerd); this is the guard.
package expiry
