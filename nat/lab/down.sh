#!/usr/bin/env bash
# Tear the lab down: stop every service, delete every namespace (and so every link, address,
# route and rule in it), remove /etc/netns/HOST and /run/edge-lab. Leaves .lab/ (logs, keys,
# the database) for the next `make up`; `make clean` removes that too.
# Safe on a lab that is half built, left by a crashed run, owned by another checkout, or absent.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"

stop_supervisor() {
    local pid
    if supervisor_running; then
        # Stops the programs in reverse priority order, each with its own stop timeout.
        ctl shutdown >/dev/null || true
    fi
    pid=$(cat "$LAB_RUN/supervisord.pid" 2>/dev/null || true)
    if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then
        for _ in $(seq 1 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.2
        done
        if kill -0 "$pid" 2>/dev/null; then
            warn "supervisord (pid $pid) did not stop in 20 s: killing it"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
}

main() {
    with_lab_lock
    local present
    present=$(lab_namespaces_present | tr '\n' ' ')
    if [[ -z $present && ! -e $LAB_RUN ]]; then
        say "no lab to tear down"
        return 0
    fi
    stop_supervisor
    "$LAB_ROOT/nat/lab/net.sh" down
    rm -rf "$LAB_RUN"
    say "lab is down (logs kept in $LAB_LOGS)"
}

main "$@"
