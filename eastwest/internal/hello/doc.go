// Package hello reads a TLS ClientHello off a connection without terminating TLS: it
// reassembles the handshake message across TLS records (and TCP segments), caps its size,
// and extracts what the gateway routes on (SNI, ALPN, presence of ECH). The bytes read are
// kept so the caller can replay them unchanged to the chosen backend.
package hello
