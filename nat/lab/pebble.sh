#!/usr/bin/env bash
# Pebble, the lab's ACME CA, on the acme host (203.0.113.50): run by the lab's supervisor as
# `ip netns exec acme nat/lab/pebble.sh`, in the foreground.
#
#   https://203.0.113.50:14000/dir    the ACME directory (TLS certificate from the lab CA,
#                                     .lab/acme/pebble.pem, made by pki.sh)
#   https://203.0.113.50:15000/       Pebble's management interface (roots, cert status)
#
# Pebble validates HTTP-01 on port 80 and TLS-ALPN-01 on 443 of the name itself, which the
# acme host's /etc/netns/acme/hosts resolves to 198.51.100.10: the CA reaches the gateway
# through the router's NAT, as a public CA would. Its nonce rejections and validation sleeps
# are left at their defaults: the gateway has to survive them.
#
# Pebble makes a new root at every start. Its root is written to .lab/acme/root.pem and added
# to .lab/ca/trust.pem (the lab CA plus every Pebble root seen), which the lab's clients trust,
# so that a certificate from an earlier Pebble still verifies after a restart.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"

ACME_STATE="$LAB_STATE/acme"
CONFIG="$ACME_STATE/pebble-config.json"
TRUST="$LAB_STATE/ca/trust.pem"

write_config() {
    cat >"$CONFIG" <<JSON
{
  "pebble": {
    "listenAddress": "203.0.113.50:14000",
    "managementListenAddress": "203.0.113.50:15000",
    "certificate": "$ACME_STATE/pebble.pem",
    "privateKey": "$ACME_STATE/pebble-key.pem",
    "httpPort": 80,
    "tlsPort": 443,
    "ocspResponderURL": "",
    "externalAccountBindingRequired": false
  }
}
JSON
}

# The management interface serves a certificate of Pebble's own making, so -k; it is read on
# the acme host's own address, and what it returns is checked by every client that trusts it.
publish_root() {
    local root="$ACME_STATE/root.pem" deadline=$((SECONDS + 60))
    while ((SECONDS < deadline)); do
        if curl -fsSk -m 2 -o "$root.tmp" https://203.0.113.50:15000/roots/0 2>/dev/null; then
            mv "$root.tmp" "$root"
            [[ -s $TRUST ]] || cp "$LAB_STATE/ca/ca.pem" "$TRUST"
            # Whole certificates compared: two Pebble roots share many base64 lines.
            [[ $(tr -d '\n' <"$TRUST") == *"$(tr -d '\n' <"$root")"* ]] \
                || cat "$root" >>"$TRUST"
            say "Pebble's root is in $root and $TRUST"
            return 0
        fi
        sleep 0.1
    done
    warn "Pebble's management interface did not answer; its root is not published"
}

main() {
    write_config
    pebble -config "$CONFIG" -strict=false &
    local pid=$!
    trap 'kill -TERM "$pid" 2>/dev/null' TERM INT
    publish_root
    wait "$pid"
}

main "$@"
