#!/usr/bin/env bash
# bench/10-gateway.sh — the east-west gateway against a direct connection, HAProxy
# (mode tcp, req.ssl_sni, inspect-delay) and nginx (stream, ssl_preread), all on loopback,
# in one run: connections per second (TLS handshake + 32-byte echo + close), p50/p99
# latency, bulk throughput, CPU per 1000 connections and per GB -- the proxy's own
# (/proc/<pid>/stat) and the machine's added CPU (load generator, backends, proxies and
# every kernel thread, minus the direct run's) -- and memory and file descriptors per idle
# connection at $IDLE idle connections. The floor (a relay that only accepts, connects and
# lets the kernel redirect the bytes) runs in the same rounds. Prints markdown tables with
# ratios against direct, HAProxy, nginx and the floor.
#
# Knobs (environment): IDLE=10000 CONC=16 LAT_TIME=6s CONN_TIME=9s BULK_TIME=9s STREAMS=4 ROUNDS=3
# (each phase time is split over ROUNDS rounds that interleave the targets; every figure is
# the median over the rounds)
# Runs as root on Debian: installs haproxy and nginx (with its stream module) if absent.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib/baselines.sh

IDLE=${IDLE:-10000}
CONC=${CONC:-16}
LAT_TIME=${LAT_TIME:-6s}
CONN_TIME=${CONN_TIME:-9s}
BULK_TIME=${BULK_TIME:-9s}
ROUNDS=${ROUNDS:-3}
STREAMS=${STREAMS:-4}

if ! command -v haproxy >/dev/null || [ ! -e /usr/lib/nginx/modules/ngx_stream_module.so ]; then
  echo "installing haproxy and nginx from Debian..." >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq haproxy nginx libnginx-mod-stream >/dev/null
fi
# Idle phase: N idle connections cost a proxy 2N descriptors (io.Copy's splice: 6N).
# Raise the soft limit as far as the hard one allows; without CAP_SYS_RESOURCE (as in this
# sandbox, hard limit 20000) 10k idle connections through any proxy cannot fit, so IDLE is
# capped to what the limit allows and the table says how many were held.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
FDLIM=$(ulimit -n)
if [ "$IDLE" -gt $(( (FDLIM - 500) / 2 )) ]; then
  echo "note: fd limit $FDLIM: holding $(( (FDLIM - 500) / 2 )) idle connections instead of $IDLE" >&2
  IDLE=$(( (FDLIM - 500) / 2 ))
fi
IDLE_IOCOPY=$(( IDLE < (FDLIM - 500) / 6 ? IDLE : (FDLIM - 500) / 6 ))

WORK=$(mktemp -d /tmp/meshfed-bench-gw.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ -n "${KEEP:-}" ] && echo "kept $WORK" >&2 && return
  rm -rf "$WORK"
}
trap cleanup EXIT

go build -o "$WORK/meshfed" ./cmd/meshfed
go build -o "$WORK/benchload" ./eastwest/internal/benchload

mapfile -t P < <("$WORK/benchload" freeports 14)
ECHO=${P[0]} SINK=${P[1]} HOLD=${P[2]} GW=${P[3]} GWADM=${P[4]} GW2=${P[5]} GW2ADM=${P[6]} HAP=${P[7]} NGX=${P[8]}
FL1=${P[9]} FL2=${P[10]} FL3=${P[11]} GW3=${P[12]} GW3ADM=${P[13]}

"$WORK/benchload" backends --echo 127.0.0.1:$ECHO --sink 127.0.0.1:$SINK --hold 127.0.0.1:$HOLD > "$WORK/backends.log" 2>&1 &
BACKENDS=$!; PIDS+=($BACKENDS)

start_floor

cat > "$WORK/exports.yaml" <<YAML
services:
  - {name: echo, namespace: demo, ports: [{port: 8443, targetPort: $ECHO}], endpoints: [{address: 127.0.0.1}]}
  - {name: bulk, namespace: demo, ports: [{port: 8443, targetPort: $SINK}], endpoints: [{address: 127.0.0.1}]}
  - {name: idle, namespace: demo, ports: [{port: 8443, targetPort: $HOLD}], endpoints: [{address: 127.0.0.1}]}
YAML

"$WORK/meshfed" gateway --log-level warn --cluster bench --listen 127.0.0.1:$GW --admin 127.0.0.1:$GWADM \
  --exports "$WORK/exports.yaml" --max-conns 0 > "$WORK/gw.log" 2>&1 &
PIDS+=($!); echo $! > "$WORK/meshfed.pids"
"$WORK/meshfed" gateway --log-level warn --cluster bench --listen 127.0.0.1:$GW2 --admin 127.0.0.1:$GW2ADM \
  --exports "$WORK/exports.yaml" --max-conns 0 --copy-mode io-copy > "$WORK/gw2.log" 2>&1 &
PIDS+=($!); echo $! > "$WORK/meshfed-iocopy.pids"
# The sockmap path beside the default (poll-splice); it exits at start where this machine
# cannot run it, and is then left out.
"$WORK/meshfed" gateway --log-level warn --cluster bench --listen 127.0.0.1:$GW3 --admin 127.0.0.1:$GW3ADM \
  --exports "$WORK/exports.yaml" --max-conns 0 --copy-mode sockmap > "$WORK/gw3.log" 2>&1 &
SMPID=$!; PIDS+=($SMPID); echo $SMPID > "$WORK/meshfed-sockmap.pids"

start_sni_baselines

# Wait for every listener.
for port in $ECHO $GW $GW2 $GW3 $HAP $NGX $FL1; do
  for _ in $(seq 100); do
    (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break
    kill -0 $FLOORPID 2>/dev/null || [ "$port" != "$FL1" ] || break
    kill -0 $SMPID 2>/dev/null || [ "$port" != "$GW3" ] || break
    sleep 0.1
  done
done
SOCKMAP=()
if kill -0 $SMPID 2>/dev/null; then
  SOCKMAP=(--target "meshfed sockmap=127.0.0.1:$GW3@$WORK/meshfed-sockmap.pids")
else
  echo "note: no sockmap gateway in this run: $(tail -1 "$WORK/gw3.log")" >&2
fi
floor_target
# nginx: the master and its workers (the workers do the proxying).
{ echo $NGXPID; pgrep -P $NGXPID; } > "$WORK/nginx.pids"

echo "== east-west gateway benchmark: $(nproc) cores, load average $(cut -d" " -f1-3 /proc/loadavg), $(uname -r), $(go version | cut -d' ' -f3), $(haproxy -v | head -1 | cut -d' ' -f1-3), $(nginx -v 2>&1 | cut -d' ' -f3)"
"$WORK/benchload" run \
  --target "direct=127.0.0.1:$ECHO,127.0.0.1:$SINK,127.0.0.1:$HOLD" \
  --target "meshfed=127.0.0.1:$GW@$WORK/meshfed.pids" \
  --target "meshfed io-copy=127.0.0.1:$GW2@$WORK/meshfed-iocopy.pids!$IDLE_IOCOPY" \
  "${SOCKMAP[@]}" \
  --target "HAProxy=127.0.0.1:$HAP@$WORK/haproxy.pids" \
  --target "nginx=127.0.0.1:$NGX@$WORK/nginx.pids" \
  "${FLOOR[@]}" --account-pid "$BACKENDS" \
  --idle "$IDLE" --conc "$CONC" --lat-time "$LAT_TIME" --conn-time "$CONN_TIME" \
  --bulk-time "$BULK_TIME" --streams "$STREAMS" --rounds "$ROUNDS" --json "${BENCH_JSON:-$WORK/result.json}"
cat <<'TXT'

Columns: conn/s = new connections per second (TCP + TLS 1.3 handshake + 32-byte echo + close,
concurrency CONC); p50/p99 = one connection at a time, the same work; added = minus direct;
bulk = one ClientHello then raw bytes (no crypto after the hello), STREAMS streams; proxy CPU =
utime+stime of the proxy's processes from /proc/<pid>/stat (nginx: master + workers);
machine CPU = the load generator, the backends, every proxy process and every kernel thread
(softirq work done in a process's context is in its system time), over the phase; added =
minus direct's in the same round. Each figure is the median over ROUNDS interleaved rounds.
floor = a relay that only accepts, connects and lets the kernel redirect the bytes (sockmap).
RSS and fds per idle connection = growth of the proxy process(es) with IDLE idle connections
open, both sides together (client side + upstream side); kernel = growth of Slab+KernelStack+
PageTables for the whole machine per idle connection, relative to direct for proxies.
TXT
