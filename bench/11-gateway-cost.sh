#!/usr/bin/env bash
# bench/11-gateway-cost.sh — what the east-west gateway costs per connection and per GB,
# counted so that a loaded machine moves the figures little, beside HAProxy and nginx in
# the same run: the same fixed work (CONNS connections, BULK_MB megabytes) through every
# target, in ROUNDS rounds that interleave them, and per target the proxy's CPU time
# (utime+stime), its system calls and context switches (perf stat: raw_syscalls:sys_enter,
# context-switches, counted in the kernel whatever the load), and the machine's added CPU
# (as bench/10-gateway.sh counts it). Medians over the rounds. The floor (bench/10's: a
# relay that only accepts, connects and hands both sockets to the kernel's sockmap
# redirect, no user-space work after that) runs in the same rounds where root and BPF
# allow it (FLOOR=0: left out). So do two floors without sockmap: "relay" (benchload
# relay: the least a user-space relay process costs, one thread and one epoll set with
# raw non-blocking system calls, as nginx and HAProxy are written; RELAY=0: left out) and
# the kernel floor (benchload cost --kernel-floor: one more loopback TCP connection
# carrying the same bytes, both ends in one thread, no proxy, no wake-up: what the
# kernel alone costs for the second connection every relay adds; KFLOOR=0: left out).
#
# GWS lists the gateways to compare, NAME=BINARY:MODE separated by spaces, e.g. an A/B of
# two builds: GWS="A=/tmp/a:poll-splice B=/tmp/b:poll-splice" bench/11-gateway-cost.sh
# Default: this tree's meshfed in each copy mode (sockmap, poll-splice, io-copy).
# BINARY is `meshfed` (run as `meshfed gateway ...`) or any program taking the same
# --listen/--admin/--exports/--copy-mode flags.
# Knobs: CONNS=2000 BULK_MB=1000 CONC=16 STREAMS=4 ROUNDS=5 BASELINES=1 (0: no HAProxy/nginx)
# CONNWORK=tls (each connection a TLS 1.3 handshake and a 32-byte echo) or replay (the same
# bytes each way, flight by flight, without the ends' cryptography: the ends then cost
# little and the added machine column reads the proxy, not the handshakes' noise)
# FLOOR=1 (0: no sockmap floor) RELAY=1 (0: no relay floor) KFLOOR=1 (0: no kernel floor)
# RATES="0,10,50,200" (default: none): then, after the cost phase, benchload rate: each
# gateway, HAProxy and nginx in turn at these open-loop connection rates (0: idle) for
# RATE_FOR (20s) each, their CPU (threads' run time) and context switches per second and
# per connection: what a setting costs a mostly idle gateway.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib/baselines.sh

CONNS=${CONNS:-2000}
BULK_MB=${BULK_MB:-1000}
CONC=${CONC:-16}
STREAMS=${STREAMS:-4}
ROUNDS=${ROUNDS:-5}
CONNWORK=${CONNWORK:-tls}
BASELINES=${BASELINES:-1}
FLOOR_ON=${FLOOR:-1}
RELAY_ON=${RELAY:-1}
KFLOOR_ON=${KFLOOR:-1}

if [ "$BASELINES" = 1 ] && { ! command -v haproxy >/dev/null || [ ! -e /usr/lib/nginx/modules/ngx_stream_module.so ]; }; then
  echo "installing haproxy and nginx from Debian..." >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq haproxy nginx libnginx-mod-stream >/dev/null
fi
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

WORK=$(mktemp -d /tmp/meshfed-bench-cost.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ -n "${KEEP:-}" ] && echo "kept $WORK" >&2 && return
  rm -rf "$WORK"
}
trap cleanup EXIT

go build -o "$WORK/benchload" ./eastwest/internal/benchload
if [ -z "${GWS:-}" ]; then
  go build -o "$WORK/meshfed" ./cmd/meshfed
  GWS="meshfed-sockmap=$WORK/meshfed:sockmap meshfed-poll-splice=$WORK/meshfed:poll-splice meshfed-io-copy=$WORK/meshfed:io-copy"
fi
read -ra GWLIST <<< "$GWS"

mapfile -t P < <("$WORK/benchload" freeports $(( 11 + 2 * ${#GWLIST[@]} )))
ECHO=${P[0]} SINK=${P[1]} HOLD=${P[2]} HAP=${P[3]} NGX=${P[4]} FL1=${P[5]} FL2=${P[6]} FL3=${P[7]}
RL1=${P[8]} RL2=${P[9]} RL3=${P[10]}

"$WORK/benchload" backends --echo 127.0.0.1:$ECHO --sink 127.0.0.1:$SINK --hold 127.0.0.1:$HOLD > "$WORK/backends.log" 2>&1 &
BACKENDS=$!; PIDS+=($BACKENDS)

cat > "$WORK/exports.yaml" <<YAML
services:
  - {name: echo, namespace: demo, ports: [{port: 8443, targetPort: $ECHO}], endpoints: [{address: 127.0.0.1}]}
  - {name: bulk, namespace: demo, ports: [{port: 8443, targetPort: $SINK}], endpoints: [{address: 127.0.0.1}]}
  - {name: idle, namespace: demo, ports: [{port: 8443, targetPort: $HOLD}], endpoints: [{address: 127.0.0.1}]}
YAML

[ "$FLOOR_ON" = 1 ] && start_floor

TARGETS=(--target "direct=127.0.0.1:$ECHO,127.0.0.1:$SINK,127.0.0.1:$HOLD")
RATE_TARGETS=()
WAIT=($ECHO)
if [ "$RELAY_ON" = 1 ]; then
  "$WORK/benchload" relay --relay 127.0.0.1:$RL1=127.0.0.1:$ECHO --relay 127.0.0.1:$RL2=127.0.0.1:$SINK \
    --relay 127.0.0.1:$RL3=127.0.0.1:$HOLD > "$WORK/relay.log" 2>&1 &
  PIDS+=($!); echo $! > "$WORK/relay.pids"
  WAIT+=($RL1)
fi
i=11
for gw in "${GWLIST[@]}"; do
  name=${gw%%=*} rest=${gw#*=}
  bin=${rest%:*} mode=${rest##*:}
  port=${P[$i]} adm=${P[$((i + 1))]}; i=$((i + 2))
  sub=()
  [ "$(basename "$bin")" = meshfed ] && sub=(gateway --log-level warn --cluster bench --max-conns 0)
  "$bin" "${sub[@]}" --listen 127.0.0.1:$port --admin 127.0.0.1:$adm --exports "$WORK/exports.yaml" \
    --copy-mode "$mode" > "$WORK/$name.log" 2>&1 &
  PIDS+=($!); echo $! > "$WORK/$name.pids"
  TARGETS+=(--target "$name=127.0.0.1:$port@$WORK/$name.pids")
  RATE_TARGETS+=(--target "$name=127.0.0.1:$port@$WORK/$name.pids")
  WAIT+=($port)
done

if [ "$BASELINES" = 1 ]; then
  FDLIM=$(ulimit -n)
  start_sni_baselines
  WAIT+=($HAP $NGX)
fi

[ "$FLOOR_ON" = 1 ] && WAIT+=($FL1)
for port in "${WAIT[@]}"; do
  for _ in $(seq 100); do
    (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break
    [ "$port" = "${FL1:-}" ] && ! kill -0 "${FLOORPID:-0}" 2>/dev/null && break
    sleep 0.1
  done
done
FLOOR=()
[ "$FLOOR_ON" = 1 ] && floor_target
[ "$RELAY_ON" = 1 ] && FLOOR+=(--target "relay=127.0.0.1:$RL1,127.0.0.1:$RL2,127.0.0.1:$RL3@$WORK/relay.pids")
[ "$KFLOOR_ON" = 1 ] && FLOOR+=(--kernel-floor)
if [ "$BASELINES" = 1 ]; then
  { echo $NGXPID; pgrep -P $NGXPID; } > "$WORK/nginx.pids"
  TARGETS+=(--target "HAProxy=127.0.0.1:$HAP@$WORK/haproxy.pids" --target "nginx=127.0.0.1:$NGX@$WORK/nginx.pids")
  RATE_TARGETS+=(--target "HAProxy=127.0.0.1:$HAP@$WORK/haproxy.pids" --target "nginx=127.0.0.1:$NGX@$WORK/nginx.pids")
fi

VERS=""
[ "$BASELINES" = 1 ] && VERS=", $(haproxy -v | head -1 | cut -d' ' -f1-3), $(nginx -v 2>&1 | cut -d' ' -f3)"
echo "== gateway cost: $(nproc) cores, load average $(cut -d" " -f1-3 /proc/loadavg), $(uname -r), $(go version | cut -d' ' -f3)$VERS"
echo "== gateways: $GWS"
"$WORK/benchload" cost "${TARGETS[@]}" "${FLOOR[@]}" --account-pid "$BACKENDS" \
  --work "$CONNWORK" --conns "$CONNS" --conc "$CONC" --bulk-mb "$BULK_MB" --streams "$STREAMS" --rounds "$ROUNDS"
if [ -n "${RATES:-}" ]; then
  echo
  "$WORK/benchload" rate "${RATE_TARGETS[@]}" --rates "$RATES" --for "${RATE_FOR:-20s}"
fi
