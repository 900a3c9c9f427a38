#!/usr/bin/env bash
# Compares edge-gateway with nginx doing the same job, and with the upstream reached directly.
#
# Everything runs on loopback, on this machine, at the same time as nothing else of ours:
#   - the upstream: an nginx answering a fixed 13-byte body on 127.0.0.1:18000;
#   - edge-gateway (release build) on 127.0.0.1:18443, TLS 1.2/1.3, proxying to the upstream
#     over pooled keep-alive connections;
#   - nginx on 127.0.0.1:19443 configured the same way: TLS 1.2/1.3 with the same certificate,
#     no session tickets (the gateway issues none), proxy to the same upstream with keep-alive.
# Access logs are off on both (the gateway with log.access = false, nginx with access_log off),
# so the figures compare the request path, not log writing.
#
# For each target it runs wrk over HTTPS keep-alive, wrk with a new connection per request
# ("Connection: close"), and h2load over HTTP/2 (the upstream direct: HTTP/1.1), each for
# DURATION seconds, and prints requests per second, latency percentiles (wrk) or mean and
# max (h2load, which gives no percentiles), and the gateway/nginx ratio.
#
# Usage: gateway/benches/compare.sh            (DURATION=10 CONNECTIONS=50 by default)
# Needs: nginx, wrk, h2load (nghttp2-client), openssl, cargo.
set -euo pipefail

DURATION="${DURATION:-10}"
CONNECTIONS="${CONNECTIONS:-50}"
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
WORK="$(mktemp -d /tmp/edge-gateway-bench.XXXXXX)"
UPSTREAM_PORT=18000
GATEWAY_PORT=18443
GATEWAY_HTTP_PORT=18080
NGINX_PORT=19443
PIDS=()
# shellcheck source=lib.sh
source "$ROOT/gateway/benches/lib.sh"
trap 'stop_and_remove "$WORK" "${PIDS[@]}"' EXIT

need() {
    command -v "$1" >/dev/null || { echo "compare.sh: $1 is not installed" >&2; exit 1; }
}

# An nginx instance of its own: prefix $WORK/$1, its pid file and error log (warnings and
# worse) there, configuration text on stdin.
start_nginx() {
    local name="$1"
    mkdir -p "$WORK/$name/logs"
    cat >"$WORK/$name/nginx.conf"
    nginx -p "$WORK/$name" -c "$WORK/$name/nginx.conf" \
        -g "daemon off; pid $WORK/$name/nginx.pid; error_log $WORK/$name/logs/error.log warn;" &
    PIDS+=("$!")
}

start_upstream() {
    start_nginx upstream <<EOF
worker_processes 1;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000;
    server {
        listen 127.0.0.1:$UPSTREAM_PORT reuseport backlog=4096;
        location / { return 200 "hello, bench\n"; }
    }
}
EOF
}

start_nginx_proxy() {
    start_nginx proxy <<EOF
# One worker per core, as the gateway runs one tokio worker per core.
worker_processes auto;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000;
    upstream app {
        server 127.0.0.1:$UPSTREAM_PORT;
        # Per worker: 2 x 512 idle upstream connections, as the gateway's 1024 below.
        keepalive 512;
    }
    server {
        # "listen ... http2" rather than "http2 on": Debian 12 ships nginx 1.22.
        listen 127.0.0.1:$NGINX_PORT ssl http2 backlog=4096;
        ssl_certificate $WORK/cert.pem;
        ssl_certificate_key $WORK/key.pem;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_tickets off;
        add_header Strict-Transport-Security "max-age=31536000" always;
        location / {
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$host;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto https;
            proxy_set_header X-Forwarded-Host \$host;
            proxy_set_header X-Request-Id \$request_id;
        }
    }
}
EOF
}

start_gateway() {
    cat >"$WORK/gateway.toml" <<EOF
[listen]
http = "127.0.0.1:$GATEWAY_HTTP_PORT"
https = "127.0.0.1:$GATEWAY_PORT"

[tls]
cert = "$WORK/cert.pem"
key = "$WORK/key.pem"

[upstream]
url = "http://127.0.0.1:$UPSTREAM_PORT"

[access]
allow = ["127.0.0.0/8"]

[limits]
# As many idle upstream connections as nginx keeps (h2load runs 500 streams at once).
upstream_max_idle = 1024

[log]
level = "warn"
access = false
EOF
    "$ROOT/target/release/edge-gateway" run --config "$WORK/gateway.toml" \
        2>"$WORK/gateway.log" &
    PIDS+=("$!")
}

port_is_free() {
    if (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then
        echo "compare.sh: port $1 is already in use; stop what listens there first" >&2
        exit 1
    fi
}

wait_for_port() {
    local port="$1" _
    for _ in $(seq 1 100); do
        if (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    echo "compare.sh: nothing listens on port $port" >&2
    exit 1
}

# wrk: prints "req/s p50 p90 p99" (latencies as wrk writes them).
run_wrk() {
    local url="$1"
    shift
    local out
    out="$(timeout $((DURATION + 30)) \
        wrk -t2 -c"$CONNECTIONS" -d"${DURATION}s" --latency "$@" "$url")"
    echo "$out" >>"$WORK/raw.txt"
    awk '
        /Requests\/sec:/ { rps = $2 }
        $1 == "50%" { p50 = $2 }
        $1 == "90%" { p90 = $2 }
        $1 == "99%" { p99 = $2 }
        END { printf "%s %s %s %s\n", rps, p50, p90, p99 }
    ' <<<"$out"
}

# h2load: prints "req/s mean max" (time for request).
run_h2load() {
    local url="$1"
    shift
    local out
    out="$(timeout $((DURATION + 30)) h2load -c"$CONNECTIONS" -m10 -t2 -D"$DURATION" "$@" "$url")"
    echo "$out" >>"$WORK/raw.txt"
    awk '
        /^finished in/ { rps = $4 }
        /^time for request:/ { max = $5; mean = $6 }
        END { printf "%s %s %s\n", rps, mean, max }
    ' <<<"$out"
}

ratio() {
    awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'
}

main() {
    need nginx
    need wrk
    need h2load
    need openssl
    local port
    for port in "$UPSTREAM_PORT" "$GATEWAY_PORT" "$GATEWAY_HTTP_PORT" "$NGINX_PORT"; do
        port_is_free "$port"
    done
    (cd "$ROOT" && cargo build --release -p edge-gateway --bin edge-gateway)
    make_certificate "$WORK"
    start_upstream
    start_nginx_proxy
    start_gateway
    wait_for_port "$UPSTREAM_PORT"
    wait_for_port "$NGINX_PORT"
    wait_for_port "$GATEWAY_PORT"

    local gw="https://127.0.0.1:$GATEWAY_PORT/"
    local ngx="https://127.0.0.1:$NGINX_PORT/"
    local direct="http://127.0.0.1:$UPSTREAM_PORT/"

    # A short warm-up fills both proxies' upstream pools.
    wrk -t1 -c"$CONNECTIONS" -d2s "$gw" >/dev/null
    wrk -t1 -c"$CONNECTIONS" -d2s "$ngx" >/dev/null

    local name url g n
    declare -A KA CL H2
    for name in gateway nginx direct; do
        case "$name" in
            gateway) url="$gw" ;;
            nginx) url="$ngx" ;;
            direct) url="$direct" ;;
        esac
        KA[$name]="$(run_wrk "$url")"
        CL[$name]="$(run_wrk "$url" -H 'Connection: close')"
        if [[ "$name" == direct ]]; then
            H2[$name]="$(run_h2load "$url" --h1)"
        else
            H2[$name]="$(run_h2load "$url")"
        fi
    done

    echo
    echo "edge-gateway vs nginx, loopback, $(nproc) cores," \
        "${DURATION}s per run, $CONNECTIONS connections"
    printf '\n%-34s %12s %10s %10s %10s\n' "wrk (direct: plain HTTP)" "req/s" "p50" "p90" "p99"
    for name in gateway nginx direct; do
        read -r -a g <<<"${KA[$name]}"
        printf '%-34s %12s %10s %10s %10s\n' "$name, keep-alive" "${g[@]}"
    done
    for name in gateway nginx direct; do
        read -r -a g <<<"${CL[$name]}"
        printf '%-34s %12s %10s %10s %10s\n' "$name, new connection per request" "${g[@]}"
    done
    printf '\n%-34s %12s %10s %10s\n' "h2load -m10 (direct: HTTP/1.1)" "req/s" "mean" "max"
    for name in gateway nginx direct; do
        read -r -a g <<<"${H2[$name]}"
        printf '%-34s %12s %10s %10s\n' "$name" "${g[@]}"
    done

    echo
    read -r -a g <<<"${KA[gateway]}"
    read -r -a n <<<"${KA[nginx]}"
    echo "gateway/nginx req/s, HTTPS keep-alive: $(ratio "${g[0]}" "${n[0]}")"
    read -r -a g <<<"${CL[gateway]}"
    read -r -a n <<<"${CL[nginx]}"
    echo "gateway/nginx req/s, new connections:  $(ratio "${g[0]}" "${n[0]}")"
    read -r -a g <<<"${H2[gateway]}"
    read -r -a n <<<"${H2[nginx]}"
    echo "gateway/nginx req/s, HTTP/2:           $(ratio "${g[0]}" "${n[0]}")"
    if grep -qiE 'error|panick' "$WORK/gateway.log"; then
        echo "gateway log:" && cat "$WORK/gateway.log"
    fi
}

main "$@"
