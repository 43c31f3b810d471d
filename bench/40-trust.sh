#!/usr/bin/env bash
# Trust bundle parsing and rendering: meshfed's validated path against go-spiffe's bare
# parser and Marshal, measured in the same run (ratios = meshfed / go-spiffe).
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(go test -run '^$' -bench 'GoSpiffeParse|^BenchmarkParse$|GoSpiffeMarshal|MarshalJWKS' -benchmem -count 3 ./trust/)
echo "$out" | grep -E '^Benchmark' >&2
echo "$out" | awk '
/^Benchmark/ {
  name=$1; sub(/-[0-9]+$/, "", name); ns[name]+=$3; al[name]+=$7; n[name]++
}
END {
  printf "| operation | meshfed ns/op | go-spiffe ns/op | ratio | meshfed allocs/op | go-spiffe allocs/op |\n|---|---|---|---|---|---|\n"
  p="BenchmarkParse"; g="BenchmarkGoSpiffeParse"
  printf "| parse + validate + digest (3 roots, 3 JWT keys) | %.0f | %.0f | %.2f× | %.0f | %.0f |\n", ns[p]/n[p], ns[g]/n[g], ns[p]/ns[g], al[p]/n[p], al[g]/n[g]
  p="BenchmarkMarshalJWKS"; g="BenchmarkGoSpiffeMarshal"
  printf "| render JWKS (deterministic vs Marshal) | %.0f | %.0f | %.2f× | %.0f | %.0f |\n", ns[p]/n[p], ns[g]/n[g], ns[p]/ns[g], al[p]/n[p], al[g]/n[g]
}'
