#!/usr/bin/env bash
# Checks the systemd units in config/ with systemd-analyze, without installing
# them: `verify` in a throwaway root that holds the distribution's units, the
# project's units and the programs they start (placeholders where the real
# program is not installed here), then `security --offline=yes` on the
# gateway's unit, whose exposure figure docs/operations.md records.
#
# Usage: config/check-units.sh [PATH-TO-edge-gateway]
# The gateway binary defaults to target/release/edge-gateway when it is built;
# otherwise an empty executable stands in for it (verify only checks that the
# program exists and is executable).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(dirname "$here")"
gateway_bin="${1:-$repo/target/release/edge-gateway}"

make_root() {
    local root="$1"
    mkdir -p "$root/usr/lib/systemd" "$root/etc/systemd/system" \
        "$root/usr/local/bin" "$root/opt/notes/.venv/bin" "$root/bin" "$root/usr/sbin"
    # Targets and the packaged mariadb.service, as the host has them.
    cp -a /lib/systemd/system "$root/usr/lib/systemd/"
    cp /bin/kill "$root/bin/kill"
    cp /bin/sh "$root/bin/sh"
    if [[ -x "$gateway_bin" ]]; then
        cp "$gateway_bin" "$root/usr/local/bin/edge-gateway"
    else
        install_placeholder "$root/usr/local/bin/edge-gateway"
    fi
    install_placeholder "$root/opt/notes/.venv/bin/gunicorn"
    install_placeholder "$root/usr/sbin/mariadbd"
    mkdir -p "$root/etc/mysql"
    install_placeholder "$root/etc/mysql/debian-start"
    cp "$here/edge-gateway.service" "$here/notes-gunicorn.service" "$root/etc/systemd/system/"
    mkdir -p "$root/etc/systemd/system/mariadb.service.d"
    cp "$here/mariadb.service.d/notes.conf" "$root/etc/systemd/system/mariadb.service.d/"
}

install_placeholder() {
    printf '#!/bin/sh\n' >"$1"
    chmod 0755 "$1"
}

verify_units() {
    local root="$1" unit
    for unit in edge-gateway.service notes-gunicorn.service mariadb.service; do
        echo "verify $unit"
        # verify exits non-zero on errors; a warning alone is printed but
        # counted as a failure too, so that the units stay clean.
        if ! systemd-analyze verify --root="$root" "/etc/systemd/system/$unit" \
            >"$root/verify.log" 2>&1 || [[ -s "$root/verify.log" ]]; then
            cat "$root/verify.log" >&2
            echo "verify $unit: not clean (above)" >&2
            return 1
        fi
    done
}

rate_units() {
    local root="$1" unit
    for unit in edge-gateway.service notes-gunicorn.service; do
        systemd-analyze security --offline=yes --root="$root" "$unit" \
            | grep 'Overall exposure level'
    done
}

main() {
    scratch="$(mktemp -d)"
    trap 'rm -rf "$scratch"' EXIT
    make_root "$scratch"
    verify_units "$scratch"
    rate_units "$scratch"
}

main "$@"
