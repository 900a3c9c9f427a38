#!/usr/bin/env bash
# The lab at a glance: each host with its addresses and its services (from the supervisor),
# then one line of reachability checks as the contract's clients see them.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"

# What the lab's clients trust: the lab CA and Pebble's roots (nat/lab/pebble.sh keeps it).
CA="$LAB_STATE/ca/trust.pem"
[[ -s $CA ]] || CA="$LAB_STATE/ca/ca.pem"

# The host a program runs on, read from its `command = ip netns exec HOST ...` line.
program_host() {
    awk '/^command *=/ { for (i = 1; i <= NF; i++) if ($i == "exec") { print $(i + 1); exit } }' \
        "$LAB_ROOT/nat/lab/supervisor/$1.conf" 2>/dev/null
}

show_hosts() {
    local host addrs line name
    local services
    services=$(ctl status 2>/dev/null || true)
    for host in "${LAB_HOSTS[@]}"; do
        if [[ ! -e /run/netns/$host ]]; then
            printf '%-9s absent\n' "$host"
            continue
        fi
        addrs=$(ip -n "$host" -4 -br addr show | awk '$1 != "lo" {
            for (i = 3; i <= NF; i++) printf "%s ", $i }')
        printf '%-9s %s\n' "$host" "$addrs"
        while read -r line; do
            [[ -n $line ]] || continue
            name=${line%% *}
            [[ $(program_host "$name") == "$host" ]] && printf '          %s\n' "$line"
        done <<<"$services"
    done
    return 0
}

# check LABEL EXPECTED CMD...: run CMD, print "LABEL=RESULT" and ok or FAIL against EXPECTED.
check() {
    local label=$1 expected=$2 got
    shift 2
    got=$("$@" 2>/dev/null) || true
    [[ -n $got ]] || got=none
    if [[ $got == "$expected" ]]; then
        printf '%s %s ok' "$label" "$got"
    else
        printf '%s %s FAIL(want %s)' "$label" "$got" "$expected"
    fi
}

http_code() {
    local host=$1 url=$2
    on "$host" curl -s -m 3 --cacert "$CA" -o /dev/null -w '%{http_code}' "$url"
}

tcp() {
    if on "$1" nc -z -w 1 "$2" "$3"; then echo open; else echo blocked; fi
}

show_reachability() {
    local parts=()
    parts+=("$(check "office->https" 200 http_code office https://app.example.com/)")
    parts+=("$(check "office->http" 301 http_code office http://app.example.com/)")
    parts+=("$(check "outsider->https" 403 http_code outsider https://app.example.com/)")
    parts+=("$(check "web->db:3306" open tcp web 10.0.2.10 3306)")
    parts+=("$(check "bastion->db:3306" blocked tcp bastion 10.0.2.10 3306)")
    printf 'reachability: %s' "${parts[0]}"
    printf ' | %s' "${parts[@]:1}"
    printf '\n'
}

main() {
    if [[ -z $(lab_namespaces_present) ]]; then
        say "the lab is down (make up)"
        return 0
    fi
    if supervisor_running; then
        say "up, built from $(lab_owner); supervisor: $LAB_SUPERVISOR_CONF"
    else
        say "namespaces exist but no supervisor runs: a crashed run? (make down)"
    fi
    show_hosts
    show_reachability
}

main "$@"
