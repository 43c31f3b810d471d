#!/usr/bin/env bash
# The HBONE interop test (this directory, docs/istio.md "Ambient"): Istio's own HBONE code
# (istio.io/istio/pkg/hbone, the pseudo-version pinned in go.mod here) as east's source
# ztunnel, through a real `meshfed gateway` process, to a destination ztunnel and app.
#
#   hack/interop/hbone/run.sh                # fetch modules if needed, build meshfed, run
#   hack/interop/hbone/run.sh --cached-only  # the same, but skip (and say so) when the
#                                            # modules are not in the module cache yet
#
# This is its own module: istio.io/istio's dependency tree never enters meshfed's go.mod,
# and the test imports nothing of meshfed (it runs the binary). Cost: a cold compile of the
# module's packages is ~50 CPU-seconds (measured here), then cached; the test runs in ~2 s.
# Only messages go to stderr; go test's output goes to stdout.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
cd "$here"
# GOFLAGS from the caller (e.g. -race) must not leak in; GOWORK=off keeps a workspace in a
# parent directory out.
export GOFLAGS=-mod=readonly GOWORK=off

if [ "${1:-}" = --cached-only ]; then
  if ! GOPROXY=off go list -deps -test . >/dev/null 2>&1; then
    echo "HBONE interop (Istio pkg/hbone -> meshfed gateway) SKIPPED: its modules are not in the module cache; hack/interop/hbone/run.sh fetches them (istio.io/istio, the same pin as hack/testbins/istiod)" >&2
    exit 0
  fi
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
(cd "$root" && GOFLAGS= go build -o "$tmp/meshfed" ./cmd/meshfed)
MESHFED_BIN="$tmp/meshfed" go test -count=1 ${HBONE_INTEROP_TESTFLAGS:-} .
