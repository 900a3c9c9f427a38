"""Run every check within the time budget and gather the evidence for the verdict.

The database chain (name, route, ping and TCP side by side, greeting, TLS login, query),
the app's /readyz, the public URL and, in the lab, the hosts' state run side by side;
each probe has its own short timeout, so a run ends within a few seconds whatever is
broken. Within the database chain, a layer that failed stops the ones above it: they
would only fail again, slower.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import httpchecks, lab, probes
from .probes import DbTarget, Result
from .verdict import Context, Verdict, decide, slow_link

DEFAULTS = {
    "APP_DB_HOST": "10.0.2.10",
    "APP_DB_PORT": "3306",
    "APP_DB_USER": "app",
    "APP_DB_NAME": "notes",
    "APP_DB_TLS": "on",
}


# A whole run, every check and a second look included, on a machine that is not overloaded.
RUN_BUDGET = 5.0


@dataclass
class Settings:
    db: DbTarget
    password_file: str | None
    app_env: dict[str, str]
    app_addr: str = "10.0.1.10"
    readyz_url: str = "http://127.0.0.1:8000/readyz"
    gateway_url: str = "http://10.0.1.10/"
    public_url: str = "https://app.example.com/"
    public_ca: str | None = None
    public_from: str | None = None
    lab: bool = False
    timeout: float = 1.5


@dataclass
class Report:
    verdict: Verdict
    results: dict[str, Result]
    lab: lab.LabEvidence | None
    settings: Settings
    started: float
    seconds: float
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict.as_dict(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.started)),
            "seconds": round(self.seconds, 2),
            "target": f"{self.settings.db.host}:{self.settings.db.port}",
            "checks": [res.as_dict() for res in self.results.values()],
            "lab": self.lab.as_dict() if self.lab else None,
            "notes": self.notes,
        }


def find_app_env() -> dict[str, str]:
    """The environment of the app running on this host (gunicorn serving notes:create_app).

    Only a process in our own network namespace counts: on a machine that holds several
    (the lab, a test suite's own gunicorn), the app of another host is not ours.
    """
    try:
        own_net = os.readlink("/proc/self/ns/net")
    except OSError:
        own_net = None
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
            if b"gunicorn" not in cmdline or b"create_app" not in cmdline:
                continue
            if own_net and os.readlink(proc / "ns" / "net") != own_net:
                continue
        except OSError:
            continue
        env = lab.process_env(int(proc.name))
        if env:
            return env
    return {}


def load_settings(args: Any) -> Settings:
    """Settings from the flags, else the running app's environment, else ours, else defaults."""
    app_env = find_app_env()
    defaults = dict(DEFAULTS)
    if args.lab:
        # The lab app's files (nat/lab/supervisor/app.conf), for when the app is not running.
        defaults["APP_DB_PASSWORD_FILE"] = str(lab.LAB_STATE / "web" / "app-password")
        defaults["APP_DB_CA_FILE"] = str(lab.LAB_STATE / "ca" / "ca.pem")

    def pick(key: str, flag: str | None) -> str | None:
        if flag:
            return flag
        return app_env.get(key) or os.environ.get(key) or defaults.get(key)

    password_file = pick("APP_DB_PASSWORD_FILE", args.password_file)
    password = None
    if password_file:
        try:
            password = Path(password_file).read_text().strip()
        except OSError:
            password = None
    db = DbTarget(
        host=pick("APP_DB_HOST", args.db_host) or "",
        port=int(pick("APP_DB_PORT", args.db_port and str(args.db_port)) or 3306),
        user=pick("APP_DB_USER", args.db_user) or "app",
        password=password,
        database=pick("APP_DB_NAME", args.db_name) or "notes",
        ca_file=pick("APP_DB_CA_FILE", args.ca_file),
    )
    return Settings(
        db=db,
        password_file=password_file,
        app_env=app_env,
        app_addr=args.app_addr,
        readyz_url=args.readyz_url,
        gateway_url=args.gateway_url,
        public_url=args.public_url,
        public_ca=args.public_ca,
        public_from=args.public_from,
        lab=args.lab,
        timeout=args.timeout,
    )


def db_chain(s: Settings, out: dict[str, Result], counters: dict[str, Any]) -> None:
    """The database layers in order; a failed layer stops the ones above it."""
    t = s.timeout
    out["dns"] = dns = probes.resolve(s.db.host, t)
    if not dns.ok:
        return
    addr = dns.data.get("addrs", [s.db.host])[0]
    out["route"] = route = probes.route_get(addr)
    if not route.ok:
        return
    with ThreadPoolExecutor(2) as pool:
        ping = pool.submit(probes.ping, addr)
        if s.lab:
            counters["before"] = lab.snapshot_counters()
        tcp = probes.tcp_connect(addr, s.db.port, t)
        if s.lab:
            counters["after"] = lab.snapshot_counters()
        out["tcp"] = tcp
        out["ping"] = ping.result()
    if not tcp.ok:
        return
    # The greeting and both logins side by side: on a slow link each costs round trips,
    # and a login that fails for want of a greeting fails within its own timeout.
    with ThreadPoolExecutor(2) as pool:
        greeting = pool.submit(probes.mysql_greeting, addr, s.db.port, t)
        # Without TLS the server should say no: evidence for a client that skips TLS.
        plain = pool.submit(probes.mysql_login, s.db, False, t)
        login, conn = probes.mysql_login(s.db, True, t * 2)
        out["greeting"] = greeting.result()
        out["login-tls"] = login
        plain_res, plain_conn = plain.result()
        if plain_conn is not None:
            plain_conn.close()
        out["login-plain"] = _plain_as_expected(plain_res, login)
    if conn is not None:
        out["select"] = probes.select_one(conn)


def _plain_as_expected(plain: Result, tls: Result) -> Result:
    """The login without TLS is right to fail; it is the finding when it succeeds."""
    if plain.outcome == "logged-in":
        plain.ok = False
        plain.detail = "the server accepts the app's login WITHOUT TLS"
    elif tls.ok and plain.outcome in ("auth", "tls-required"):
        plain.ok = True
        plain.detail = (
            f"without TLS the server refuses the same login ({plain.data.get('code')}), as it must"
        )
    return plain


def gateway_local(url: str, timeout: float) -> Result:
    """Any HTTP answer from the gateway on the web host: it is up, whatever it decides."""
    clock = probes.Clock()
    try:
        resp = httpchecks.fetch(url, timeout)
    except httpchecks.FetchError as exc:
        return Result("gateway-local", "no-answer", f"GET {url}: {exc}", False, clock())
    return Result(
        "gateway-local",
        "answers",
        f"GET {url} on the web host: {resp.status}",
        True,
        clock(),
        {"status": resp.status},
    )


def public_checks(s: Settings) -> list[Result]:
    """The public URL, from the internet side when a lab host is named for it."""
    if not s.public_url:
        return []
    t = s.timeout
    if not s.public_from:
        return httpchecks.public(s.public_url, s.public_ca, t)
    cmd = [
        "ip",
        "netns",
        "exec",
        s.public_from,
        sys.executable,
        "-m",
        "diagnose.public",
        s.public_url,
        "--timeout",
        str(t),
    ]
    if s.public_ca:
        cmd += ["--ca", s.public_ca]
    # The checks in there keep to their own timeouts (a failed verification costs a second
    # handshake); what varies is how long the process takes to start, seconds on a busy
    # machine, and a check cut short by that would say the public URL is down.
    try:
        out = subprocess.run(
            cmd, capture_output=True, text=True, timeout=2 * t + 10, cwd=lab.ROOT, check=False
        )
        rows = json.loads(out.stdout)
    except (subprocess.TimeoutExpired, ValueError):
        return [
            Result("public-https", "error", f"the public check from {s.public_from} failed", False)
        ]
    return [Result(**{k: v for k, v in row.items()}) for row in rows]


def gather_lab(s: Settings) -> lab.LabEvidence:
    """One batch of read-only commands per host, side by side, and the supervisor."""
    ev = lab.LabEvidence()
    db_cmds = [
        lab.iptables_argv("filter", "INPUT"),
        # Where the kernel has no netem, a delay is a user-space NFQUEUE (diagnose.delayer).
        lab.iptables_argv("mangle", "OUTPUT"),
        ["ss", "-ltnpH"],
        ["tc", "qdisc", "show"],
    ]
    router_cmds = [
        lab.iptables_argv("filter", "FORWARD"),
        lab.iptables_argv("nat", "PREROUTING"),
        ["sysctl", "-n", "net.ipv4.ip_forward"],
    ]
    with ThreadPoolExecutor(4) as pool:
        db = pool.submit(lab.batch, "db", db_cmds)
        router = pool.submit(lab.batch, "router", router_cmds)
        programs = pool.submit(lab.supervisor_status)
        logs = pool.submit(lab.last_error_lines)
        # This process runs on web: its routes need no hop.
        ev.web_routes = lab.routes(None)
        ev.mysql_exits = lab.unexpected_exits("mysql")
        db_input, db_mangle, ss, tc = db.result()
        fwd, prerouting, ip_forward = router.result()
        ev.programs = programs.result()
        ev.log_errors = logs.result()
    ev.db_input = lab.parse_iptables(db_input, "filter", "INPUT")
    ev.db_queues = [
        r for r in lab.parse_iptables(db_mangle, "mangle", "OUTPUT") if r.target == "NFQUEUE"
    ]
    ev.db_listeners = lab.parse_listeners(ss)
    ev.db_netem = [line.strip() for line in tc.splitlines() if "netem" in line]
    ev.router_forward = lab.parse_iptables(fwd, "filter", "FORWARD")
    ev.router_prerouting = lab.parse_iptables(prerouting, "nat", "PREROUTING")
    ev.router_ip_forward = ip_forward.strip() or None
    ev.gateway_allow = lab.gateway_allow(ev.programs)
    return ev


def run(s: Settings) -> Report:
    started = time.time()
    clock = probes.Clock()
    results: dict[str, Result] = {}
    counters: dict[str, Any] = {}
    with ThreadPoolExecutor(5) as pool:
        chain = pool.submit(db_chain, s, results, counters)
        ready = (
            pool.submit(httpchecks.readyz, s.readyz_url, s.timeout * 2) if s.readyz_url else None
        )
        gw = pool.submit(gateway_local, s.gateway_url, s.timeout) if s.gateway_url else None
        public = pool.submit(public_checks, s)
        evidence = pool.submit(gather_lab, s) if s.lab else None
        chain.result()
        if ready is not None:
            results["readyz"] = ready.result()
        if gw is not None:
            results["gateway-local"] = gw.result()
        for res in public.result():
            results[res.check] = res
        lab_ev = evidence.result() if evidence else None
    if lab_ev is not None and "before" in counters:
        lab_ev.counters_moved = lab.counter_deltas(counters["before"], counters["after"])
    notes = recheck_upper_layers(s, results, RUN_BUDGET - clock())
    ctx = Context(
        db_host=s.db.host,
        db_port=s.db.port,
        db_user=s.db.user,
        app_addr=s.app_addr,
        password_file=s.password_file,
        readyz_url=s.readyz_url,
        public_url=s.public_url,
        lab=s.lab,
    )
    verdict = decide(results, lab_ev, ctx, s.app_env)
    verdict.evidence = evidence_lines(verdict, results, lab_ev)
    if not s.app_env:
        notes.append("the app's process was not found: settings from the environment/defaults")
    return Report(verdict, results, lab_ev, s, started, clock(), notes)


# What the app's /readyz reports when its own login fails: its settings explain that, not the
# moment it was asked, so a good login from here does not contradict it.
_APP_LOGIN_KINDS = ("auth", "host-not-allowed", "tls")
_BUDGET_SPENT = "the run's time budget is spent"


def recheck_upper_layers(
    s: Settings, results: dict[str, Result], seconds_left: float = RUN_BUDGET
) -> list[str]:
    """Ask the app and the public URL again when they failed while every layer under them
    answered, if `seconds_left` of the run's budget allow it; returns a note for each.

    The checks run side by side, each at its own moment, so they can disagree: a mysqld the
    supervisor restarts can refuse the app's /readyz and be back by the time this host's own
    connect and login run. An upper layer's failure is taken as evidence only once it holds
    with the layers below known good; asked again, a fault that persists fails again.
    """
    deadline = time.monotonic() + seconds_left
    notes: list[str] = []
    select = results.get("select")
    if select is None or not select.ok:
        return notes
    ready = results.get("readyz")
    kind = ready.data.get("kind") if ready is not None else None
    # A timeout on a link this host measured slow agrees with it: nothing to ask again.
    slow_agrees = kind == "timeout" and slow_link(results)
    if (
        ready is not None
        and ready.outcome == "not-ready"
        and kind not in _APP_LOGIN_KINDS
        and not slow_agrees
    ):
        said = f"/readyz said kind={kind} while this host logged in to the database"
        limit = min(s.timeout * 2, deadline - time.monotonic())
        if limit < s.timeout / 2:
            notes.append(f"{said}; not asked again: {_BUDGET_SPENT}")
        else:
            results["readyz"] = again = httpchecks.readyz(s.readyz_url, limit)
            notes.append(f"{said}; asked again after the database checks: {again.outcome}")
    ready = results.get("readyz")
    https = results.get("public-https")
    if (ready is None or ready.ok) and https is not None and https.outcome == "upstream-failed":
        said = (
            f"the public URL answered {https.data.get('status')} while the app and its "
            "database answered"
        )
        # The public check is a process on the internet host: a handshake or two of its own.
        if deadline - time.monotonic() < s.timeout * 2:
            notes.append(f"{said}; not asked again: {_BUDGET_SPENT}")
            return notes
        for res in public_checks(s):
            results[res.check] = res
        notes.append(f"{said}; asked again: {results['public-https'].outcome}")
    return notes


def evidence_lines(v: Verdict, results: dict[str, Result], ev: lab.LabEvidence | None) -> list[str]:
    """The verdict's own evidence first, then every check in layer order."""
    lines = list(v.evidence)
    for res in results.values():
        mark = "ok  " if res.ok else "FAIL"
        lines.append(f"{mark} {res.check:<13} {res.detail}")
    if ev is not None:
        for name, prog in sorted(ev.programs.items()):
            lines.append(f"lab  supervisor    {name} {prog.state}")
        if ev.db_netem:
            lines.append("lab  db qdisc      " + "; ".join(ev.db_netem))
        for log, errs in ev.log_errors.items():
            for err in errs[-2:]:
                lines.append(f"lab  log {log:<9} {err[:120]}")
    return lines
