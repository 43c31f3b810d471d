#!/usr/bin/env bash
# Federation store benchmarks (issue: federation store and discovery):
#  - propagation of a local change to another cluster's import view, 5 clusters x 1000
#    services, p50/p99, with the raw etcd put->watch latency of the same run as the floor;
#  - memory of one `meshfed federation` process at 10 clusters x 10k services x 10
#    endpoints, against the same process on an empty keyspace.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x bin/meshfed ] || make build
echo "## federation: propagation"
go run ./bench/fedbench -mode propagation -samples "${SAMPLES:-200}"
echo
echo "## federation: memory"
go run ./bench/fedbench -mode memory -meshfed bin/meshfed
