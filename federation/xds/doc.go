// Package xds is the federation service's xDS server (go-control-plane, ADS; state of the
// world for proxyless gRPC, delta or SotW for Envoy). It turns the import view into
// failover-aware clusters, endpoints, listeners and routes for the data planes of this
// cluster, and the local exports into the east-west gateway's route table. See
// docs/xds.md for the resources, names, priorities and bootstraps.
package xds
