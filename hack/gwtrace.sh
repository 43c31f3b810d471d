#!/usr/bin/env bash
# hack/gwtrace.sh — where one gateway build's system calls and context switches go, per
# connection (docs/benchmarks.md, "The accept and connect path"). Starts the benchmark
# backends and BINARY (benchgw, or any program taking benchgw's flags), attaches a tracer,
# makes CONNS connections through it (benchload cost: TLS 1.3 handshake + 32-byte echo +
# close, concurrency 16), and prints:
#   strace: strace -c -f of the gateway, with each call's count per connection (strace's
#           own overhead inflates the runtime's futex and nanosleep counts);
#   sched:  perf record -e sched:sched_switch -g: switches per connection, split by where
#           the thread blocked (the runtime's sysmon, the netpoller's epoll wait, an idle M
#           parked, other: involuntary preemption and the rest).
# usage: hack/gwtrace.sh strace|sched BINARY [MODE=poll-splice] [CONNS=1000]
set -euo pipefail
cd "$(dirname "$0")/.."
WHAT=$1 BIN=$(realpath "$2") MODE=${3:-poll-splice} N=${4:-1000}
W=$(mktemp -d /tmp/meshfed-gwtrace.XXXXXX)
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$W"' EXIT
go build -o "$W/benchload" ./eastwest/internal/benchload
B=$W/benchload
mapfile -t P < <("$B" freeports 5)
"$B" backends --echo 127.0.0.1:${P[0]} --sink 127.0.0.1:${P[1]} --hold 127.0.0.1:${P[2]} > "$W/be.log" 2>&1 &
PIDS+=($!)
cat > "$W/exports.yaml" <<Y
services:
  - {name: echo, namespace: demo, ports: [{port: 8443, targetPort: ${P[0]}}], endpoints: [{address: 127.0.0.1}]}
  - {name: bulk, namespace: demo, ports: [{port: 8443, targetPort: ${P[1]}}], endpoints: [{address: 127.0.0.1}]}
  - {name: idle, namespace: demo, ports: [{port: 8443, targetPort: ${P[2]}}], endpoints: [{address: 127.0.0.1}]}
Y
"$BIN" --listen 127.0.0.1:${P[3]} --admin 127.0.0.1:${P[4]} --exports "$W/exports.yaml" --copy-mode "$MODE" > "$W/gw.log" 2>&1 &
GW=$!; PIDS+=($GW)
for p in ${P[0]} ${P[3]}; do
  for _ in $(seq 300); do (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null && break; sleep 0.1; done
done
case $WHAT in
strace) strace -c -f -o "$W/trace.out" -p $GW 2>/dev/null & ;;
sched) perf record -q -e sched:sched_switch -g -o "$W/perf.data" -p $GW 2>/dev/null & ;;
*) echo "usage: $0 strace|sched BINARY [MODE] [CONNS]" >&2; exit 2 ;;
esac
TR=$!
sleep 1 # the tracer attaches
"$B" cost --target "direct=127.0.0.1:${P[0]},127.0.0.1:${P[1]},127.0.0.1:${P[2]}" --target "gw=127.0.0.1:${P[3]}" \
  --conns "$N" --conc 16 --bulk-mb 0 --rounds 1 --perf=false > "$W/cost.out" 2>&1 || { cat "$W/cost.out" "$W/gw.log"; exit 1; }
kill -INT $TR; wait $TR 2>/dev/null || true
echo "== $WHAT: $BIN ($MODE), $N connections (+1 warm-up), load average $(cut -d' ' -f1-3 /proc/loadavg)"
if [ "$WHAT" = strace ]; then
  awk -v n="$N" '$1 ~ /^[0-9.]+$/ && NF >= 5 { calls = $4; err = (NF == 6) ? $5 : 0
      printf "%-18s %8d calls %6d errors  %6.2f per connection\n", $NF, calls, err, calls / n }' "$W/trace.out"
else
  perf script -i "$W/perf.data" 2>/dev/null | awk -v n="$N" '
    /sched:sched_switch/ { if (ev) cls(); ev = 1; s = ""; next }
    ev { s = s " " $2 }
    function cls() { t++; if (s ~ /runtime\.sysmon/) a++; else if (s ~ /runtime\.netpoll/) b++; else if (s ~ /runtime\.stopm/) c++; else d++; ev = 0 }
    END { if (ev) cls(); printf "switches %.2f per connection: sysmon %.2f, netpoll wait %.2f, idle M (stopm) %.2f, other %.2f\n", t/n, a/n, b/n, c/n, d/n }'
fi
