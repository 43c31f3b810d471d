#!/usr/bin/env bash
# xDS benchmarks (issue: failover-aware xDS), all Go benchmarks in federation/xds with real
# parts (embedded etcd, the federation service, east-west gateways, grpc-go xDS clients):
#  - propagation: etcd write of an export change -> updated EDS in a grpc-go client, with
#    1000 services x 5 clusters; baseline: the same write seen by a plain etcd watch;
#  - failover: RST kill and blackhole of the nearest cluster's gateway -> first call
#    answered by the next cluster, production health timings; anchor: the 10 s of Envoy
#    outlier detection's interval and of gRPC's priority CONNECTING timer;
#  - scale: full re-plan of 10k services x 10 clusters x 10 endpoints (CPU time, heap),
#    and the cost of a one-service update at 1k and 10k services.
# SAMPLES (propagation, default 200) and FAILOVERS (per fault, default 10) size the run.
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
gt() { go test -run '^$' -count=1 -timeout 30m "$@" ./federation/xds/ 2>&1 | grep -E '^(Benchmark|ok|FAIL|---)' ; }

echo "## xDS (load average $(cut -d' ' -f1-3 /proc/loadavg), $(nproc) cores, $(go env GOVERSION))"
gt -bench '^BenchmarkPropagation$' -benchtime "${SAMPLES:-200}x" >"$out/prop"
gt -bench '^BenchmarkFailover$' -benchtime "${FAILOVERS:-10}x" >"$out/fail"
gt -bench '^BenchmarkFullRecompute$' -benchtime 3x >"$out/full"
gt -bench '^BenchmarkUpdateOneService$' -benchtime 500x -benchmem >"$out/upd"
cat "$out"/prop "$out"/fail "$out"/full "$out"/upd >&2

# metric NAME FILE LINE-REGEX: the value before unit NAME on the matching line.
metric() { awk -v u="$1" -v re="$3" '$0 ~ re { for (i = 2; i <= NF; i++) if ($i == u) print $(i-1) }' "$2" | head -1; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b <= 0) print "-"; else if (a / b < 0.01) printf "%.4f×", a / b; else printf "%.2f×", a / b }'; }

echo
echo "### Propagation: etcd write -> EDS in a grpc-go client (1000 services x 5 clusters, ${SAMPLES:-200} samples)"
echo
echo "| | p50 | p99 | p50 ×etcd watch | p99 ×etcd watch | p99 vs 100 ms target |"
echo "|---|---|---|---|---|---|"
p50=$(metric p50-ms "$out/prop" Propagation); p99=$(metric p99-ms "$out/prop" Propagation)
w50=$(metric etcd-watch-p50-ms "$out/prop" Propagation); w99=$(metric etcd-watch-p99-ms "$out/prop" Propagation)
echo "| etcd watch (baseline) | ${w50} ms | ${w99} ms | 1.00× | 1.00× | |"
echo "| meshfed: etcd -> view -> plan -> EDS -> grpc-go | ${p50} ms | ${p99} ms | $(ratio "$p50" "$w50") | $(ratio "$p99" "$w99") | $(ratio "$p99" 100) |"

echo
echo "### Failover: gateway fault -> first call answered by the next cluster (${FAILOVERS:-10} faults each)"
echo
echo "| fault | p50 | max | p50 vs 10 s anchor | target |"
echo "|---|---|---|---|---|"
for f in rst blackhole; do
  a=$(metric p50-ms "$out/fail" "Failover/$f"); m=$(metric max-ms "$out/fail" "Failover/$f")
  t="< 1 s"; [ "$f" = blackhole ] && t="≤ 3 s"
  echo "| $f | ${a} ms | ${m} ms | $(ratio "$a" 10000) | $t |"
done

echo
echo "### Scale: full re-plan and one-service updates (xDS server only)"
echo
echo "| services × clusters × endpoints | full re-plan wall | CPU | server heap | import view heap (for scale) |"
echo "|---|---|---|---|---|"
for n in 1000 10000; do
  re="FullRecompute/services=$n/"
  wall=$(metric ns/op "$out/full" "$re"); cpu=$(metric cpu-ms/op "$out/full" "$re")
  heap=$(metric server-MiB "$out/full" "$re"); view=$(metric view-MiB "$out/full" "$re")
  echo "| $n × 10 × 10 | $(awk -v w="$wall" 'BEGIN{printf "%.0f ms", w/1e6}') | ${cpu} ms | ${heap} MiB | ${view} MiB |"
done
echo
echo "| one-service update (CPU) | 1k services | 10k services | 10k / 1k |"
echo "|---|---|---|---|"
for c in listed unlisted; do
  u1=$(metric cpu-us/op "$out/upd" "services=1000/changes=$c-"); u10=$(metric cpu-us/op "$out/upd" "services=10000/changes=$c-")
  a1=$(metric allocs/op "$out/upd" "services=1000/changes=$c-"); a10=$(metric allocs/op "$out/upd" "services=10000/changes=$c-")
  what="changes listed by the view (imports.View.Changed)"; [ "$c" = unlisted ] && what="changes not listed (every service compared)"
  echo "| $what | ${u1} µs, ${a1} allocs | ${u10} µs, ${a10} allocs | $(ratio "$u10" "$u1") |"
done
