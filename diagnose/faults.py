"""The lab's faults: how each is injected for real, and how it is healed.

Every heal is idempotent and safe to run on a lab where the fault is not present, so
`make heal` can heal whatever a crashed drill left behind. What a fault needs to undo
itself (a process it started, a value it replaced) is kept under .lab/drill/.
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

from . import labctl
from .labctl import DRILL_STATE, LabError, ctl, on, program_state, wait_for

APP_HOST = "10.0.1.10"
DB_ADDR = "10.0.2.10"
DRILL_TAG = "drill"
QUEUE = 3306  # the NFQUEUE number of the db-latency delayer


@dataclass
class Fault:
    name: str
    what: str
    # Verdict causes that name this fault; the first is the one it should say.
    causes: tuple[str, ...]
    inject: Callable[[], None]
    heal: Callable[[], None]
    status: str = "down"
    # True when the lab heals itself (the supervisor restarts a killed process).
    self_healing: bool = False
    # Whether the app's /readyz should turn during the fault.
    turns_readyz: bool = True
    notes: list[str] = field(default_factory=list)


def _save(name: str, data: dict) -> None:
    DRILL_STATE.mkdir(parents=True, exist_ok=True)
    (DRILL_STATE / f"{name}.json").write_text(json.dumps(data))


def _load(name: str) -> dict | None:
    path = DRILL_STATE / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _forget(name: str) -> None:
    (DRILL_STATE / f"{name}.json").unlink(missing_ok=True)


def _stop_started(name: str) -> None:
    """Stop the process the fault `name` started by hand, if it started one, and forget it."""
    state = _load(name)
    if state and state.get("pid"):
        labctl.stop_pid(state["pid"])
    _forget(name)


def _ensure_running(program: str) -> None:
    if program_state(program) != "RUNNING":
        ctl("start", program)


# --- MySQL ------------------------------------------------------------------------------


def mysql_stopped_inject() -> None:
    labctl.mysql_socket()  # remember it for the heal
    ctl("stop", "mysql")


def mysql_stopped_heal() -> None:
    _ensure_running("mysql")
    wait_for(lambda: labctl.listening("db", 3306, DB_ADDR), 30)


def mysql_crashed_inject() -> None:
    pid = labctl.program_pid("mysql")
    if pid is None:
        raise LabError("mysql is not running: nothing to crash")
    _save("mysql-crashed", {"pid": pid})
    on("db", "kill", "-KILL", str(pid))


def mysql_crashed_heal() -> None:
    # Nobody heals this one: the supervisor restarts mysqld. Only if it gave up, start it,
    # and say so: the drill then failed to show what it is for.
    state = _load("mysql-crashed")
    killed = state["pid"] if state else None

    def restarted() -> bool:
        # RUNNING with the killed pid is the supervisor not having noticed the death yet.
        pid = labctl.program_pid("mysql")
        return pid is not None and pid != killed and program_state("mysql") == "RUNNING"

    # Crash recovery and the supervisor's startsecs, on a machine that may be busy.
    came_back = wait_for(restarted, 60)
    _forget("mysql-crashed")
    if not came_back:
        _ensure_running("mysql")
        if state:
            raise LabError("the supervisor did not restart mysqld within 60 s; started by hand")


def mysql_localhost_inject() -> None:
    """Stop the supervised server and start the same one by hand, bound to loopback only."""
    argv = labctl.mysqld_argv()
    labctl.mysql_socket()
    ctl("stop", "mysql")
    argv = [a for a in argv if not a.startswith("--bind-address")] + ["--bind-address=127.0.0.1"]
    pid = labctl.spawn("db", argv, labctl.log_path("mysql-drill"))
    _save("mysql-localhost", {"pid": pid})
    if not wait_for(lambda: labctl.listening("db", 3306, "127.0.0.1"), 30):
        raise LabError("mysqld bound to 127.0.0.1 did not start; see .lab/logs/mysql-drill.log")


def mysql_localhost_heal() -> None:
    _stop_started("mysql-localhost")
    mysql_stopped_heal()


def _grant_host(host: str) -> bool:
    rows = labctl.mysql_root(f"SELECT host FROM mysql.user WHERE user = 'app' AND host = '{host}'")
    return bool(rows.strip())


def wrong_password_inject() -> None:
    labctl.app_password()  # remember where the app's password is
    # Marked before the change: a step after it that fails (ending the app's sessions races
    # their own ends) must still leave the heal something to undo.
    _save("wrong-password", {})
    labctl.mysql_root(f"ALTER USER 'app'@'{APP_HOST}' IDENTIFIED BY '{secrets.token_hex(16)}'")
    labctl.kill_app_sessions()


def wrong_password_heal() -> None:
    if _load("wrong-password") is None:
        return
    password = labctl.app_password()
    if not re.fullmatch(r"[A-Za-z0-9_\-]+", password):
        raise LabError("the app's password has characters this heal will not quote")
    labctl.mysql_root(f"ALTER USER 'app'@'{APP_HOST}' IDENTIFIED BY '{password}'")
    _forget("wrong-password")


OTHER_HOST = "10.0.1.99"


def host_not_allowed_inject() -> None:
    labctl.mysql_root(f"RENAME USER 'app'@'{APP_HOST}' TO 'app'@'{OTHER_HOST}'")
    labctl.kill_app_sessions()


def host_not_allowed_heal() -> None:
    if _grant_host(OTHER_HOST) and not _grant_host(APP_HOST):
        labctl.mysql_root(f"RENAME USER 'app'@'{OTHER_HOST}' TO 'app'@'{APP_HOST}'")


# --- The app and the gateway --------------------------------------------------------------


def mysql_no_tls_inject() -> None:
    """Stop the supervised app and start the same one by hand with APP_DB_TLS=off."""
    pid = labctl.app_pid()
    if pid is None:
        raise LabError("the app is not running under the lab's supervisor")
    argv = labctl.cmdline(pid)
    env = labctl.process_env(pid)
    cwd = str((labctl.Path(f"/proc/{pid}/cwd")).resolve())
    ctl("stop", "app")
    env["APP_DB_TLS"] = "off"
    # The command line is `ip netns exec web gunicorn ...` or gunicorn itself.
    if argv[:3] == ["ip", "netns", "exec"]:
        argv = argv[4:]
    child = labctl.spawn("web", argv, labctl.log_path("app-drill"), env=env, cwd=cwd)
    _save("mysql-no-tls", {"pid": child})
    if not wait_for(lambda: labctl.listening("web", 8000), 30):
        raise LabError("the app without TLS did not start; see .lab/logs/app-drill.log")


def mysql_no_tls_heal() -> None:
    _stop_started("mysql-no-tls")
    _ensure_running("app")
    wait_for(lambda: labctl.listening("web", 8000), 30)


def flask_stopped_inject() -> None:
    ctl("stop", "app")


def flask_stopped_heal() -> None:
    _ensure_running("app")
    wait_for(lambda: labctl.listening("web", 8000), 30)


def _reload_gateway() -> None:
    pid = labctl.program_pid("gateway")
    if pid is None:
        ctl("start", "gateway")
        return
    on("web", "kill", "-HUP", str(pid))


def allowlist_wrong_inject() -> None:
    config = labctl.gateway_config()
    backup = DRILL_STATE / "gateway.toml.orig"
    DRILL_STATE.mkdir(parents=True, exist_ok=True)
    if not backup.exists():
        shutil.copy2(config, backup)
    text = config.read_text()
    # The allowlist now holds a neighbouring range, the kind of typo that locks users out.
    new, count = re.subn(r"(?m)^(\s*allow\s*=\s*)\[[^\]]*\]", r'\1["203.0.113.64/28"]', text)
    if count != 1:
        raise LabError(f"{config}: no single `allow = [...]` line to change")
    config.write_text(new)
    _reload_gateway()


def allowlist_wrong_heal() -> None:
    backup = DRILL_STATE / "gateway.toml.orig"
    if not backup.exists():
        return
    shutil.copy2(backup, labctl.gateway_config())
    backup.unlink()
    _reload_gateway()


# --- The network ---------------------------------------------------------------------------


def _app_to_mysql_rule(fault: str, *target: str) -> list[str]:
    """An INPUT rule on db for the app host's connections to 3306, tagged with its drill."""
    return [
        *("INPUT", "-s", APP_HOST, "-p", "tcp", "--dport", "3306"),
        *("-m", "comment", "--comment", f"{DRILL_TAG}: {fault}"),
        *target,
    ]


DROP_RULE = _app_to_mysql_rule("db-firewall-drop", "-j", "DROP")
# icmp-admin-prohibited, as a managed firewall's REJECT answers: the errno alone
# (EHOSTUNREACH) would not tell it from a dead host, the ICMP code does.
REJECT_RULE = _app_to_mysql_rule(
    "db-firewall-reject", "-j", "REJECT", "--reject-with", "icmp-admin-prohibited"
)


def _rule_present(host: str, rule: list[str], table: str = "filter") -> bool:
    return on(host, "iptables", "-w", "2", "-t", table, "-C", *rule, check=False).returncode == 0


def _insert(host: str, rule: list[str], table: str = "filter") -> None:
    if not _rule_present(host, rule, table):
        on(host, "iptables", "-w", "2", "-t", table, "-I", *rule)


def _delete(host: str, rule: list[str], table: str = "filter") -> None:
    while _rule_present(host, rule, table):
        on(host, "iptables", "-w", "2", "-t", table, "-D", *rule)


def route_missing_inject() -> None:
    on("web", "ip", "route", "del", "default")


def route_missing_heal() -> None:
    on("web", "ip", "route", "replace", "default", "via", "10.0.1.1")


def forwarding_off_inject() -> None:
    on("router", "sysctl", "-q", "-w", "net.ipv4.ip_forward=0")


def forwarding_off_heal() -> None:
    # Turning ip_forward on again resets per-interface settings: apply the whole file.
    on("router", "sysctl", "-q", "-e", "-p", str(labctl.ROOT / "nat/router.sysctl.conf"))


def dnat_missing_inject() -> None:
    rules = on("router", "iptables", "-w", "2", "-t", "nat", "-S", "PREROUTING").stdout
    dnat = [line for line in rules.splitlines() if "DNAT" in line and line.startswith("-A ")]
    if not dnat:
        raise LabError("the router has no DNAT rule to remove")
    for line in dnat:
        on("router", "sh", "-c", f"iptables -w 2 -t nat {line.replace('-A ', '-D ', 1)}")


def dnat_missing_heal() -> None:
    rules = on("router", "iptables", "-w", "2", "-t", "nat", "-S", "PREROUTING").stdout
    if "DNAT" not in rules:
        # The router's rules as they are in the repository, both tables whole.
        on("router", "iptables-restore", str(labctl.ROOT / "nat/router.rules"))


def db_latency_inject() -> None:
    """300 ms and 5 % loss on the db host's link.

    With sch_netem, tc netem as usual; this machine's kernel has none, so the packets
    leaving db go through an NFQUEUE served by diagnose.delayer, which holds each for
    300 ms and drops 5 %. --queue-bypass lets traffic flow if the delayer dies.
    """
    netem = on(
        "db",
        "tc",
        "qdisc",
        "replace",
        "dev",
        "eth0",
        "root",
        "netem",
        "delay",
        "300ms",
        "loss",
        "5%",
        check=False,
    )
    if netem.returncode == 0:
        _save("db-latency", {"netem": True})
        return
    pid = labctl.spawn(
        "db",
        [
            sys.executable,
            "-m",
            "diagnose.delayer",
            "--queue",
            str(QUEUE),
            "--delay-ms",
            "300",
            "--loss-pct",
            "5",
        ],
        labctl.log_path("delayer"),
    )
    _save("db-latency", {"netem": False, "pid": pid})
    # The rule goes in once the delayer has bound its queue: before that, --queue-bypass lets
    # the packets through undelayed, and a drill would diagnose a link that is not slow yet.
    # Its start-up (a Python process) takes as long as the machine's load makes it.
    if not wait_for(lambda: _queue_bound(QUEUE) or not labctl.alive(pid), 30):
        raise LabError("the delayer did not bind its queue within 30 s; see .lab/logs/delayer.log")
    if not labctl.alive(pid):
        raise LabError("the delayer exited before binding its queue; see .lab/logs/delayer.log")
    _insert("db", _latency_rule(), "mangle")


def _queue_bound(num: int) -> bool:
    """Whether a process serves NFQUEUE `num` in the db host (the kernel lists bound queues
    per network namespace, one line each, the number first)."""
    out = on("db", "cat", "/proc/net/netfilter/nfnetlink_queue", check=False).stdout
    return any(line.split()[:1] == [str(num)] for line in out.splitlines())


def _latency_rule() -> list[str]:
    return [
        "OUTPUT",
        "-o",
        "eth0",
        "-m",
        "comment",
        "--comment",
        f"{DRILL_TAG}: db-latency",
        "-j",
        "NFQUEUE",
        "--queue-num",
        str(QUEUE),
        "--queue-bypass",
    ]


def db_latency_heal() -> None:
    on("db", "tc", "qdisc", "del", "dev", "eth0", "root", check=False)
    _delete("db", _latency_rule(), "mangle")
    _stop_started("db-latency")


FAULTS: dict[str, Fault] = {
    f.name: f
    for f in [
        Fault(
            "mysql-stopped",
            "the MySQL service stopped on db",
            ("mysql-not-running",),
            mysql_stopped_inject,
            mysql_stopped_heal,
        ),
        Fault(
            "mysql-crashed",
            "mysqld killed with SIGKILL",
            ("mysql-restarting", "mysql-restarted", "mysql-not-running"),
            mysql_crashed_inject,
            mysql_crashed_heal,
            self_healing=True,
        ),
        Fault(
            "mysql-localhost",
            "MySQL restarted bound to 127.0.0.1 only",
            ("mysql-bound-elsewhere",),
            mysql_localhost_inject,
            mysql_localhost_heal,
        ),
        Fault(
            "db-firewall-drop",
            "the db host drops 3306 from the app host",
            ("firewall-drop",),
            lambda: _insert("db", DROP_RULE),
            lambda: _delete("db", DROP_RULE),
        ),
        Fault(
            "db-firewall-reject",
            "the db host rejects 3306 from the app host",
            ("firewall-reject",),
            lambda: _insert("db", REJECT_RULE),
            lambda: _delete("db", REJECT_RULE),
        ),
        Fault(
            "route-missing",
            "the web host has no route to the private subnet",
            ("no-route",),
            route_missing_inject,
            route_missing_heal,
        ),
        Fault(
            "forwarding-off",
            "the router stops forwarding",
            ("forwarding-off",),
            forwarding_off_inject,
            forwarding_off_heal,
        ),
        Fault(
            "dnat-missing",
            "the router's DNAT to the web host is gone",
            ("dnat-missing",),
            dnat_missing_inject,
            dnat_missing_heal,
            turns_readyz=False,
        ),
        Fault(
            "wrong-password",
            "the app's database password no longer matches",
            ("wrong-password",),
            wrong_password_inject,
            wrong_password_heal,
        ),
        Fault(
            "host-not-allowed",
            "the MySQL user exists only for another host",
            ("host-not-allowed",),
            host_not_allowed_inject,
            host_not_allowed_heal,
        ),
        Fault(
            "mysql-no-tls",
            "the app connects without TLS to a server that requires it",
            ("app-tls-off",),
            mysql_no_tls_inject,
            mysql_no_tls_heal,
        ),
        Fault(
            "flask-stopped",
            "gunicorn is down behind the gateway",
            ("app-down",),
            flask_stopped_inject,
            flask_stopped_heal,
        ),
        Fault(
            "allowlist-wrong",
            "the gateway's allowlist no longer holds the office range",
            ("access-denied",),
            allowlist_wrong_inject,
            allowlist_wrong_heal,
            turns_readyz=False,
        ),
        Fault(
            "db-latency",
            "300 ms of delay and 5 % loss on the db link",
            ("db-slow",),
            db_latency_inject,
            db_latency_heal,
            status="slow",
            turns_readyz=False,
        ),
    ]
}


def heal_all() -> list[str]:
    """Heal every fault, present or not; returns the errors (an empty list when clean)."""
    errors = []
    # A hand-started mysqld or gunicorn must be gone before the supervised one can start.
    first = ["mysql-localhost", "mysql-no-tls"]
    order = [FAULTS[n] for n in first] + [f for n, f in FAULTS.items() if n not in first]
    for fault in order:
        try:
            fault.heal()
        except (LabError, OSError) as exc:
            errors.append(f"{fault.name}: {exc}")
    return errors
