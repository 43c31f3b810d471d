#!/usr/bin/env bash
# East-west gateway route source from the federation's xDS (meshfed gateway --federation):
# the cost of turning the federation's CDS+EDS answers into the gateway's route table.
#  - full state: what a (re)connecting gateway decodes, validates and builds, for 100 and
#    1000 exported service ports with 4 endpoints each;
#  - one-service update: one EDS answer changing one service among 100 and 1000;
# baseline: the same table from an exports file (--exports), parsed and validated as the
# file source does on every reload, measured in the same run.
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(mktemp)
trap 'rm -f "$out"' EXIT
go test -run '^$' -count=1 -bench '^Benchmark(FullState|OneServiceUpdate|FileSourceBaseline)$' -benchtime "${BENCHTIME:-2s}" -benchmem \
  ./eastwest/xdsroutes/ 2>&1 | grep -E '^(Benchmark|ok|FAIL|---)' >"$out"
cat "$out" >&2

metric() { awk -v u="$1" -v re="$3" '$0 ~ re { for (i = 2; i <= NF; i++) if ($i == u) print $(i-1) }' "$2" | head -1; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f×", a / b; else print "-" }'; }
us() { awk -v n="$1" 'BEGIN { printf "%.0f µs", n / 1000 }'; }

echo "## Gateway route source: xDS (load average $(cut -d' ' -f1-3 /proc/loadavg), $(nproc) cores, $(go env GOVERSION))"
echo
echo "| service ports (4 endpoints each) | exports file reload (baseline) | xDS full state | × baseline | xDS one-service update | × baseline | allocs: file / full / one |"
echo "|---|---|---|---|---|---|---|"
for n in 100 1000; do
  f=$(metric ns/op "$out" "FileSourceBaseline/services=$n-"); x=$(metric ns/op "$out" "FullState/services=$n-"); o=$(metric ns/op "$out" "OneServiceUpdate/services=$n-")
  fa=$(metric allocs/op "$out" "FileSourceBaseline/services=$n-"); xa=$(metric allocs/op "$out" "FullState/services=$n-"); oa=$(metric allocs/op "$out" "OneServiceUpdate/services=$n-")
  echo "| $n | $(us "$f") | $(us "$x") | $(ratio "$x" "$f") | $(us "$o") | $(ratio "$o" "$f") | $fa / $xa / $oa |"
done
