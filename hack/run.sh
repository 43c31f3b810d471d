#!/usr/bin/env bash
# make run: the local federation (embedded etcd, three simulated clusters, cross-cluster
# calls from a real proxyless gRPC client, a failover drill), until Ctrl-C.
# MESHFED_RUN_ARGS passes flags, e.g. MESHFED_RUN_ARGS=--exit-after-demo.
set -euo pipefail
cd "$(dirname "$0")/.."
exec ./bin/meshfed dev up ${MESHFED_RUN_ARGS:-}
