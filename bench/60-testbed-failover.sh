#!/usr/bin/env bash
# Failover on the testbed (harness/testbed: network namespaces, real processes), per fault
# kind: the network's (nftables blackhole and reset of a gateway) and the drill's gateway
# faults (meshfed drill --fault blackhole|reset|delay=3s); FAULTS (default 10) faults each;
# p50 and max of the time until east's client is served by north for good. Then the
# drill's error=0.3 fault: the fraction of 100 new connections to west's gateway that it
# resets per fault (p50/min/max), and whether east's client moved (it should not). Needs root;
# skips (and says why) where network namespaces cannot be made.
# baseline: the network reset, the fastest path (an RST is seen at once).
set -euo pipefail
# make bench builds bin/meshfed first (CGO_ENABLED=0, what the testbed runs).
cd "$(dirname "$0")/.."
MESHFED_BIN="${MESHFED_BIN:-$PWD/bin/meshfed}" MESHFED_BENCH_FAILOVER="${FAULTS:-10}" go test -count=1 -timeout 60m -run '^TestFailoverTable$' -v ./harness/testbed/ 2>&1 |
  grep -E '^(failover of|reset fraction|network|drill|ok|FAIL|---|    bench_test|.*SKIP)' || true
