# shellcheck shell=bash
# What the benchmarks beside this file share, sourced by them: stopping what a run started and
# the throwaway certificate the gateway (and nginx) serve.

# Stops the processes given after the first argument and removes the run's folder, $1. For the
# EXIT trap: `trap 'stop_and_remove "$work" "${pids[@]}"' EXIT`.
stop_and_remove() {
    local dir="$1" pid
    shift
    for pid in "$@"; do
        kill "$pid" 2>/dev/null || true
    done
    wait 2>/dev/null || true
    rm -rf "$dir"
}

# A self-signed P-256 certificate for localhost and 127.0.0.1, valid two days (a run lasts
# minutes): $1/cert.pem and its key, $1/key.pem.
make_certificate() {
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
        -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
        -keyout "$1/key.pem" -out "$1/cert.pem" 2>/dev/null
}
