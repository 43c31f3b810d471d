// Package istiotest runs a real istiod (pilot-discovery of the pinned istio.io/istio, built
// and cached by hack/testbins/istiod/ensure.sh, which `make test` runs) for tests, against a
// real kube-apiserver of internal/kubetest, on loopback ports: no webhooks, no CA, no secure
// xDS port. It also connects to istiod's plaintext xDS port as an Envoy sidecar would
// (Sidecar), so tests assert on the clusters and endpoints istiod really sends, and as an
// ambient ztunnel would (Ztunnel: delta xDS, wildcard WDS; the resources stay undecoded,
// their Go types being in istio's own module: hack/interop/ambient decodes them). Without
// the binary, Start skips the test and says how to get it.
package istiotest
