# shellcheck shell=bash
# Shared by the lab scripts: the lab's names, paths and small helpers. Sourced, never run.
#
# The names and addresses are the contract of the topology (see README.md); the scripts read
# them from here only.

LAB_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
LAB_STATE="$LAB_ROOT/.lab"
LAB_LOGS="$LAB_STATE/logs"
# Runtime files of the one lab the machine can hold (namespace names are global too).
LAB_RUN=/run/edge-lab
LAB_LOCK=/run/edge-lab.lock
LAB_SUPERVISOR_CONF="$LAB_ROOT/nat/lab/supervisord.conf"

LAB_HOSTS=(router office outsider acme web bastion db)
export LAB_ROOT LAB_STATE LAB_LOGS LAB_RUN

say() { printf '%s\n' "lab: $*"; }
warn() { printf '%s\n' "lab: $*" >&2; }
die() {
    printf '%s\n' "lab: error: $*" >&2
    exit 1
}

# on HOST CMD...: run a command inside a lab host.
on() {
    local host=$1
    shift
    ip netns exec "$host" "$@"
}

lab_namespaces_present() {
    local host
    for host in "${LAB_HOSTS[@]}"; do
        [[ -e /run/netns/$host ]] && printf '%s\n' "$host"
    done
    return 0
}

supervisor_running() {
    [[ -S $LAB_RUN/supervisor.sock ]] && ctl pid >/dev/null 2>&1
}

ctl() {
    supervisorctl -c "$LAB_SUPERVISOR_CONF" "$@"
}

# The lab may be owned by another checkout of the project; this names it.
lab_owner() {
    cat "$LAB_RUN/root" 2>/dev/null || true
}

# lock_held_by_ancestor: true when this process or one of its ancestors holds the lab lock
# (`flock /run/edge-lab.lock make up`, or the test fixture running `make up`), so that the
# scripts do not wait on a lock their own caller holds.
lock_held_by_ancestor() {
    [[ -e $LAB_LOCK ]] || return 1
    local inode holders pid
    inode=$(stat -c %i "$LAB_LOCK")
    holders=$(awk -v ino="$inode" '$2 == "FLOCK" {
        split($6, f, ":"); if (f[3] == ino) print $5 }' /proc/locks)
    [[ -n $holders ]] || return 1
    pid=$$
    while [[ $pid -gt 1 ]]; do
        grep -qx "$pid" <<<"$holders" && return 0
        pid=$(awk '{print $4}' "/proc/$pid/stat" 2>/dev/null) || return 1
    done
    return 1
}

# close_lock_fds: close every descriptor of this shell open on the lab lock, so that a daemon
# started from it does not keep the lock held (flock(1) leaves its descriptor inheritable).
close_lock_fds() {
    local fd
    for fd in "/proc/$BASHPID/fd"/*; do
        if [[ $(readlink "$fd" 2>/dev/null) == "$LAB_LOCK" ]]; then
            eval "exec ${fd##*/}>&-"
        fi
    done
}

# with_lab_lock: take the lab lock for the rest of this script, unless a caller holds it.
# Waits its turn when another user of the machine holds it, and says so.
with_lab_lock() {
    lock_held_by_ancestor && return 0
    exec 9>>"$LAB_LOCK"
    if ! flock -n 9; then
        say "waiting for $LAB_LOCK (another lab user holds it)"
        flock 9
    fi
}
