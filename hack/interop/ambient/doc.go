// Package ambient is the Istio ambient test against a real istiod (docs/istio.md,
// "Ambient"): istiod runs with PILOT_ENABLE_AMBIENT=true against a real kube-apiserver
// where meshfed's federation (--istio-ambient) writes the istio-remote Gateways and the
// ambient ServiceEntries and WorkloadEntries; the test poses as ztunnel (a delta-xDS client
// of istiod's WDS, internal/istiotest.Ztunnel) and decodes what istiod sends with istio's
// own workload API types (istio.io/istio/pkg/workloadapi). It is istiod's output, not
// ztunnel's behaviour: ztunnel (Rust) does not run here.
//
// It is its own module because pkg/workloadapi lives in istio.io/istio's module: that
// dependency tree never enters meshfed's go.mod. meshfed itself comes from the repository
// (replace ../../..), so the test uses meshfed's harness, kubetest and istiotest.
// run.sh runs it; `make test` calls run.sh --cached-only, which skips (and says so) when
// the module's dependencies or the istiod and kube-apiserver binaries are not cached.
package ambient
