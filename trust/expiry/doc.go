// Package expiry keeps certificate expiry visible: Prometheus gauges of the seconds left for
// every trust root, the gateway and health-check certificates and the etcd client
// certificate, and the warnings `meshfed status` prints below WarnBefore. A root that
// expires unnoticed has caused several mesh outages (Istio, Linkerd); this is the guard.
package expiry
