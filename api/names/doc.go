// Package names builds and parses the names that tie meshfed's parts together: the TLS
// SNI a client sends to a remote east-west gateway (Istio AUTO_PASSTHROUGH compatible),
// the xDS cluster and listener names, and the reserved gateway health name.
package names
