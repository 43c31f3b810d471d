// Package xdsroutes is the east-west gateway's route source fed by this cluster's
// federation service over xDS (gRPC, ADS, state of the world). It subscribes to the
// gateway contract of docs/xds.md (inbound CDS clusters, one per exported service port,
// and their EDS endpoints), turns them into a plain eastwest.RouteTable, and keeps the
// last good table when the federation is unreachable or sends something unusable
// (static stability: the data plane never depends on the control plane being up),
// optionally across restarts too (a cache file). TLS to the federation is optional
// (TLSFiles). See docs/eastwest.md, "Routes from the federation".
//
// It talks to the control plane over the wire only: nothing here imports federation/,
// discovery/, trust/ or keyspace/ (internal/layers enforces it).
package xdsroutes
