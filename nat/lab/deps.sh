#!/usr/bin/env bash
# Install what the lab and the tests need and the machine lacks, on Debian or Ubuntu, as root.
# Quiet and quick when everything is there; names what is missing when it cannot install it.
set -euo pipefail

# Each package, for what it brings:
PACKAGES=(
    iproute2 iptables conntrack netcat-openbsd tcpdump  # namespaces, veths, rules, probes
    iputils-ping                                        # ping, in the runbook and drills
    supervisor                                          # the lab's service manager
    mariadb-server mariadb-client                       # the database on db
    pebble                                              # the ACME server on acme
    prometheus                                          # metrics on bastion
    systemd                                             # systemd-analyze: make test-config
    curl openssl                                        # clients, the lab CA
    wrk nghttp2-client nginx                            # benchmarks against nginx
    shellcheck                                          # make lint
    python3 python3-venv                                # the .venv
    util-linux                                          # flock
)

die() {
    printf 'deps: error: %s\n' "$*" >&2
    exit 1
}

missing_packages() {
    local pkg
    for pkg in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}\n' "$pkg" 2>/dev/null | grep -q '^install ok installed$' \
            || printf '%s\n' "$pkg"
    done
}

install_packages() {
    local missing
    mapfile -t missing < <(missing_packages)
    [[ ${#missing[@]} -eq 0 ]] && return 0
    [[ $(id -u) -eq 0 ]] || die "missing packages: ${missing[*]}; run as root (make up does)"
    command -v apt-get >/dev/null \
        || die "missing packages: ${missing[*]}, and no apt-get: this needs Debian or Ubuntu"
    printf 'deps: installing %s\n' "${missing[*]}"
    # A fresh machine has no package lists yet; an old list may not know a package.
    apt-get update -qq || die "apt-get update failed: check the apt sources and the network"
    # The services are started by the lab's own supervisor, never by the packages' scripts:
    # a policy-rc.d that says no (Debian's way to keep invoke-rc.d from starting them).
    local policy=/usr/sbin/policy-rc.d own_policy=0 ok=1
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 0755 "$policy" && own_policy=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" || ok=0
    [[ $own_policy -eq 1 ]] && rm -f "$policy"
    if [[ $ok -eq 0 ]]; then
        mapfile -t missing < <(missing_packages)
        die "could not install: ${missing[*]}. Try 'apt-get install ${missing[*]}' by hand" \
            "and read its error (a package missing from the configured suites needs them" \
            "added, e.g. bookworm-backports)"
    fi
}

check_cargo() {
    command -v cargo >/dev/null || [[ -x $HOME/.cargo/bin/cargo ]] \
        || die "cargo is missing: install the Rust toolchain with rustup (see rustup.rs)," \
            "then run '. ~/.cargo/env' or open a new shell, and run make again"
}

install_packages
check_cargo
