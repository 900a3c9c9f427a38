#!/usr/bin/env bash
# The lab's systemctl: supervisorctl on the lab's supervisor.
#
#   nat/lab/ctl.sh status              every service, its state and pid
#   nat/lab/ctl.sh stop mysql          what `systemctl stop mysql` is on a server
#   nat/lab/ctl.sh start mysql
#   nat/lab/ctl.sh restart gateway
#   nat/lab/ctl.sh tail -f app         follow a service's log (also in .lab/logs/NAME.log)
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"

supervisor_running || die "the lab is not up (no supervisor on $LAB_RUN/supervisor.sock): make up"
exec supervisorctl -c "$LAB_SUPERVISOR_CONF" "$@"
