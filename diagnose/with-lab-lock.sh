#!/usr/bin/env bash
# Run a command holding the lab lock (/run/edge-lab.lock), unless a caller already holds it:
# the Makefile's fault, heal, drill and diagnose targets go through here.
#
#   diagnose/with-lab-lock.sh COMMAND [ARG...]
set -euo pipefail
# shellcheck source=../nat/lab/lib.sh
source "$(dirname "$0")/../nat/lab/lib.sh"

[[ $# -gt 0 ]] || die "usage: $0 COMMAND [ARG...]"
with_lab_lock
cd "$LAB_ROOT"
exec "$@"
