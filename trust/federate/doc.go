// Package federate is the trust part of a cluster's federation service. It publishes the
// cluster's own bundle (from its source) to bundles/<td> in etcd, mirrors every trust
// domain's bundle from etcd, writes the whole federated set out (PEM per trust domain and a
// SPIFFE bundle map file, a Kubernetes ConfigMap, a SPIFFE bundle endpoint, and subscribers
// such as the xDS server's SDS and the health checker), and acks what it has written out
// at acks/<cluster>/bundles/<td>, which rotation jobs wait for.
package federate
