#!/usr/bin/env bash
# make e2e: the testbed (docs/testbed.md): every simulated cluster and etcd member in its own
# network namespace, real meshfed processes from bin/meshfed, real network faults. The long
# forms (60 s of loss, the one-shot-checks control). Needs root; skips where namespaces
# cannot be made. E2E_RUN narrows it (a go test -run pattern).
set -euo pipefail
cd "$(dirname "$0")/.."
MESHFED_BIN="$PWD/bin/meshfed" MESHFED_E2E=1 exec go test -count=1 -timeout 30m -v \
  -run "${E2E_RUN:-.}" ./harness/testbed/...
