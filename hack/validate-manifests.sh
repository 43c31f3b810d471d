#!/usr/bin/env bash
# Validates everything under deploy/ on its own (what `make test` covers through
# `go test ./deploy/`): builds or reuses helm, kustomize and promtool (hack/tools/ensure.sh)
# and kube-apiserver (hack/testbins/ensure.sh, skipped with MESHFED_SKIP_KUBE=1), then runs
# the deploy tests. Extra arguments go to `go test` (e.g. -v, -run TestHelmMatchesKustomize).
# What is checked: docs/deploy.md, "How validation works".
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(hack/tools/ensure.sh)"
if [ "${MESHFED_SKIP_KUBE:-0}" != 1 ] && [ -x hack/testbins/ensure.sh ]; then
  eval "$(hack/testbins/ensure.sh)"
fi
exec go test -count=1 "$@" ./deploy/
