// Package eastwest is the east-west gateway: it accepts TLS connections from other
// clusters, reads the SNI of each ClientHello without terminating TLS, routes the
// connection to a ready endpoint of the exported service that name denotes, and splices
// the bytes both ways. Names of services this cluster does not export are refused, so the
// gateway is never an open relay. One reserved name, health.meshfed.internal, is answered
// by the gateway itself so remote clusters can health-check it.
//
// The route table comes from a RouteSource (an exports file, FileSource, or this
// cluster's federation service over xDS, eastwest/xdsroutes); the gateway only ever sees
// the plain RouteTable. eastwest/process runs a whole gateway process.
package eastwest
