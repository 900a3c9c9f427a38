#!/usr/bin/env bash
# Provision a MariaDB data directory for the notes app.
#
# Usage (as root):
#   mysql/provision.sh --datadir DIR --socket PATH --bind-address ADDR --app-host ADDR \
#       --db-password-file FILE --web-password-file FILE \
#       --tls-ca FILE --tls-cert FILE --tls-key FILE [--user USER] [--port PORT] \
#       [--web-password-owner USER[:GROUP]] [--defaults-file FILE]
#
#   --datadir DIR            data directory to create; must be missing or empty
#   --socket PATH            unix socket of the server (the temporary one and the real one)
#   --bind-address ADDR      address the real server will listen on (10.0.2.10 in the lab);
#                            only used to print the command that runs it
#   --port PORT              TCP port of the real server (default 3306); printed likewise
#   --app-host ADDR          host part of the app's account, 'app'@'ADDR' (10.0.1.10 in the lab):
#                            an IPv4 or IPv6 address, no wildcard, no name
#   --db-password-file FILE  where to write the app's generated password for the db host
#   --web-password-file FILE where to write the same password for the web host (the app reads
#                            it through APP_DB_PASSWORD_FILE); both files get mode 0600
#   --web-password-owner U   owner (USER or USER:GROUP) of the web-side file (default: root)
#   --tls-ca/--tls-cert/--tls-key FILE
#                            the server's TLS material: the CA that signed the certificate
#                            (also the app's APP_DB_CA_FILE), the certificate, its key. They
#                            must be readable by --user; the temporary server loads them.
#   --user USER              OS user mariadbd runs as (default mysql); owns the data directory
#   --defaults-file FILE     server option file (default: server.cnf beside this script)
#
# What it does: checks the TLS files (the certificate is signed by the CA, the key matches it),
# initialises the data directory with mariadb-install-db (no test database, root only through
# the unix socket), starts mariadbd on the socket alone (--skip-networking) with the TLS files,
# applies schema.sql and grants.sql with a generated password, drops the extra superuser
# mariadb-install-db creates for --user, verifies the accounts, stops the server, and writes the
# password files and a marker file in the data directory.
#
# Run again on a directory it provisioned, it changes nothing and exits 0 (if both password
# files are still there). On any other non-empty directory it refuses, exit 1: nothing is
# overwritten. It prints the command that then runs the server (mysql/serve.sh runs the same).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
readonly here
readonly marker_name=".notes-provisioned"
# The options shared with serve.sh (datadir, socket, bind_address, port, tls_*, run_as,
# defaults_file) and the command line that runs the server.
# shellcheck source=server-options.sh
source "$here/server-options.sh"

app_host=""
db_password_file=""
web_password_file=""
web_password_owner=""

server_pid=""
server_log=""

die() {
    echo "provision.sh: error: $*" >&2
    exit 1
}

say() {
    echo "provision.sh: $*"
}

usage() {
    sed -n '2,/^set -euo pipefail$/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'
}

parse_args() {
    while (($# > 0)); do
        case "$1" in
            --app-host) app_host="${2:?--app-host needs a value}" ;;
            --db-password-file) db_password_file="${2:?--db-password-file needs a value}" ;;
            --web-password-file) web_password_file="${2:?--web-password-file needs a value}" ;;
            --web-password-owner) web_password_owner="${2:?--web-password-owner needs a value}" ;;
            -h | --help)
                usage
                exit 0
                ;;
            *) set_server_option "$@" || die "unknown option '$1' (see --help)" ;;
        esac
        shift 2
    done
}

check_args() {
    local name
    for name in datadir socket bind_address app_host db_password_file web_password_file \
        tls_ca tls_cert tls_key; do
        [[ -n "${!name}" ]] || die "--${name//_/-} is required (see --help)"
    done
    absolute_paths datadir socket db_password_file web_password_file tls_ca tls_cert tls_key \
        defaults_file
    [[ "$EUID" -eq 0 ]] || die "must run as root (mariadbd is started as --user $run_as)"
    id -u "$run_as" >/dev/null 2>&1 || die "--user: no such OS user '$run_as'"
    # An IP address only: it ends up inside a quoted SQL account name; SQL wildcards (% _)
    # would open the account to other hosts; under skip-name-resolve a name never matches.
    is_ip_address "$app_host" || die "--app-host: '$app_host' is not an IP address"
    [[ "$bind_address" =~ ^[A-Za-z0-9.:_-]+$ ]] ||
        die "--bind-address: '$bind_address' is not an address"
    if [[ ! "$port" =~ ^[0-9]{1,5}$ ]] || ((10#$port < 1 || 10#$port > 65535)); then
        die "--port: '$port' is not a port number (1-65535)"
    fi
    if [[ -n "$web_password_owner" ]]; then
        local owner_user="${web_password_owner%%:*}" owner_group=""
        [[ "$web_password_owner" != *:* ]] || owner_group="${web_password_owner#*:}"
        id -u "$owner_user" >/dev/null 2>&1 ||
            die "--web-password-owner: no such OS user '$owner_user'"
        [[ -z "$owner_group" ]] || getent group "$owner_group" >/dev/null ||
            die "--web-password-owner: no such group '$owner_group'"
    fi
    # The kernel limit for a unix socket path (sun_path) is 108 bytes, terminator included.
    ((${#socket} < 108)) || die "--socket: '$socket' is longer than 107 bytes"
    local file
    for file in "$tls_ca" "$tls_cert" "$tls_key" "$defaults_file" "$here/schema.sql" \
        "$here/grants.sql"; do
        [[ -r "$file" ]] || die "cannot read '$file'"
    done
    # mariadbd drops to --user before it opens these, so check them as that user.
    for file in "$tls_ca" "$tls_cert" "$tls_key"; do
        as_run_as test -r "$file" ||
            die "user $run_as cannot read '$file' (mariadbd runs as it):" \
                "check the modes and owners of the file and of its directories"
    done
    as_run_as test -w "$(dirname "$socket")" ||
        die "user $run_as cannot create the socket in '$(dirname "$socket")'"
    command -v mariadb-install-db >/dev/null || die "mariadb-install-db not found: install \
mariadb-server (Debian) or run 'make test', which installs it"
}

# An IPv4 address in dotted decimal, or an IPv6 address (hex digits and colons, at least two).
is_ip_address() {
    local ip="$1" part
    if [[ "$ip" =~ ^[0-9]{1,3}(\.[0-9]{1,3}){3}$ ]]; then
        local -a parts
        IFS=. read -r -a parts <<<"$ip"
        for part in "${parts[@]}"; do
            ((10#$part <= 255)) || return 1
        done
        return 0
    fi
    [[ "$ip" =~ ^[0-9A-Fa-f:]+$ && "$ip" == *:*:* ]]
}

as_run_as() {
    runuser -u "$run_as" -- "$@"
}

check_tls() {
    openssl verify -CAfile "$tls_ca" "$tls_cert" >/dev/null 2>&1 ||
        die "--tls-cert '$tls_cert' is not signed by --tls-ca '$tls_ca' (openssl verify failed)"
    local cert_key file_key
    cert_key="$(openssl x509 -in "$tls_cert" -noout -pubkey)"
    file_key="$(openssl pkey -in "$tls_key" -pubout)" || die "--tls-key '$tls_key' is no key"
    [[ "$cert_key" == "$file_key" ]] ||
        die "--tls-key '$tls_key' does not match --tls-cert '$tls_cert'"
}

# Exit 0 when the directory is already provisioned, die when it holds anything else.
check_datadir() {
    if [[ -e "$datadir/$marker_name" ]]; then
        [[ -s "$db_password_file" && -s "$web_password_file" ]] ||
            die "$datadir is provisioned but a password file is missing ($db_password_file," \
                "$web_password_file); remove $datadir and provision again"
        say "$datadir is already provisioned; nothing changed"
        print_run_command
        exit 0
    fi
    if [[ -d "$datadir" && -n "$(ls -A "$datadir")" ]]; then
        die "$datadir is not empty and was not provisioned by this script (no $marker_name);" \
            "refusing to touch it. Remove it to provision from scratch."
    fi
    [[ ! -e "$db_password_file" && ! -e "$web_password_file" ]] ||
        die "a password file already exists ($db_password_file or $web_password_file);" \
            "remove it: a new data directory gets a new password"
}

init_datadir() {
    say "initialising $datadir"
    mkdir -p "$datadir"
    chown "$run_as:" "$datadir"
    chmod 0750 "$datadir"
    local log
    log="$(mktemp)"
    if ! mariadb-install-db --defaults-file="$defaults_file" --user="$run_as" \
        --datadir="$datadir" --skip-test-db --auth-root-authentication-method=socket \
        --skip-name-resolve >"$log" 2>&1; then
        cat "$log" >&2
        rm -f "$log"
        die "mariadb-install-db failed for $datadir"
    fi
    rm -f "$log"
}

sql() {
    mariadb --no-defaults --socket="$socket" --user=root --batch --skip-column-names "$@"
}

start_temporary_server() {
    server_log="$(mktemp)"
    chmod 0644 "$server_log"
    mariadbd --defaults-file="$defaults_file" --user="$run_as" --datadir="$datadir" \
        --socket="$socket" --skip-networking --pid-file="$datadir/provision.pid" \
        --ssl-ca="$tls_ca" --ssl-cert="$tls_cert" --ssl-key="$tls_key" \
        >"$server_log" 2>&1 &
    server_pid=$!
    local tries
    for ((tries = 0; tries < 300; tries++)); do
        if ! kill -0 "$server_pid" 2>/dev/null; then
            cat "$server_log" >&2
            die "the temporary mariadbd exited during start-up (its log is above)"
        fi
        if mariadb-admin --no-defaults --socket="$socket" --user=root ping >/dev/null 2>&1; then
            return
        fi
        sleep 0.1
    done
    cat "$server_log" >&2
    die "the temporary mariadbd did not answer on $socket within 30 s"
}

stop_temporary_server() {
    [[ -n "$server_pid" ]] || return 0
    mariadb-admin --no-defaults --socket="$socket" --user=root shutdown >/dev/null 2>&1 ||
        kill -TERM "$server_pid" 2>/dev/null || true
    wait "$server_pid" || true
    server_pid=""
}

cleanup() {
    stop_temporary_server
    [[ -z "$server_log" ]] || rm -f "$server_log"
}

check_server_tls() {
    # mariadbd only warns when it cannot load the TLS files (for example a key the run-as user
    # cannot read) and then runs without TLS, which require_secure_transport turns into every
    # login failing. Catch that here, where the reason is known.
    local have_ssl
    have_ssl="$(sql -e "SELECT @@have_ssl")"
    if [[ "$have_ssl" != "YES" ]]; then
        grep -i -E 'ssl|tls' "$server_log" >&2 || true
        die "mariadbd did not load the TLS files as user $run_as (have_ssl=$have_ssl);" \
            "check that $tls_ca, $tls_cert and $tls_key and their directories are readable by it"
    fi
}

apply_sql() {
    local password grants
    # 24 random bytes as hex: no character needs quoting in SQL or in a shell.
    password="$(openssl rand -hex 24)"
    sql <"$here/schema.sql"
    grants="$(<"$here/grants.sql")"
    grants="${grants//"'app'@'10.0.1.10'"/"'app'@'$app_host'"}"
    grants="${grants//@APP_PASSWORD@/$password}"
    # Through standard input, so the password never appears in a process's arguments.
    sql <<<"$grants"
    if [[ "$run_as" != "root" ]]; then
        # mariadb-install-db makes a second superuser named after --user, reachable through the
        # socket by that OS user. The server needs no account to run; root is the only admin.
        sql -e "DROP USER IF EXISTS '$run_as'@'localhost'"
    fi
    write_password_files "$password"
}

write_password_files() {
    local password="$1" file
    for file in "$db_password_file" "$web_password_file"; do
        mkdir -p "$(dirname "$file")"
        (
            umask 077
            printf '%s\n' "$password" >"$file"
        )
        chmod 0600 "$file"
    done
    [[ -z "$web_password_owner" ]] || chown "$web_password_owner" "$web_password_file"
}

verify() {
    local found
    found="$(sql -e "SELECT CONCAT(QUOTE(User), '@', QUOTE(Host)) FROM mysql.user
        WHERE User = '' OR (User = 'root' AND Host <> 'localhost')")"
    [[ -z "$found" ]] || die "unexpected accounts after provisioning: $found"
    found="$(sql -e "SELECT CONCAT(QUOTE(User), '@', QUOTE(Host)) FROM mysql.proxies_priv
        WHERE NOT (User = 'root' AND Host = 'localhost')")"
    [[ -z "$found" ]] || die "unexpected PROXY grants after provisioning: $found"
    found="$(sql -e "SHOW DATABASES LIKE 'test'")"
    [[ -z "$found" ]] || die "a test database is still there"
    found="$(sql -e "SELECT ssl_type FROM mysql.user WHERE User = 'app' AND Host = '$app_host'")"
    [[ "$found" == "ANY" ]] || die "'app'@'$app_host' does not require TLS (ssl_type=$found)"
    found="$(sql -e "SHOW GRANTS FOR 'app'@'$app_host'" | grep -c -v 'USAGE ON \*\.\*' || true)"
    [[ "$found" == "1" ]] || die "'app'@'$app_host' has other grants than on notes.*"
    say "accounts: root@localhost (unix socket only), 'app'@'$app_host' (TLS," \
        "SELECT/INSERT/UPDATE/DELETE on notes.*); no anonymous user, no test database"
}

print_run_command() {
    set_server_command
    say "run the server with:"
    echo "  ${server_command[*]}"
}

main() {
    parse_args "$@"
    check_args
    check_tls
    check_datadir
    trap cleanup EXIT
    # An interrupted run still stops its temporary server (through the EXIT trap).
    trap 'exit 130' INT TERM
    init_datadir
    start_temporary_server
    check_server_tls
    apply_sql
    verify
    stop_temporary_server
    rm -f "$datadir/provision.pid"
    touch "$datadir/$marker_name"
    say "provisioned $datadir; passwords in $db_password_file and $web_password_file"
    print_run_command
}

main "$@"
