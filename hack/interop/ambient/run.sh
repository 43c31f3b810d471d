#!/usr/bin/env bash
# The Istio ambient test against a real istiod (this directory, docs/istio.md "Ambient"):
# istiod in ambient mode reads what meshfed's federation (--istio-ambient) writes to a real
# kube-apiserver, and the test, posing as ztunnel, decodes istiod's WDS with istio's own
# workload API types (istio.io/istio/pkg/workloadapi, the pseudo-version pinned here, the
# same as hack/testbins/istiod).
#
#   hack/interop/ambient/run.sh                # fetch modules if needed, build istiod and
#                                              # kube-apiserver if needed, run
#   hack/interop/ambient/run.sh --cached-only  # the same, but skip (and say so) when the
#                                              # modules are not cached, or istiod or
#                                              # kube-apiserver are neither in the
#                                              # environment (hack/test.sh sets them) nor
#                                              # (istiod) cached
#
# Its own module: istio.io/istio's dependency tree never enters meshfed's go.mod; meshfed
# comes from this repository (replace ../../..). Extra go test flags:
# AMBIENT_INTEROP_TESTFLAGS (e.g. -v, -race). Only messages go to stderr; go test's output
# goes to stdout.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../../.." && pwd)"

if [ "${1:-}" = --cached-only ]; then
  # GOFLAGS from the caller (e.g. -race) must not leak in; GOWORK=off keeps a workspace out.
  if ! out="$(cd "$here" && GOFLAGS=-mod=readonly GOWORK=off GOPROXY=off go list -deps -test . 2>&1 >/dev/null)"; then
    if grep -q "missing go.sum entry\|updates to go.mod needed" <<<"$out"; then
      # meshfed's own go.mod changed (this module takes meshfed from the repository).
      echo "Istio ambient WDS test (real istiod, hack/interop/ambient) SKIPPED: its go.mod/go.sum are stale after a change to meshfed's go.mod; run (cd hack/interop/ambient && GOWORK=off go mod tidy) and commit them" >&2
    else
      echo "Istio ambient WDS test (real istiod, hack/interop/ambient) SKIPPED: its modules are not in the module cache; hack/interop/ambient/run.sh fetches them (istio.io/istio, the same pin as hack/testbins/istiod)" >&2
    fi
    exit 0
  fi
  # The binaries: as hack/test.sh exported them, or istiod from its cache.
  if [ -z "${MESHFED_ISTIOD:-}" ]; then
    eval "$("$root/hack/testbins/istiod/ensure.sh" --cached-only)"
  fi
  if [ -z "${MESHFED_ISTIOD:-}" ] || [ -z "${MESHFED_KUBE_APISERVER:-}" ]; then
    echo "Istio ambient WDS test (real istiod, hack/interop/ambient) SKIPPED: \$MESHFED_ISTIOD or \$MESHFED_KUBE_APISERVER is not set (eval \"\$(hack/testbins/ensure.sh)\"; eval \"\$(hack/testbins/istiod/ensure.sh)\" build or find them)" >&2
    exit 0
  fi
else
  # Fetch the modules the test needs (the module proxy), then build or find the binaries.
  (cd "$here" && GOFLAGS=-mod=readonly GOWORK=off go list -deps -test . >/dev/null)
  eval "$("$root/hack/testbins/ensure.sh")"
  eval "$("$root/hack/testbins/istiod/ensure.sh")"
fi

cd "$here"
export GOFLAGS=-mod=readonly GOWORK=off
go test -count=1 -timeout 10m ${AMBIENT_INTEROP_TESTFLAGS:-} .
