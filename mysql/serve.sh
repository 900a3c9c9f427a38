#!/usr/bin/env bash
# Run the provisioned server in the foreground: exactly the mariadbd command line that
# mysql/README.md documents, so a supervisor (the lab's supervisord) and the test suite start
# it the same way. The script execs mariadbd: signals reach the server itself (SIGTERM is a
# clean shutdown) and its exit status is the server's.
#
# Usage (as root):
#   mysql/serve.sh --datadir DIR --socket PATH --bind-address ADDR \
#       --tls-ca FILE --tls-cert FILE --tls-key FILE [--port PORT] [--user USER] \
#       [--defaults-file FILE]
#
# The values are those given to mysql/provision.sh; --port defaults to 3306, --user to mysql,
# --defaults-file to server.cnf beside this script. The server logs to standard error.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
readonly here

datadir=""
socket=""
bind_address=""
port="3306"
tls_ca=""
tls_cert=""
tls_key=""
run_as="mysql"
defaults_file="$here/server.cnf"

die() {
    echo "serve.sh: error: $*" >&2
    exit 1
}

parse_args() {
    while (($# > 0)); do
        case "$1" in
            --datadir) datadir="${2:?--datadir needs a value}" ;;
            --socket) socket="${2:?--socket needs a value}" ;;
            --bind-address) bind_address="${2:?--bind-address needs a value}" ;;
            --port) port="${2:?--port needs a value}" ;;
            --tls-ca) tls_ca="${2:?--tls-ca needs a value}" ;;
            --tls-cert) tls_cert="${2:?--tls-cert needs a value}" ;;
            --tls-key) tls_key="${2:?--tls-key needs a value}" ;;
            --user) run_as="${2:?--user needs a value}" ;;
            --defaults-file) defaults_file="${2:?--defaults-file needs a value}" ;;
            *) die "unknown option '$1' (see the top of $0)" ;;
        esac
        shift 2
    done
    local name
    for name in datadir socket bind_address tls_ca tls_cert tls_key; do
        [[ -n "${!name}" ]] || die "--${name//_/-} is required"
    done
    [[ -e "$datadir/.notes-provisioned" ]] ||
        die "$datadir is not provisioned: run mysql/provision.sh first"
}

# mariadbd changes into its data directory at start, so a relative TLS path would be read
# from there: make every path absolute first.
absolute_paths() {
    local name
    for name in datadir socket tls_ca tls_cert tls_key defaults_file; do
        printf -v "$name" '%s' "$(realpath -m -- "${!name}")"
    done
}

main() {
    parse_args "$@"
    absolute_paths
    exec mariadbd --defaults-file="$defaults_file" --user="$run_as" --datadir="$datadir" \
        --socket="$socket" --bind-address="$bind_address" --port="$port" \
        --ssl-ca="$tls_ca" --ssl-cert="$tls_cert" --ssl-key="$tls_key"
}

main "$@"
