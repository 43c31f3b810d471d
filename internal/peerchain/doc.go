// Package peerchain verifies a TLS peer's certificate chain against a set of roots without
// a host name: for peers whose identity is a SPIFFE ID (URI SAN only) or whose name is not
// what the caller dialed, where crypto/tls's own verification cannot be used.
package peerchain
