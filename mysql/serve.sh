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
# shellcheck source=server-options.sh
source "$here/server-options.sh"

die() {
    echo "serve.sh: error: $*" >&2
    exit 1
}

parse_args() {
    while (($# > 0)); do
        set_server_option "$@" || die "unknown option '$1' (see the top of $0)"
        shift 2
    done
    local name
    for name in datadir socket bind_address tls_ca tls_cert tls_key; do
        [[ -n "${!name}" ]] || die "--${name//_/-} is required"
    done
    [[ -e "$datadir/.notes-provisioned" ]] ||
        die "$datadir is not provisioned: run mysql/provision.sh first"
}

main() {
    parse_args "$@"
    absolute_paths datadir socket tls_ca tls_cert tls_key defaults_file
    set_server_command
    exec "${server_command[@]}"
}

main "$@"
