// Package hbone is the HBONE interop test (docs/istio.md, "Ambient"): Istio's own HBONE
// code (istio.io/istio/pkg/hbone, its double dialer) plays the source ztunnel of an
// ambient cluster and dials a real `meshfed gateway` process over HBONE, through to a
// destination "ztunnel" that terminates the inner mTLS with the destination workload's
// SVID and forwards to the app.
//
// It is its own module so that istio.io/istio's dependency tree never enters meshfed's
// go.mod; it does not import meshfed either (it runs the binary named by $MESHFED_BIN).
// run.sh builds that binary and runs the test; `make test` calls run.sh when the module's
// dependencies are already in the module cache and says so when it skips.
package hbone
