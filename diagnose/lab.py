"""Where an SRE looks next, in the lab: firewall counters, sockets, supervisor, logs.

Each host is a network namespace, reached with `ip netns exec HOST`. The paths and names
are the lab's (nat/lab/lib.sh); a real deployment has the same things under systemd, and
the runbook (docs/troubleshooting.md) gives the commands for it.
"""

from __future__ import annotations

import calendar
import http.client
import os
import re
import shlex
import socket
import subprocess
import time
import tomllib
import xmlrpc.client
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
LAB_STATE = ROOT / ".lab"
LAB_LOGS = LAB_STATE / "logs"
SUPERVISOR_CONF = ROOT / "nat" / "lab" / "supervisord.conf"
SUPERVISOR_SOCKET = "/run/edge-lab/supervisor.sock"  # [unix_http_server] of that file


def run(host: str | None, *argv: str, timeout: float = 2.0) -> subprocess.CompletedProcess:
    """Run a command on a lab host (None: where this process is)."""
    cmd = ["ip", "netns", "exec", host, *argv] if host else list(argv)
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(cmd, 124, "", f"timed out after {timeout}s")


def current_netns() -> str | None:
    """The name of the lab namespace this process is in, or None."""
    out = subprocess.run(
        ["ip", "netns", "identify", str(os.getpid())], capture_output=True, text=True, check=False
    )
    return out.stdout.strip() or None


def lab_present() -> bool:
    return Path("/run/netns/db").exists() and Path("/run/netns/web").exists()


@dataclass
class Rule:
    """One iptables rule (or a chain's policy) with its counters."""

    table: str
    chain: str
    num: int  # 0 is the chain's policy
    pkts: int
    target: str
    spec: str

    @property
    def key(self) -> str:
        return f"{self.table}/{self.chain}/{self.num}/{self.target}/{self.spec}"

    def line(self, host: str) -> str:
        where = "policy" if self.num == 0 else f"rule {self.num}"
        return f"{host} {self.table} {self.chain} {where}: {self.target} {self.spec}".rstrip()


_POLICY = re.compile(r"^Chain (\S+) \(policy (\S+) (\d+) packets")


def iptables_argv(table: str, chain: str) -> list[str]:
    return ["iptables", "-w", "1", "-t", table, "-L", chain, "-v", "-n", "-x", "--line-numbers"]


def parse_iptables(text: str, table: str, chain: str) -> list[Rule]:
    """The rules of one chain with their packet counters, from `iptables -L -v -n -x`."""
    rules: list[Rule] = []
    for line in text.splitlines():
        policy = _POLICY.match(line)
        if policy:
            rules.append(Rule(table, chain, 0, int(policy.group(3)), policy.group(2), ""))
            continue
        cols = line.split(None, 10)
        if not cols or not cols[0].isdigit() or len(cols) < 10:
            continue
        # Keep what matters to a reader: protocol, source, destination, matches, comment.
        proto = {"6": "tcp", "17": "udp", "1": "icmp", "0": "all"}.get(cols[4], cols[4])
        spec = " ".join([proto, *cols[8:]]).replace("  ", " ")
        rules.append(Rule(table, chain, int(cols[0]), int(cols[1]), cols[3], spec))
    return rules


def iptables(host: str, table: str, chain: str) -> list[Rule]:
    return parse_iptables(run(host, *iptables_argv(table, chain)).stdout, table, chain)


_SEPARATOR = "@@diagnose-next@@"


def batch(host: str, commands: list[list[str]], timeout: float = 3.0) -> list[str]:
    """Several read-only commands on a host for the price of one `ip netns exec`: the
    output of each, in order (empty for one that failed)."""
    script = f"; echo {_SEPARATOR}; ".join(shlex.join(c) + " 2>/dev/null" for c in commands)
    out = run(host, "sh", "-c", script, timeout=timeout).stdout
    parts = [part.strip("\n") for part in out.split(_SEPARATOR + "\n")]
    return parts + [""] * (len(commands) - len(parts))


# The chains a connection to MySQL crosses, per host.
COUNTED_CHAINS = {
    "db": [("filter", "INPUT")],
    "router": [("filter", "FORWARD"), ("nat", "PREROUTING")],
}


def snapshot_counters() -> dict[str, dict[str, int]]:
    """Packet counters of the chains a connection to MySQL crosses; a host whose chains could
    not be listed (its batch timed out on a busy machine) is left out."""
    snap: dict[str, dict[str, int]] = {}
    for host, pairs in COUNTED_CHAINS.items():
        texts = batch(host, [iptables_argv(t, c) for t, c in pairs])
        if not all(texts):  # every listing has at least its chain's header line
            continue
        snap[host] = {
            rule.key: rule.pkts
            for (table, chain), text in zip(pairs, texts, strict=True)
            for rule in parse_iptables(text, table, chain)
        }
    return snap


def counter_deltas(before: dict, after: dict) -> list[dict[str, Any]]:
    """Rules whose counters moved between two snapshots, blocking ones first.

    Only hosts both snapshots hold: against a listing that failed, every counter would look
    as if it had moved by all it ever counted.
    """
    moved = []
    for host, rules in after.items():
        if host not in before:
            continue
        for key, pkts in rules.items():
            delta = pkts - before[host].get(key, 0)
            if delta > 0:
                table, chain, num, target, spec = key.split("/", 4)
                moved.append(
                    {
                        "host": host,
                        "table": table,
                        "chain": chain,
                        "num": int(num),
                        "target": target,
                        "spec": spec,
                        "delta": delta,
                    }
                )
    moved.sort(key=lambda r: (r["target"] not in ("DROP", "REJECT"), r["host"], r["num"]))
    return moved


@dataclass
class Listener:
    addr: str
    port: int
    process: str

    def line(self) -> str:
        return f"{self.addr}:{self.port} ({self.process or '?'})"


def parse_listeners(text: str) -> list[Listener]:
    """TCP listening sockets, from `ss -ltnpH`."""
    found = []
    for line in text.splitlines():
        cols = line.split()
        if len(cols) < 4:
            continue
        addr, _, port = cols[3].rpartition(":")
        proc = re.search(r'users:\(\("([^"]+)"', line)
        found.append(Listener(addr.strip("[]"), int(port), proc.group(1) if proc else ""))
    return found


def listeners(host: str) -> list[Listener]:
    return parse_listeners(run(host, "ss", "-ltnpH").stdout)


def sysctl(host: str, key: str) -> str | None:
    out = run(host, "sysctl", "-n", key)
    return out.stdout.strip() if out.returncode == 0 else None


def qdiscs(host: str) -> list[str]:
    out = run(host, "tc", "qdisc", "show")
    return [line.strip() for line in out.stdout.splitlines() if "netem" in line]


def routes(host: str | None) -> list[str]:
    out = run(host, "ip", "route", "show")
    return [line.strip() for line in out.stdout.splitlines() if line.strip()]


@dataclass
class Program:
    name: str
    state: str
    description: str
    pid: int | None = None

    def uptime(self) -> float:
        """Seconds since the supervisor started it (supervisorctl's `uptime H:MM:SS`)."""
        match = re.search(r"uptime (?:(\d+) days?, )?(\d+):(\d+):(\d+)", self.description)
        if not match:
            return float("inf")
        days, hours, minutes, seconds = (int(g or 0) for g in match.groups())
        return ((days * 24 + hours) * 60 + minutes) * 60 + seconds


class _UnixTransport(xmlrpc.client.Transport):
    """XML-RPC over the supervisor's unix socket, as supervisorctl speaks it."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__()
        self.path = path
        self.timeout = timeout

    def make_connection(self, host: str) -> http.client.HTTPConnection:
        conn = http.client.HTTPConnection("localhost", timeout=self.timeout)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.path)
        conn.sock = sock
        return conn


def supervisor_status(timeout: float = 2.0) -> dict[str, Program]:
    """Each lab service and its state, as the lab's supervisor reports it.

    Asked over its socket (the API supervisorctl uses) rather than by starting
    supervisorctl, a Python program whose start-up alone costs a good part of a second.
    """
    proxy = xmlrpc.client.ServerProxy(
        "http://localhost/RPC2", transport=_UnixTransport(SUPERVISOR_SOCKET, timeout)
    )
    try:
        infos = proxy.supervisor.getAllProcessInfo()
    except (OSError, xmlrpc.client.Error):
        return {}
    programs = {}
    for info in infos:
        pid = info.get("pid") or None
        desc = info.get("description", "")
        programs[info["name"]] = Program(info["name"], info["statename"], desc, pid)
    return programs


def process_env(pid: int) -> dict[str, str]:
    """The environment a running process was started with."""
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    return {k.decode(): v.decode("utf-8", "replace") for k, v in pairs}


_ERRORISH = re.compile(
    r"error|fatal|warn|exited|refused|denied|traceback|critical|abort", re.IGNORECASE
)


# The greeting probe reads the handshake and hangs up, which MariaDB logs as an aborted
# unauthenticated connection: the diagnosis's own footprint, not evidence.
_OWN_FOOTPRINT = re.compile(r"Aborted connection .* user: 'unauthenticated'")
_STAMP = re.compile(r"(\d{4}-\d{2}-\d{2})[T ](\d{2}:\d{2}:\d{2})")


def _recent(line: str, within: float = 600.0) -> bool:
    """Whether a log line is from the last `within` seconds (undated lines count as recent)."""
    match = _STAMP.search(line)
    if not match:
        return True
    try:
        at = calendar.timegm(time.strptime(" ".join(match.groups()), "%Y-%m-%d %H:%M:%S"))
    except ValueError:
        return True
    return time.time() - at <= within


def last_error_lines(limit: int = 3, tail_bytes: int = 65536) -> dict[str, list[str]]:
    """The last few error-looking lines of each service log under .lab/logs."""
    found: dict[str, list[str]] = {}
    if not LAB_LOGS.is_dir():
        return found
    for path in sorted(LAB_LOGS.glob("*.log")):
        try:
            with path.open("rb") as fh:
                fh.seek(max(0, path.stat().st_size - tail_bytes))
                lines = fh.read().decode("utf-8", "replace").splitlines()
        except OSError:
            continue
        hits = [
            line.strip()[:200]
            for line in lines
            if _ERRORISH.search(line) and not _OWN_FOOTPRINT.search(line) and _recent(line)
        ]
        if hits:
            found[path.stem] = hits[-limit:]
    return found


_UNEXPECTED_EXIT = re.compile(r"^(\S+ \S+) \S+ exited: (\S+) \((.*not expected)\)")


def unexpected_exits(program: str, within: float = 300.0) -> list[dict[str, str]]:
    """The supervisor's record of a program dying when it should not have, lately."""
    log = LAB_LOGS / "supervisord.log"
    found = []
    try:
        lines = log.read_text(errors="replace").splitlines()[-2000:]
    except OSError:
        return found
    for line in lines:
        match = _UNEXPECTED_EXIT.match(line)
        if match and match.group(2) == program:
            try:
                at = time.mktime(time.strptime(match.group(1).split(",")[0], "%Y-%m-%d %H:%M:%S"))
            except ValueError:
                continue
            if time.time() - at <= within:
                found.append({"at": match.group(1), "why": match.group(3)})
    return found


@dataclass
class LabEvidence:
    """Everything the lab-only checks gathered, for the verdict and the report."""

    counters_moved: list[dict[str, Any]] = field(default_factory=list)
    db_input: list[Rule] = field(default_factory=list)
    router_forward: list[Rule] = field(default_factory=list)
    router_prerouting: list[Rule] = field(default_factory=list)
    db_listeners: list[Listener] = field(default_factory=list)
    router_ip_forward: str | None = None
    db_netem: list[str] = field(default_factory=list)
    db_queues: list[Rule] = field(default_factory=list)
    web_routes: list[str] = field(default_factory=list)
    programs: dict[str, Program] = field(default_factory=dict)
    app_env: dict[str, str] = field(default_factory=dict)
    mysql_exits: list[dict[str, str]] = field(default_factory=list)
    log_errors: dict[str, list[str]] = field(default_factory=dict)
    gateway_allow: list[str] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "counters_moved": self.counters_moved,
            "db_listeners": [vars(x) for x in self.db_listeners],
            "router_ip_forward": self.router_ip_forward,
            "router_dnat": [r.line("router") for r in self.router_prerouting if r.target == "DNAT"],
            "db_netem": self.db_netem,
            "db_queues": [r.line("db") for r in self.db_queues],
            "web_routes": self.web_routes,
            "programs": {k: vars(v) for k, v in self.programs.items()},
            "app_db_tls": self.app_env.get("APP_DB_TLS"),
            "mysql_unexpected_exits": self.mysql_exits[-3:],
            "log_errors": self.log_errors,
            "gateway_allow": self.gateway_allow,
        }


def public_ca() -> str | None:
    """What the lab's clients trust for app.example.com: .lab/ca/trust.pem (the lab CA and
    every root Pebble has had, kept by nat/lab/pebble.sh) where it exists, else the lab CA."""
    for name in ("trust.pem", "ca.pem"):
        path = LAB_STATE / "ca" / name
        if path.exists():
            return str(path)
    return None


def gateway_allow(programs: dict[str, Program]) -> list[str] | None:
    """`[access] allow` of the running gateway, read from the file its --config names."""
    prog = programs.get("gateway")
    if prog is None or prog.pid is None:
        return None
    try:
        argv = Path(f"/proc/{prog.pid}/cmdline").read_bytes().split(b"\0")
        config = Path(argv[argv.index(b"--config") + 1].decode())
        if not config.is_absolute():
            config = Path(f"/proc/{prog.pid}/cwd").resolve() / config
        allow = tomllib.loads(config.read_text()).get("access", {}).get("allow")
    except (OSError, ValueError, IndexError, tomllib.TOMLDecodeError):
        return None
    return [str(a) for a in allow] if isinstance(allow, list) else None
