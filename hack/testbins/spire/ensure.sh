#!/usr/bin/env bash
# Builds spire-server (SPIRE v1.13.3, the reference SPIFFE peer of the trust interop test)
# when it is not cached, and prints the shell line that points tests at it:
#
#   eval "$(hack/testbins/spire/ensure.sh)"                 # sets MESHFED_SPIRE_SERVER
#   eval "$(hack/testbins/spire/ensure.sh --cached-only)"   # the same, only if built already
#
# Only `export ...` lines go to stdout; every message goes to stderr. SPIRE is a separate
# module tree (cloud SDKs, its own k8s.io versions), so it builds in this wrapper module, never
# in meshfed's go.mod. cgo is needed: SPIRE's SQL datastore uses mattn/go-sqlite3.
#
# Cache: ${MESHFED_TESTBINS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/meshfed-testbins}/spire-<hash>/
# keyed by this directory's go.mod and go.sum. A cold build is long: 1,874 packages (cloud
# SDKs); measured 91 min wall / 18 min user CPU on 2 cores shared with other builds (load
# ~25), so expect well over 15 min even on an idle machine. A cached run returns at once.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
cd "$here"

key="$(cat go.mod go.sum | sha256sum | cut -c1-16)"
root="${MESHFED_TESTBINS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/meshfed-testbins}"
dir="$root/spire-$key"
bin="$dir/spire-server"

# --cached-only: print the line only when the binary is already built; never build.
if [ "${1:-}" = --cached-only ]; then
  [ -x "$bin" ] && echo "export MESHFED_SPIRE_SERVER=$bin"
  exit 0
fi

if [ ! -x "$bin" ]; then
  mkdir -p "$dir"
  exec 9>"$dir/.lock"
  flock 9
  if [ ! -x "$bin" ]; then
    echo "testbins: building spire-server into $dir (cold build: long, see the header)" >&2
    start=$(date +%s)
    GOFLAGS=-mod=readonly GOWORK=off CGO_ENABLED=1 \
      go build -trimpath -ldflags "-s -w" -o "$bin.tmp" github.com/spiffe/spire/cmd/spire-server >&2
    mv "$bin.tmp" "$bin"
    echo "testbins: built spire-server in $(( $(date +%s) - start ))s" >&2
  fi
fi

echo "export MESHFED_SPIRE_SERVER=$bin"
