#!/usr/bin/env bash
# Provides the manifest and monitoring tools (helm, kustomize, promtool) and prints one
# `export VAR=path` line per tool:
#
#   eval "$(hack/tools/ensure.sh)"            # all: MESHFED_HELM, MESHFED_KUSTOMIZE, MESHFED_PROMTOOL
#   eval "$(hack/tools/ensure.sh helm)"       # one
#
# helm and kustomize build from the Go module proxy when they are not cached, each in its own
# wrapper module here (hack/tools/<tool>/go.mod with a `tool` line), so the project's go.mod
# never sees their dependencies and their versions never fight each other.
#
# promtool comes from Debian's `prometheus` package (promtool 2.42; installed with apt-get when
# missing): building it from source links every Prometheus service-discovery plugin and took
# 8-18 minutes on 2 cores, the longest step of a cold `make test`. MESHFED_PROMTOOL set by the
# caller wins.
#
# Only `export ...` lines go to stdout; every message goes to stderr. The cache key of a tool
# is a hash of its go.mod, go.sum and ldflags, so bumping a version builds into a new directory:
#   ${MESHFED_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/meshfed-tools}/<tool>-<hash>/<tool>
# Cold builds on 2 cores (empty build cache): see docs/deploy.md ("How validation works").
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="${MESHFED_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/meshfed-tools}"

declare -A pkg=(
  [helm]=helm.sh/helm/v3/cmd/helm
  [kustomize]=sigs.k8s.io/kustomize/kustomize/v5
)
declare -A var=([helm]=MESHFED_HELM [kustomize]=MESHFED_KUSTOMIZE [promtool]=MESHFED_PROMTOOL)
# helm's default Kubernetes version (helm template without --kube-version, helm lint's
# deprecation rules) comes from ldflags, as helm's own Makefile sets them from client-go's
# version; without them it is v1.20 and charts requiring newer refuse to render.
helm_ldflags=""
for p in helm.sh/helm/v3/pkg/chartutil helm.sh/helm/v3/pkg/lint/rules; do
  helm_ldflags="$helm_ldflags -X $p.k8sVersionMajor=1 -X $p.k8sVersionMinor=37"
done
declare -A ldflags=(
  [helm]="-X helm.sh/helm/v3/internal/version.version=v3.22.0$helm_ldflags"
  [kustomize]=""
)

tools=("$@")
if [ ${#tools[@]} -eq 0 ]; then tools=(helm kustomize promtool); fi

# promtool_path prints the path of Debian's promtool, installing the package when it is missing.
promtool_path() {
  if [ -n "${MESHFED_PROMTOOL:-}" ]; then
    echo "$MESHFED_PROMTOOL"
    return
  fi
  if ! command -v promtool >/dev/null 2>&1; then
    echo "tools: promtool missing: installing Debian's prometheus package (apt-get)" >&2
    # --no-install-recommends: promtool needs no exporters. Where systemd runs, the package
    # also starts a Prometheus server on :9090; no test uses that port.
    (DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus ||
      { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus; }) >&2
  fi
  command -v promtool
}

for t in "${tools[@]}"; do
  if [ "$t" = promtool ]; then
    echo "export MESHFED_PROMTOOL=$(promtool_path)"
    continue
  fi
  if [ -z "${pkg[$t]:-}" ]; then
    echo "tools: unknown tool $t (known: ${!pkg[*]} promtool)" >&2
    exit 2
  fi
  mod="$here/$t"
  key="$( (cat "$mod/go.mod" "$mod/go.sum"; [ -z "${ldflags[$t]}" ] || echo "${ldflags[$t]}") | sha256sum | cut -c1-16)"
  dir="$root/$t-$key"
  bin="$dir/$t"
  if [ ! -x "$bin" ]; then
    mkdir -p "$dir"
    # One builder per tool and cache dir: parallel test runs would race on the output file.
    exec 9>"$dir/.lock"
    flock 9
    if [ ! -x "$bin" ]; then
      echo "tools: building $t (${pkg[$t]}) into $dir" >&2
      start=$(date +%s)
      # GOFLAGS from the caller (-race, -mod=vendor) must not leak into the build; GOWORK=off
      # keeps a go.work in a parent directory from swallowing the wrapper module.
      (cd "$mod" && GOFLAGS=-mod=readonly GOWORK=off CGO_ENABLED=0 \
        go build -trimpath -ldflags "-s -w ${ldflags[$t]}" -o "$bin.tmp" "${pkg[$t]}") >&2
      mv "$bin.tmp" "$bin"
      echo "tools: built $t in $(( $(date +%s) - start ))s" >&2
    fi
    exec 9>&-
  fi
  echo "export ${var[$t]}=$bin"
done
