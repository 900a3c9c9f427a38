#!/usr/bin/env bash
# The lab's network: namespaces, links, addresses, routes, names and firewall rules.
#
#   nat/lab/net.sh up      build the topology (fails if any lab namespace exists)
#   nat/lab/net.sh rules   (re)load every rule file and the router's sysctls, as they are
#   nat/lab/net.sh down    delete it all; safe to run on a half-built or absent lab
#
# The machine's own namespace is never configured: every link is created inside a lab
# namespace (`ip -n`), so no veth, route or iptables rule ever appears in the root namespace.
# The router holds the two shared segments as bridges (inet0 for the internet side, pub0 for
# the public subnet); each other host has one interface, eth0.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"

create_namespaces() {
    local host
    for host in "${LAB_HOSTS[@]}"; do
        ip netns add "$host"
        on "$host" ip link set lo up
    done
}

# bridge NAME ADDRESS: a segment on the router, with the router's address on it.
add_bridge() {
    ip -n router link add "$1" type bridge
    ip -n router addr add "$2" dev "$1"
    ip -n router link set "$1" up
}

# attach HOST ROUTER-PORT ADDRESS GATEWAY [BRIDGE]: one veth pair, eth0 in HOST, ROUTER-PORT
# in the router (enslaved to BRIDGE when given), and the host's address and default route.
attach() {
    local host=$1 port=$2 addr=$3 gateway=$4 bridge=${5:-}
    ip -n router link add "$port" type veth peer name eth0 netns "$host"
    if [[ -n $bridge ]]; then
        ip -n router link set "$port" master "$bridge"
    fi
    ip -n router link set "$port" up
    ip -n "$host" addr add "$addr" dev eth0
    ip -n "$host" link set eth0 up
    ip -n "$host" route add default via "$gateway"
}

build_links() {
    add_bridge inet0 203.0.113.1/24
    # The public addresses live on the router, as an Elastic IP lives on the internet gateway.
    ip -n router addr add 198.51.100.10/32 dev inet0
    ip -n router addr add 198.51.100.20/32 dev inet0
    add_bridge pub0 10.0.1.1/24

    attach office inet-office 203.0.113.10/24 203.0.113.1 inet0
    attach outsider inet-outsider 203.0.113.200/24 203.0.113.1 inet0
    attach acme inet-acme 203.0.113.50/24 203.0.113.1 inet0
    attach web pub-web 10.0.1.10/24 10.0.1.1 pub0
    attach bastion pub-bastion 10.0.1.20/24 10.0.1.1 pub0
    # The private subnet has one host, so it needs no bridge: priv0 is the router's own end.
    attach db priv0 10.0.2.10/24 10.0.2.1
    ip -n router addr add 10.0.2.1/24 dev priv0
}

# /etc/netns/HOST/hosts is bind-mounted over /etc/hosts by `ip netns exec HOST`: the lab's
# stand-in for DNS.
write_hosts_files() {
    local host
    for host in "${LAB_HOSTS[@]}"; do
        mkdir -p "/etc/netns/$host"
        {
            printf '127.0.0.1\tlocalhost\n127.0.1.1\t%s\n' "$host"
            case $host in
                office | outsider | acme)
                    printf '198.51.100.10\tapp.example.com\n203.0.113.50\tacme\n' ;;
                web | bastion)
                    printf '10.0.1.10\tweb\n10.0.1.20\tbastion\n10.0.2.10\tdb\n' ;;
                db) printf '10.0.1.10\tweb\n10.0.2.10\tdb\n' ;;
            esac
        } >"/etc/netns/$host/hosts"
    done
}

load_rules() {
    local nat_dir="$LAB_ROOT/nat"
    on router sysctl -q -e -p "$nat_dir/router.sysctl.conf"
    on router iptables-restore "$nat_dir/router.rules"
    on web iptables-restore "$nat_dir/web.rules"
    on db iptables-restore "$nat_dir/db.rules"
}

# Processes still inside a namespace (a crashed supervisor's children) would keep it alive
# after `ip netns del`: end them first.
kill_namespace_processes() {
    local host=$1 pids
    pids=$(ip netns pids "$host" 2>/dev/null || true)
    [[ -z $pids ]] && return 0
    warn "ending processes left in $host: $(tr '\n' ' ' <<<"$pids")"
    # shellcheck disable=SC2086 # one pid per word
    kill $pids 2>/dev/null || true
    for _ in 1 2 3 4 5 6 7 8 9 10; do
        [[ -z $(ip netns pids "$host" 2>/dev/null) ]] && return 0
        sleep 0.3
    done
    pids=$(ip netns pids "$host" 2>/dev/null || true)
    if [[ -n $pids ]]; then
        # shellcheck disable=SC2086
        kill -KILL $pids 2>/dev/null || true
    fi
}

net_down() {
    local host
    for host in "${LAB_HOSTS[@]}"; do
        if [[ -e /run/netns/$host ]]; then
            kill_namespace_processes "$host"
            ip netns del "$host"
        fi
        rm -rf "/etc/netns/$host"
    done
    rmdir /etc/netns 2>/dev/null || true
}

net_up() {
    local present
    present=$(lab_namespaces_present | tr '\n' ' ')
    [[ -z $present ]] || die "lab namespaces already exist: $present(run: make down)"
    create_namespaces
    build_links
    write_hosts_files
    load_rules
}

case ${1:-} in
    up) net_up ;;
    down) net_down ;;
    rules) load_rules ;;
    *) die "usage: $0 up|rules|down" ;;
esac
