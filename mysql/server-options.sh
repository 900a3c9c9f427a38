# shellcheck shell=bash
# What provision.sh and serve.sh share, sourced by both: the options that say where and how the
# server runs, their defaults, and the one mariadbd command line that runs it (serve.sh execs
# it, provision.sh prints it, mysql/README.md documents it). The sourcing script sets `here`,
# the folder of these scripts, first.

datadir=""
socket=""
bind_address=""
port="3306"
tls_ca=""
tls_cert=""
tls_key=""
run_as="mysql"
# shellcheck disable=SC2154 # `here` is set by the sourcing script
defaults_file="$here/server.cnf"

# One shared option and its value ($1, $2); returns 1 when $1 is not one of them.
set_server_option() {
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
        *) return 1 ;;
    esac
}

# mariadbd changes into its data directory at start, so a relative TLS path would be read from
# there, and a printed command line would work from one directory only: the variables named
# are made absolute.
absolute_paths() {
    local name
    for name in "$@"; do
        printf -v "$name" '%s' "$(realpath -m -- "${!name}")"
    done
}

# The command line that runs the provisioned server, into the array `server_command`.
# --defaults-file comes first (a mariadbd rule) and makes server.cnf the only option file read.
set_server_command() {
    # shellcheck disable=SC2034 # read by the sourcing script
    server_command=(
        mariadbd --defaults-file="$defaults_file" --user="$run_as" --datadir="$datadir"
        --socket="$socket" --bind-address="$bind_address" --port="$port"
        --ssl-ca="$tls_ca" --ssl-cert="$tls_cert" --ssl-key="$tls_key"
    )
}
