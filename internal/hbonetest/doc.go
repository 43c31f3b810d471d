// Package hbonetest is a small HBONE peer for tests, built on golang.org/x/net/http2 and
// crypto/tls: a source ztunnel's client (Dial: mTLS with an SVID, ALPN h2, one HTTP/2
// CONNECT; DialInner: the second, inner HBONE layer over that stream) and a destination
// "ztunnel" (StartZtunnel: mTLS with the destination workload's SVID, HTTP/2 CONNECT,
// forwarding each stream to an app). Istio's own implementation (istio.io/istio/pkg/hbone)
// is the other peer, in a nested module; this one needs nothing beyond meshfed's go.mod.
package hbonetest
