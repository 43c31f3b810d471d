#!/usr/bin/env bash
# Builds the test binaries of the Kubernetes tier (kube-apiserver v1.37.2, matching our
# client-go v0.37.2) when they are not cached, and prints the shell lines that point tests at
# them:
#
#   eval "$(hack/testbins/ensure.sh)"   # sets MESHFED_KUBE_APISERVER
#
# Only `export ...` lines go to stdout; every message goes to stderr.
#
# The cache key is a hash of this directory's go.mod and go.sum plus the version and ldflags
# below (not the rest of this script, so editing comments does not cost a rebuild); changing the
# pinned version or the flags builds into a new directory:
#   ${MESHFED_TESTBINS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/meshfed-testbins}/<hash>/
# A cold build takes ~7-9 min on 2 cores; a cached run returns at once.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
cd "$here"

kube_version=v1.37.2
kube_major=1
kube_minor=37

# Without the version ldflags /version reports v0.0.0-master+$Format and clients that parse it
# (discovery, feature gates) fail. client-go's copy is set too so the server's own loopback
# clients report the same version.
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags="$ldflags -X $pkg.gitVersion=$kube_version -X $pkg.gitMajor=$kube_major -X $pkg.gitMinor=$kube_minor"
  ldflags="$ldflags -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done

key="$( (cat go.mod go.sum; echo "$ldflags") | sha256sum | cut -c1-16)"
root="${MESHFED_TESTBINS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/meshfed-testbins}"
dir="$root/$key"
bin="$dir/kube-apiserver"

if [ ! -x "$bin" ]; then
  mkdir -p "$dir"
  # One builder at a time per cache dir: parallel `make test` runs would otherwise race on the
  # same output file.
  exec 9>"$dir/.lock"
  flock 9
  if [ ! -x "$bin" ]; then
    echo "testbins: building kube-apiserver $kube_version into $dir (cold build: ~7-9 min on 2 cores)" >&2
    start=$(date +%s)
    # GOFLAGS from the caller (e.g. -race) must not leak into this build; GOWORK=off keeps a
    # workspace in a parent directory from pulling this module into it.
    GOFLAGS=-mod=readonly GOWORK=off CGO_ENABLED=0 \
      go build -trimpath -ldflags "$ldflags" -o "$bin.tmp" k8s.io/kubernetes/cmd/kube-apiserver >&2
    mv "$bin.tmp" "$bin"
    echo "testbins: built kube-apiserver in $(( $(date +%s) - start ))s" >&2
  fi
fi

echo "export MESHFED_KUBE_APISERVER=$bin"
