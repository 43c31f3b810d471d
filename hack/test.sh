#!/usr/bin/env bash
# make test: builds (or reuses) the binaries the Kubernetes tier needs, then runs the whole
# suite with the race detector. MESHFED_SKIP_KUBE=1 skips the kube-apiserver tier;
# MESHFED_SPIRE=1 builds spire-server for the SPIRE interop test (long: see below);
# MESHFED_SKIP_ISTIOD=1 skips building istiod for the Istio tier.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${MESHFED_SKIP_KUBE:-0}" != 1 ] && [ -x hack/testbins/ensure.sh ]; then
  # ensure.sh prints `export VAR=...` lines naming the binaries it built or found cached.
  eval "$(hack/testbins/ensure.sh)"
fi
# spire-server, the trust interop test's peer: its cold build is far too long for every
# `make test` (hack/testbins/spire/ensure.sh), so it is used when cached and built only with
# MESHFED_SPIRE=1; otherwise TestSPIREInterop skips, and says so here.
if [ "${MESHFED_SPIRE:-0}" = 1 ]; then
  eval "$(hack/testbins/spire/ensure.sh)"
else
  spire="$(hack/testbins/spire/ensure.sh --cached-only)"
  if [ -n "$spire" ]; then
    eval "$spire"
  else
    echo "make test: spire-server not cached, TestSPIREInterop will skip (MESHFED_SPIRE=1 make test builds it)" >&2
  fi
fi
# istiod, the Istio tier's peer (internal/istiotest): built when absent, like kube-apiserver.
# Its cold build is ~22 CPU-minutes (docs/istio.md, "Testing against a real istiod"), which
# keeps a cold .ci/run under an hour now that promtool comes from Debian.
# MESHFED_SKIP_ISTIOD=1 skips it (the Istio tests then skip).
if [ "${MESHFED_SKIP_KUBE:-0}" != 1 ] && [ "${MESHFED_SKIP_ISTIOD:-0}" != 1 ]; then
  eval "$(hack/testbins/istiod/ensure.sh)"
fi
# helm, kustomize and promtool for the deploy/ tests (Go module proxy, built once, cached).
eval "$(hack/tools/ensure.sh)"
go test -race -timeout 14m ./...
# The gateway suite once more in the other copy mode: the run above used the default
# (poll-splice); this one sockmap (it skips, saying why, where this machine cannot run it).
MESHFED_GATEWAY_COPY_MODE=sockmap go test -race -timeout 5m ./eastwest/
# HBONE interop with Istio's own HBONE code (hack/interop/hbone, a nested module so that
# istio.io/istio's dependencies stay out of meshfed's go.mod): runs when its modules are in
# the module cache (istiod's ensure.sh above fetches the same istio pin), else says it skips.
hack/interop/hbone/run.sh --cached-only
# Istio ambient against the real istiod (hack/interop/ambient, a nested module for istio's
# workload API types): istiod's WDS for what meshfed's --istio-ambient writes, read by a fake
# ztunnel. Runs when its modules are cached and istiod and kube-apiserver are set above (or
# istiod is cached), else says it skips.
hack/interop/ambient/run.sh --cached-only
