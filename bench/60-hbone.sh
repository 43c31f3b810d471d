#!/usr/bin/env bash
# bench/60-hbone.sh — one east-west gateway process, its HBONE listener (Istio ambient's
# double HBONE, outer layer: mTLS + HTTP/2 CONNECT) against its SNI path, in the same run,
# to the same backends: connections per second (new connection, TLS 1.3 handshake with the
# backend, 32-byte echo, close), the CPU per connection of the benchmark's processes (load
# generator, gateway, backends) and every kernel thread (as bench/10-gateway.sh counts the
# machine's added CPU; other users' processes on a shared machine are left out), and bulk
# throughput. HBONE is measured twice: a new outer mTLS connection per tunnel, and one
# pooled outer connection per worker carrying a new CONNECT stream per tunnel (what a
# ztunnel does). Prints a markdown table with ratios against the SNI path.
#
# Knobs (environment): CONC=16 CONN_TIME=3s BULK_TIME=3s STREAMS=4 ROUNDS=3
set -euo pipefail
cd "$(dirname "$0")/.."

CONC=${CONC:-16}
CONN_TIME=${CONN_TIME:-3s}
BULK_TIME=${BULK_TIME:-3s}
STREAMS=${STREAMS:-4}
ROUNDS=${ROUNDS:-3}

WORK=$(mktemp -d /tmp/meshfed-bench-hbone.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

go build -o "$WORK/meshfed" ./cmd/meshfed
go build -o "$WORK/benchload" ./eastwest/internal/benchload
go build -o "$WORK/hboneload" ./eastwest/internal/hboneload
"$WORK/hboneload" pki "$WORK"

mapfile -t P < <("$WORK/benchload" freeports 6)
ECHO=${P[0]} SINK=${P[1]} HOLD=${P[2]} GW=${P[3]} GWADM=${P[4]} GWH=${P[5]}
"$WORK/benchload" backends --echo 127.0.0.1:$ECHO --sink 127.0.0.1:$SINK --hold 127.0.0.1:$HOLD > "$WORK/backends.log" 2>&1 &
BACKENDS=$!; PIDS+=($BACKENDS)

# One endpoint per service, reachable on both paths: the SNI path dials targetPort, the
# HBONE path the endpoint's hbonePort; both are the same backend, so the paths differ only
# in the gateway.
cat > "$WORK/exports.yaml" <<YAML
services:
  - {name: echo, namespace: demo, ports: [{port: 8443, targetPort: $ECHO}], endpoints: [{address: 127.0.0.1, hbonePort: $ECHO}]}
  - {name: bulk, namespace: demo, ports: [{port: 8443, targetPort: $SINK}], endpoints: [{address: 127.0.0.1, hbonePort: $SINK}]}
YAML
"$WORK/meshfed" gateway --log-level warn --cluster west --listen 127.0.0.1:$GW --admin 127.0.0.1:$GWADM \
  --exports "$WORK/exports.yaml" --max-conns 0 --hbone-listen 127.0.0.1:$GWH \
  --hbone-cert "$WORK/gateway.pem" --hbone-key "$WORK/gateway-key.pem" --bundle-dir "$WORK" > "$WORK/gw.log" 2>&1 &
GWPID=$!; PIDS+=($GWPID)

# Wait until the gateway says it is ready (bounded).
for _ in $(seq 300); do
  curl -fsS "http://127.0.0.1:$GWADM/readyz" >/dev/null 2>&1 && break
  kill -0 $GWPID 2>/dev/null || { cat "$WORK/gw.log" >&2; exit 1; }
  sleep 0.1
done
curl -fsS "http://127.0.0.1:$GWADM/readyz" >/dev/null || { echo "gateway not ready:" >&2; cat "$WORK/gw.log" >&2; exit 1; }

echo "== HBONE vs SNI through one meshfed gateway: $(nproc) cores, load average $(cut -d" " -f1-3 /proc/loadavg), $(uname -r), $(go version | cut -d' ' -f3)"
"$WORK/hboneload" run --echo 127.0.0.1:$ECHO --sink 127.0.0.1:$SINK --sni 127.0.0.1:$GW --hbone 127.0.0.1:$GWH \
  --pki "$WORK" --pids "$GWPID,$BACKENDS" --conc "$CONC" --conn-time "$CONN_TIME" --bulk-time "$BULK_TIME" \
  --streams "$STREAMS" --rounds "$ROUNDS"
cat <<'TXT'

Columns: conn/s = tunnels per second at concurrency CONC, each a TLS 1.3 handshake with the
echo backend through the path + 32-byte echo + close (HBONE new outer conn: plus an outer
mTLS handshake and HTTP/2 setup with the gateway per tunnel; pooled: one outer connection
per worker, a new CONNECT stream per tunnel); CPU µs/conn = CPU of the load generator,
gateway, backends and kernel threads over the phase / tunnels; added = minus direct's;
bulk = STREAMS streams of raw bytes after one ClientHello (HBONE: inside a CONNECT stream).
Medians over ROUNDS interleaved rounds.
TXT
