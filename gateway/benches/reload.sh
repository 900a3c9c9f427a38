#!/usr/bin/env bash
# Reload benchmark: how long edge-gateway takes to reload a 100,000-range allowlist, and the
# requests per second it serves while reloading against while not.
#
# Usage: gateway/benches/reload.sh            (from anywhere; builds the release binary)
# Env:   DURATION=10 (seconds per wrk run)  CONNECTIONS=32  RANGES=100000
#
# Everything runs on loopback: nginx as the upstream (a fixed 200 "ok"), the gateway in
# front of it with a self-signed certificate, wrk over HTTPS. Reload times come from the
# notify protocol itself: a helper binds the NOTIFY_SOCKET and stamps each datagram, and a
# reload lasts from its RELOADING=1 to the READY=1 that follows (the daemon's own view:
# reading, validating, building the new state and swapping it in). The wall time from
# `kill -HUP` to READY=1 is printed too. Figures only: nothing here passes or fails on speed.
set -euo pipefail

repo="$(cd "$(dirname "$0")/../.." && pwd)"
DURATION=${DURATION:-10}
CONNECTIONS=${CONNECTIONS:-32}
RANGES=${RANGES:-100000}
RELOADS=20
work="$(mktemp -d)"
pids=()
# shellcheck source=lib.sh
source "$repo/gateway/benches/lib.sh"
trap 'stop_and_remove "$work" "${pids[@]}"' EXIT

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])'
}

build_gateway() {
    cargo build --release -p edge-gateway --manifest-path "$repo/Cargo.toml" >&2
    gateway="$repo/target/release/edge-gateway"
}

start_upstream() {
    upstream_port=$(free_port)
    mkdir -p "$work/nginx"
    cat >"$work/nginx/nginx.conf" <<CONF
daemon off;
worker_processes 1;
error_log $work/nginx/error.log;
pid $work/nginx/nginx.pid;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $work/nginx;
    proxy_temp_path $work/nginx;
    fastcgi_temp_path $work/nginx;
    uwsgi_temp_path $work/nginx;
    scgi_temp_path $work/nginx;
    keepalive_requests 1000000;
    server {
        listen 127.0.0.1:$upstream_port;
        location / { return 200 "ok\n"; }
    }
}
CONF
    nginx -c "$work/nginx/nginx.conf" -p "$work/nginx" &
    pids+=($!)
}

# The allowlist: RANGES distinct /24s in 10.0.0.0/8 and beyond, then the loopback range the
# benchmark's client comes from, last.
write_config() {
    local ranges_file="$work/ranges.toml"
    python3 - "$RANGES" >"$ranges_file" <<'PY'
import sys
n = int(sys.argv[1])
for i in range(n):
    a, b, c = 10 + i // 65536, (i // 256) % 256, i % 256
    print(f'    "{a}.{b}.{c}.0/24",')
PY
    http_port=$(free_port)
    https_port=$(free_port)
    metrics_port=$(free_port)
    {
        printf '[listen]\nhttp = "127.0.0.1:%s"\n' "$http_port"
        printf 'https = "127.0.0.1:%s"\n' "$https_port"
        printf 'metrics = "127.0.0.1:%s"\n\n' "$metrics_port"
        printf '[tls]\ncert = "%s/cert.pem"\nkey = "%s/key.pem"\n\n' "$work" "$work"
        printf '[upstream]\nurl = "http://127.0.0.1:%s"\n\n' "$upstream_port"
        printf '[access]\nallow = [\n'
        cat "$ranges_file"
        printf '    "127.0.0.0/8",\n]\n\n[log]\naccess = false\nlevel = "warn"\n'
    } >"$work/gateway.toml"
}

# Binds the notify socket and writes one line per datagram: a monotonic timestamp in
# microseconds, then the datagram's lines joined by spaces.
start_notify_listener() {
    python3 - "$work/notify.sock" >"$work/notify.log" <<'PY' &
import socket, sys, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
while True:
    msg = s.recv(4096).decode()
    print(time.monotonic_ns() // 1000, " ".join(msg.split("\n")).strip(), flush=True)
PY
    pids+=($!)
    while [[ ! -S $work/notify.sock ]]; do sleep 0.05; done
}

readies() { grep -c 'READY=1' "$work/notify.log" || true; }

start_gateway() {
    NOTIFY_SOCKET="$work/notify.sock" "$gateway" run --config "$work/gateway.toml" \
        2>"$work/gateway.log" &
    gateway_pid=$!
    pids+=("$gateway_pid")
    local started=$SECONDS
    until [[ $(readies) -ge 1 ]]; do
        kill -0 "$gateway_pid" 2>/dev/null || { cat "$work/gateway.log" >&2; exit 1; }
        ((SECONDS - started < 60)) || { echo "gateway not ready in 60 s" >&2; exit 1; }
        sleep 0.05
    done
}

# One reload: SIGHUP, then wait for the next READY=1. Prints the wall time in ms.
reload_once() {
    local before start_ns end_ns
    before=$(readies)
    start_ns=$(date +%s%N)
    kill -HUP "$gateway_pid"
    until [[ $(readies) -gt $before ]]; do sleep 0.001; done
    end_ns=$(date +%s%N)
    echo $(((end_ns - start_ns) / 1000))
}

# RELOADING=1 to READY=1 for each reload in the notify log, in ms.
reload_durations() {
    awk '/RELOADING=1/ { start = $1 }
         /READY=1/ && start { printf "%.1f\n", ($1 - start) / 1000; start = 0 }' \
        "$work/notify.log"
}

stats() {
    sort -n | awk '{ v[NR] = $1; sum += $1 } END {
        printf "min %.1f ms, median %.1f ms, max %.1f ms (n=%d)\n",
            v[1], v[int((NR + 1) / 2)], v[NR], NR }'
}

run_wrk() {
    local label=$1
    shift
    wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" "$@" "https://127.0.0.1:$https_port/" \
        >"$work/wrk-$label.txt"
    awk '/Requests\/sec/ { print $2 }' "$work/wrk-$label.txt"
}

# Reloads at an even pace across one wrk run: RELOADS within DURATION seconds.
reload_during() {
    local pause
    pause=$(awk -v d="$DURATION" -v n="$RELOADS" 'BEGIN { printf "%.3f", d / (n + 1) }')
    sleep "$pause"
    for _ in $(seq "$RELOADS"); do
        kill -HUP "$gateway_pid"
        sleep "$pause"
    done
}

failed_reloads() {
    curl -s "http://127.0.0.1:$metrics_port/metrics" |
        awk '/^edge_gateway_config_reloads_total\{result="failure"\}/ { print $2 }'
}

compare() {
    local label=$1
    shift
    local quiet busy
    quiet=$(run_wrk "$label-quiet" "$@")
    reload_during &
    local reloader=$!
    busy=$(run_wrk "$label-reloading" "$@")
    wait "$reloader"
    printf '%-16s without reloads %10s req/s   during %d reloads %10s req/s   ratio %s\n' \
        "$label" "$quiet" "$RELOADS" "$busy" \
        "$(awk -v a="$busy" -v b="$quiet" 'BEGIN { printf "%.2f", a / b }')"
    grep -E 'Socket errors|Non-2xx' "$work/wrk-$label-reloading.txt" || true
}

main() {
    build_gateway
    make_certificate "$work"
    start_upstream
    write_config
    start_notify_listener
    local size
    size=$(du -h "$work/gateway.toml" | cut -f1)
    echo "allowlist: $RANGES ranges (+1 for the client), config file $size"
    start_gateway

    : >"$work/wall.txt"
    for _ in $(seq 10); do
        reload_once >>"$work/wall.txt"
    done
    echo "reload, RELOADING=1 to READY=1:  $(reload_durations | stats)"
    echo "reload, kill -HUP to READY=1:    $(awk '{ print $1 / 1000 }' "$work/wall.txt" | stats)"

    echo "wrk: $CONNECTIONS connections, ${DURATION}s per run, one thread, 2-core machine shared"
    echo "     by wrk, the gateway and nginx"
    compare keep-alive
    compare new-connection -H 'Connection: close'
    echo "failed reloads: $(failed_reloads)"
}

main "$@"
