#!/usr/bin/env bash
# make run: the local demo. Until `meshfed dev up` exists it runs the gateway demo.
set -euo pipefail
cd "$(dirname "$0")/.."
if ./bin/meshfed dev --help >/dev/null 2>&1; then
  exec ./bin/meshfed dev up
fi
exec ./bin/meshfed demo gateway
