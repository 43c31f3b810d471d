#!/usr/bin/env bash
# Builds istiod (pilot-discovery from istio.io/istio, the pseudo-version pinned in go.mod here),
# the real Istio control plane of the Istio interop tier (internal/istiotest), when it is not
# cached, and prints the shell line that points tests at it:
#
#   eval "$(hack/testbins/istiod/ensure.sh)"                 # sets MESHFED_ISTIOD, MESHFED_ISTIO_CRDS
#   eval "$(hack/testbins/istiod/ensure.sh --cached-only)"   # the same, only if built already
#
# MESHFED_ISTIO_CRDS is the pinned istio's own CRD file (manifests/charts/base/files/
# crd-all.gen.yaml), copied beside the binary: istiod with a `k8s://` config source watches
# them on the kube-apiserver the tests give it.
#
# Only `export ...` lines go to stdout; every message goes to stderr. istio.io/istio is its own
# module tree (its own k8s.io, grpc and envoy versions), so it builds in this wrapper module,
# never in meshfed's go.mod (meshfed itself needs only istio.io/api).
#
# Cache: ${MESHFED_TESTBINS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/meshfed-testbins}/istiod-<hash>/
# keyed by this directory's go.mod and go.sum and the ldflags below. The cold build time is in
# docs/istio.md ("Testing against a real istiod"); a cached run returns at once.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
cd "$here"

# istiod reports this as its version (istiod's /version, the xDS server's identity); without it
# the build says "unknown". 1.31-dev is what istio's own Makefile stamps on this commit.
ldflags="-s -w -X istio.io/istio/pkg/version.buildVersion=1.31-dev"
ldflags="$ldflags -X istio.io/istio/pkg/version.buildGitRevision=eed52ebb66ad"
ldflags="$ldflags -X istio.io/istio/pkg/version.buildStatus=Clean"

key="$( (cat go.mod go.sum; echo "$ldflags") | sha256sum | cut -c1-16)"
root="${MESHFED_TESTBINS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/meshfed-testbins}"
dir="$root/istiod-$key"
bin="$dir/pilot-discovery"
crds="$dir/crd-all.gen.yaml"

# --cached-only: print the line only when the binary is already built; never build.
if [ "${1:-}" = --cached-only ]; then
  if [ -x "$bin" ] && [ -f "$crds" ]; then
    echo "export MESHFED_ISTIOD=$bin"
    echo "export MESHFED_ISTIO_CRDS=$crds"
  fi
  exit 0
fi

if [ ! -x "$bin" ] || [ ! -f "$crds" ]; then
  mkdir -p "$dir"
  # One builder at a time per cache dir: parallel test runs would race on the output file.
  exec 9>"$dir/.lock"
  flock 9
  if [ ! -x "$bin" ]; then
    echo "testbins: building istiod (pilot-discovery) into $dir" >&2
    start=$(date +%s)
    # GOFLAGS from the caller (e.g. -race) must not leak into this build; GOWORK=off keeps a
    # workspace in a parent directory from pulling this module into it.
    GOFLAGS=-mod=readonly GOWORK=off CGO_ENABLED=0 \
      go build -trimpath -ldflags "$ldflags" -o "$bin.tmp" istio.io/istio/pilot/cmd/pilot-discovery >&2
    mv "$bin.tmp" "$bin"
    echo "testbins: built istiod in $(( $(date +%s) - start ))s" >&2
  fi
  if [ ! -f "$crds" ]; then
    src="$(GOFLAGS=-mod=readonly GOWORK=off go list -m -f '{{.Dir}}' istio.io/istio)"
    cp "$src/manifests/charts/base/files/crd-all.gen.yaml" "$crds.tmp"
    chmod 0644 "$crds.tmp"
    mv "$crds.tmp" "$crds"
  fi
fi

echo "export MESHFED_ISTIOD=$bin"
echo "export MESHFED_ISTIO_CRDS=$crds"
