#!/usr/bin/env bash
# make test: builds (or reuses) the binaries the Kubernetes tier needs, then runs the whole
# suite with the race detector. MESHFED_SKIP_KUBE=1 skips the kube-apiserver tier.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${MESHFED_SKIP_KUBE:-0}" != 1 ] && [ -x hack/testbins/ensure.sh ]; then
  # ensure.sh prints `export VAR=...` lines naming the binaries it built or found cached.
  eval "$(hack/testbins/ensure.sh)"
fi
# helm, kustomize and promtool for the deploy/ tests (Go module proxy, built once, cached).
eval "$(hack/tools/ensure.sh)"
go test -race -timeout 14m ./...
