#!/usr/bin/env bash
# The lab's certificate authority and the certificates it signs, made once under .lab/ and
# kept across `make down` / `make up` (delete .lab/ca to start a new CA).
#
#   .lab/ca/ca.pem, ca.key                    the lab CA (clients trust ca.pem)
#   .lab/web/tls/fullchain.pem, privkey.pem   app.example.com, for edge-gateway
#   .lab/db/server.pem, server-key.pem        10.0.2.10, for MariaDB
#
# The CA stands in for a public CA until the gateway takes its certificate from Pebble on the
# acme host; MariaDB keeps a certificate from it either way, as a private CA would issue one.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"

CA_DIR="$LAB_STATE/ca"

make_ca() {
    [[ -s $CA_DIR/ca.pem && -s $CA_DIR/ca.key ]] && return 0
    install -d -m 0755 "$CA_DIR"
    openssl ecparam -name prime256v1 -genkey -noout -out "$CA_DIR/ca.key" 2>/dev/null
    chmod 0600 "$CA_DIR/ca.key"
    openssl req -x509 -new -key "$CA_DIR/ca.key" -sha256 -days 3650 \
        -subj "/O=edge-lab/CN=edge-lab CA" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" \
        -out "$CA_DIR/ca.pem"
    say "made the lab CA: $CA_DIR/ca.pem"
}

# issue CERT KEY SUBJECT-ALT-NAMES: a server certificate signed by the lab CA, unless CERT is
# already one that the current CA signed.
issue() {
    local cert=$1 key=$2 san=$3 cn
    if [[ -s $cert && -s $key ]] \
        && openssl verify -CAfile "$CA_DIR/ca.pem" "$cert" >/dev/null 2>&1; then
        return 0
    fi
    cn=${san#*:}
    cn=${cn%%,*}
    install -d -m 0755 "$(dirname "$cert")"
    openssl ecparam -name prime256v1 -genkey -noout -out "$key" 2>/dev/null
    chmod 0600 "$key"
    openssl req -new -key "$key" -subj "/CN=$cn" -out "$cert.csr"
    openssl x509 -req -in "$cert.csr" -CA "$CA_DIR/ca.pem" -CAkey "$CA_DIR/ca.key" \
        -CAcreateserial -sha256 -days 825 -out "$cert" \
        -extfile <(printf '%s\n' "subjectAltName=$san" \
            "basicConstraints=critical,CA:FALSE" \
            "keyUsage=critical,digitalSignature" \
            "extendedKeyUsage=serverAuth") 2>/dev/null
    rm -f "$cert.csr"
    say "issued $cert for $san"
}

make_ca
# Readable by every service user (mariadbd runs as mysql); ca.key stays 0600.
chmod 0755 "$CA_DIR"
issue "$LAB_STATE/web/tls/fullchain.pem" "$LAB_STATE/web/tls/privkey.pem" "DNS:app.example.com"
issue "$LAB_STATE/db/server.pem" "$LAB_STATE/db/server-key.pem" "IP:10.0.2.10,DNS:db"
# Pebble's own HTTPS (its ACME directory on the acme host); the gateway trusts it through
# acme.ca_bundle.
issue "$LAB_STATE/acme/pebble.pem" "$LAB_STATE/acme/pebble-key.pem" "IP:203.0.113.50,DNS:acme"
