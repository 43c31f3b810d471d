#!/usr/bin/env bash
# istiod as a consumer of meshfed (issue 10, docs/istio.md): an etcd write of an export
# change -> the EDS a sidecar gets from a real istiod fed by meshfed over MCP, side by side
# with the same write -> meshfed's own xDS (an Envoy-class ADS client) and -> a plain etcd
# watch (the baseline), in one run: harness BenchmarkIstiodPropagation. SERVICES (default
# 1000) x CLUSTERS (default 5) exports of 10 endpoints, SAMPLES (default 50) writes.
# Uses the istiod binary when cached (hack/testbins/istiod/ensure.sh --cached-only; never
# built here) and then the kube-apiserver test binary; without istiod only meshfed's path and
# the baseline are measured, and the table says so.
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
if [ -z "${MESHFED_ISTIOD:-}" ] && [ -x hack/testbins/istiod/ensure.sh ]; then
  eval "$(hack/testbins/istiod/ensure.sh --cached-only 2>/dev/null || true)"
fi
if [ -n "${MESHFED_ISTIOD:-}" ] && [ -z "${MESHFED_KUBE_APISERVER:-}" ]; then
  eval "$(hack/testbins/ensure.sh)" # istiod needs a kube-apiserver (built when absent, ~7-9 min)
fi
export MESHFED_BENCH_ISTIO_SERVICES="${SERVICES:-1000}" MESHFED_BENCH_ISTIO_CLUSTERS="${CLUSTERS:-5}"
go test -run '^$' -count=1 -timeout 60m -bench '^BenchmarkIstiodPropagation$' -benchtime "${SAMPLES:-50}x" -v ./harness/ >"$out/prop" 2>&1 || { cat "$out/prop" >&2; exit 1; }
grep -E '^(Benchmark|ok|FAIL|---|\s+istio_bench_test)' "$out/prop" >&2 || true

metric() { awk -v u="$1" '/^BenchmarkIstiodPropagation/ { for (i = 2; i <= NF; i++) if ($i == u) print $(i-1) }' "$out/prop" | head -1; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || b <= 0) print "-"; else printf "%.2f×", a / b }'; }

echo "## istiod propagation (load average $(cut -d' ' -f1-3 /proc/loadavg), $(nproc) cores, $(go env GOVERSION))"
echo
echo "### etcd write -> EDS at the client (${SERVICES:-1000} services x ${CLUSTERS:-5} clusters, ${SAMPLES:-50} samples)"
echo
echo "| path | p50 | p99 | p50 ×etcd watch | p99 ×etcd watch | p50 ×meshfed xDS | p99 ×meshfed xDS |"
echo "|---|---|---|---|---|---|---|"
w50=$(metric etcd-watch-p50-ms); w99=$(metric etcd-watch-p99-ms)
m50=$(metric meshfed-xds-p50-ms); m99=$(metric meshfed-xds-p99-ms)
i50=$(metric istiod-p50-ms); i99=$(metric istiod-p99-ms)
echo "| etcd watch (baseline) | ${w50} ms | ${w99} ms | 1.00× | 1.00× | | |"
echo "| meshfed: etcd -> plan -> own xDS -> Envoy-class ADS client | ${m50} ms | ${m99} ms | $(ratio "$m50" "$w50") | $(ratio "$m99" "$w99") | 1.00× | 1.00× |"
if [ -n "$i50" ]; then
  echo "| istiod: etcd -> plan -> MCP -> istiod -> sidecar EDS | ${i50} ms | ${i99} ms | $(ratio "$i50" "$w50") | $(ratio "$i99" "$w99") | $(ratio "$i50" "$m50") | $(ratio "$i99" "$m99") |"
else
  echo "| istiod | not measured: no istiod binary cached (hack/testbins/istiod/ensure.sh) | | | | | |"
fi
