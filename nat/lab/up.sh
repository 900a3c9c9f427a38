#!/usr/bin/env bash
# Bring the lab up: the network (net.sh), the lab CA and certificates (pki.sh), the database
# provisioned from mysql/, and every service under the lab's supervisor; then wait until each
# one answers and https://app.example.com/ answers 200 from office.
#
# On a lab that is already up from this checkout it changes nothing: it checks the services
# and says so. A lab left by a crashed run (namespaces without a supervisor) is cleaned up
# first. If the lab does not come up, it says which service failed and shows its log, then
# tears the lab down again (LAB_KEEP=1 keeps it up to look at).
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"

READY_TIMEOUT=${LAB_READY_TIMEOUT:-120}
# What the lab's clients trust for app.example.com: the lab CA and every root Pebble has had
# (the gateway's certificate comes from Pebble; nat/lab/pebble.sh keeps this file).
TRUST="$LAB_STATE/ca/trust.pem"

check_tools() {
    local tool missing=()
    for tool in ip iptables-restore sysctl supervisord supervisorctl openssl curl nc flock; do
        command -v "$tool" >/dev/null || missing+=("$tool")
    done
    [[ ${#missing[@]} -eq 0 ]] || die "missing tools: ${missing[*]} (run: make deps, as root)"
    [[ $(id -u) -eq 0 ]] || die "the lab needs root (namespaces, iptables): run as root"
}

# The services this checkout's lab runs: one file per program in supervisor/.
programs() {
    local f
    for f in "$LAB_ROOT"/nat/lab/supervisor/*.conf; do
        basename "$f" .conf
    done
}

# Readiness of each service, as its clients see it. A program without a probe here counts as
# ready once the supervisor holds it RUNNING.
probe_mysql() { on web nc -z -w 1 10.0.2.10 3306; }
probe_app() { on web curl -fs -m 2 -o /dev/null http://127.0.0.1:8000/healthz; }
probe_gateway() {
    on office curl -sS -m 3 --cacert "$TRUST" -o /dev/null -w '%{http_code}' \
        https://app.example.com/ 2>/dev/null | grep -qx 200
}
probe_prometheus() { on bastion curl -fs -m 2 -o /dev/null http://127.0.0.1:9090/-/ready; }

program_state() {
    ctl status "$1" 2>/dev/null | awk '{print $2}'
}

show_failure() {
    local name=$1 why=$2 log="$LAB_LOGS/$1.log"
    warn "$name did not come up: $why"
    warn "its log, $log (last 30 lines):"
    tail -n 30 "$log" 2>/dev/null | sed 's/^/    /' >&2 || true
    warn "all services:"
    ctl status 2>&1 | sed 's/^/    /' >&2 || true
}

wait_ready() {
    local deadline=$((SECONDS + READY_TIMEOUT)) name state pending
    while :; do
        pending=()
        for name in $(programs); do
            state=$(program_state "$name")
            case $state in
                RUNNING)
                    if declare -F "probe_$name" >/dev/null && ! "probe_$name"; then
                        pending+=("$name")
                    fi
                    ;;
                FATAL | EXITED | STOPPED)
                    show_failure "$name" "the supervisor reports $state"
                    return 1
                    ;;
                *) pending+=("$name") ;;
            esac
        done
        [[ ${#pending[@]} -eq 0 ]] && return 0
        if ((SECONDS >= deadline)); then
            show_failure "${pending[0]}" "not ready after ${READY_TIMEOUT}s (${pending[*]})"
            return 1
        fi
        sleep 0.5
    done
}

lab_complete() {
    [[ $(lab_namespaces_present | wc -l) -eq ${#LAB_HOSTS[@]} ]] && supervisor_running
}

# Leftovers of a crashed or half-finished run: clean them; a whole lab from another checkout:
# refuse, since tearing down someone else's lab is theirs to decide.
clear_the_way() {
    local present owner
    present=$(lab_namespaces_present | tr '\n' ' ')
    owner=$(lab_owner)
    if supervisor_running && [[ -n $owner && $owner != "$LAB_ROOT" ]]; then
        die "a lab from $owner is up; run 'make down' (there or here) first"
    fi
    if [[ -n $present || -e $LAB_RUN ]]; then
        warn "found a lab left from an earlier run (namespaces: ${present:-none}): cleaning up"
        "$LAB_ROOT/nat/lab/down.sh"
    fi
}

# The app's session and CSRF key: made once, kept with the lab's state.
make_secret_key() {
    local key="$LAB_STATE/web/secret-key"
    [[ -s $key ]] && return 0
    (umask 077 && openssl rand -hex 32 >"$key")
}

# The database, provisioned once by mysql/provision.sh (which changes nothing when it finds
# its own finished work). A directory a failed run left half done is removed and made anew:
# it holds no data yet.
provision_db() {
    local db="$LAB_STATE/db" args
    id mysql >/dev/null 2>&1 || die "no 'mysql' user: is mariadb-server installed? (make deps)"
    # mariadbd runs as mysql: it creates its socket here and reads its key.
    chown mysql:mysql "$db" "$db/server-key.pem"
    args=(--datadir "$db/data" --socket "$db/mysqld.sock" --bind-address 10.0.2.10
        --app-host 10.0.1.10 --db-password-file "$db/app-password"
        --web-password-file "$LAB_STATE/web/app-password" --tls-ca "$LAB_STATE/ca/ca.pem"
        --tls-cert "$db/server.pem" --tls-key "$db/server-key.pem" --user mysql)
    if [[ -d $db/data && ! -e $db/data/.notes-provisioned ]] \
        || [[ -e $db/data/.notes-provisioned && ! -s $LAB_STATE/web/app-password ]]; then
        warn "removing $db/data: an unfinished provisioning from an earlier run"
        rm -rf "$db/data" "$db/app-password" "$LAB_STATE/web/app-password"
    fi
    if ! "$LAB_ROOT/mysql/provision.sh" "${args[@]}" >>"$LAB_LOGS/provision.log" 2>&1; then
        tail -n 20 "$LAB_LOGS/provision.log" | sed 's/^/    /' >&2
        die "provisioning the database failed; the whole log: $LAB_LOGS/provision.log"
    fi
}

prepare_state() {
    install -d -m 0755 "$LAB_STATE" "$LAB_LOGS" "$LAB_STATE/bastion"
    install -d -m 0700 "$LAB_STATE/web"
    "$LAB_ROOT/nat/lab/pki.sh"
    # Pebble keeps nothing between starts (a new root, no accounts): a new lab starts with no
    # Pebble root trusted and no certificate stored, and the gateway orders one at start.
    rm -f "$TRUST" "$LAB_STATE/web/acme/certificate.pem"
    # The running copy, which drills may edit; a new lab starts from the file in nat/lab/.
    install -m 0600 "$LAB_ROOT/nat/lab/gateway.toml" "$LAB_STATE/web/gateway.toml"
    [[ -x $LAB_ROOT/target/release/edge-gateway ]] \
        || die "no target/release/edge-gateway: build it (make up runs cargo build --release)"
    make_secret_key
    provision_db
}

start_supervisor() {
    install -d -m 0700 "$LAB_RUN"
    printf '%s\n' "$LAB_ROOT" >"$LAB_RUN/root"
    # The daemon must not inherit the lab lock (ours on fd 9, or the one `flock LOCK make up`
    # took on a descriptor of its own) and hold it after this script ends.
    # Nor this script's output: a pipe it kept open (`make up | tail`) would never end.
    (
        close_lock_fds
        exec supervisord -c "$LAB_SUPERVISOR_CONF" </dev/null >>"$LAB_LOGS/supervisord.out" 2>&1
    )
    # A Python daemon's start, which a busy machine can stretch to seconds.
    local deadline=$((SECONDS + 30))
    until supervisor_running; do
        ((SECONDS < deadline)) \
            || die "supervisord did not start in 30 s; see $LAB_LOGS/supervisord.out and .log"
        sleep 0.1
    done
}

print_next() {
    cat <<MSG
lab: up. Try:
  ip netns exec office curl --cacert .lab/ca/trust.pem https://app.example.com/
  ip netns exec outsider curl --cacert .lab/ca/trust.pem https://app.example.com/   (403)
  ip netns exec office curl -i http://app.example.com/any/path?q=1               (redirect)
  make status                 hosts, services, reachability
  nat/lab/ctl.sh status       the lab's systemctl (stop mysql: nat/lab/ctl.sh stop mysql)
  logs: $LAB_LOGS/NAME.log
  make down                   tear it all down
MSG
}

main() {
    check_tools
    with_lab_lock
    if lab_complete && [[ $(lab_owner) == "$LAB_ROOT" ]]; then
        say "already up; checking the services"
        wait_ready || die "the lab is up but unhealthy (see above); make down && make up"
        print_next
        return 0
    fi
    clear_the_way
    prepare_state
    say "building the network"
    "$LAB_ROOT/nat/lab/net.sh" up
    say "starting services: $(programs | tr '\n' ' ')"
    start_supervisor
    if ! wait_ready; then
        if [[ ${LAB_KEEP:-0} == 1 ]]; then
            die "left up for a look (LAB_KEEP=1); make down when done"
        fi
        "$LAB_ROOT/nat/lab/down.sh" >&2
        die "the lab did not come up; logs are in $LAB_LOGS"
    fi
    print_next
}

main "$@"
