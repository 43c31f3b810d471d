# Sourced by bench/10-gateway.sh and bench/11-gateway-cost.sh (not a benchmark itself):
# the SNI-routing baselines both scripts measure the gateway against, configured alike.
# start_sni_baselines starts HAProxy on $HAP and nginx's stream module on $NGX, routing
# echo/bulk/idle by SNI to $ECHO, $SINK and $HOLD and sized by $FDLIM; it writes its files
# into $WORK, appends the processes to PIDS (haproxy's pid also to $WORK/haproxy.pids) and
# sets NGXPID. start_floor starts the floor relay (benchload floor) on $FL1 $FL2 $FL3.
start_sni_baselines() {
cat > "$WORK/haproxy.cfg" <<CFG
global
  maxconn $(( (FDLIM - 100) / 2 ))
  nbthread 2
defaults
  mode tcp
  timeout connect 5s
  timeout client 1h
  timeout server 1h
  maxconn $(( (FDLIM - 100) / 2 ))
frontend gw
  bind 127.0.0.1:$HAP
  tcp-request inspect-delay 3s
  tcp-request content accept if { req.ssl_hello_type 1 }
  use_backend echo if { req.ssl_sni -i outbound_.8443_._.echo.demo.svc.cluster.local }
  use_backend bulk if { req.ssl_sni -i outbound_.8443_._.bulk.demo.svc.cluster.local }
  use_backend idle if { req.ssl_sni -i outbound_.8443_._.idle.demo.svc.cluster.local }
backend echo
  server s 127.0.0.1:$ECHO
backend bulk
  server s 127.0.0.1:$SINK
backend idle
  server s 127.0.0.1:$HOLD
CFG
haproxy -db -f "$WORK/haproxy.cfg" > "$WORK/haproxy.log" 2>&1 &
PIDS+=($!); echo $! > "$WORK/haproxy.pids"

mkdir -p "$WORK/nginx/logs"
cat > "$WORK/nginx.conf" <<CFG
load_module /usr/lib/nginx/modules/ngx_stream_module.so;
daemon off;
worker_processes 2;
worker_rlimit_nofile $FDLIM;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections $(( FDLIM - 100 )); }
stream {
  map \$ssl_preread_server_name \$up {
    outbound_.8443_._.echo.demo.svc.cluster.local 127.0.0.1:$ECHO;
    outbound_.8443_._.bulk.demo.svc.cluster.local 127.0.0.1:$SINK;
    outbound_.8443_._.idle.demo.svc.cluster.local 127.0.0.1:$HOLD;
    default 127.0.0.1:9;
  }
  server {
    listen 127.0.0.1:$NGX;
    ssl_preread on;
    preread_timeout 3s;
    proxy_pass \$up;
    proxy_timeout 1h;
  }
}
CFG
nginx -p "$WORK/nginx" -c "$WORK/nginx.conf" > "$WORK/nginx.log" 2>&1 &
NGXPID=$!; PIDS+=($NGXPID)
}

# The floor: a relay that only accepts, connects and hands both sockets to the kernel
# (sockmap redirect), one listener per backend ($FL1 -> $ECHO, $FL2 -> $SINK, $FL3 -> $HOLD).
# Needs root and BPF. Sets FLOORPID (its pid also in $WORK/floor.pids); once its listeners
# are up, floor_target sets FLOOR to the benchload --target arguments, or to nothing
# (saying why) when it could not start.
start_floor() {
"$WORK/benchload" floor --relay 127.0.0.1:$FL1=127.0.0.1:$ECHO --relay 127.0.0.1:$FL2=127.0.0.1:$SINK \
  --relay 127.0.0.1:$FL3=127.0.0.1:$HOLD > "$WORK/floor.log" 2>&1 &
FLOORPID=$!; PIDS+=($FLOORPID); echo $FLOORPID > "$WORK/floor.pids"
}
floor_target() {
FLOOR=()
if grep -q '^ready' "$WORK/floor.log"; then
  FLOOR=(--target "floor=127.0.0.1:$FL1,127.0.0.1:$FL2,127.0.0.1:$FL3@$WORK/floor.pids")
else
  echo "note: no floor in this run: $(tail -1 "$WORK/floor.log")" >&2
fi
}
