#!/usr/bin/env bash
# Runs every benchmark script under bench/ in name order. Each script prints its own table
# with ratios against a baseline measured in the same run.
set -euo pipefail
cd "$(dirname "$0")/.."
for s in bench/*.sh; do
  echo "=================== $s"
  "$s"
done
