"""From what the probes saw to one verdict: the lowest broken layer, its cause, the fix.

The rules read the probes in the order the layers stack (name, route, reachability,
TCP, MySQL greeting, TLS and login, query, the app, the public edge). A cause is named
only when the evidence singles it out; otherwise the verdict lists what it could not
tell apart, and the evidence that would.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

from .lab import LabEvidence
from .probes import Result

# Above these a LAN link is slow: the db and web hosts share a region, where a round trip
# is well under a millisecond and a query a few.
SLOW_RTT_MS = 50.0
SLOW_CONNECT_MS = 100.0
SLOW_QUERY_MS = 100.0


@dataclass
class Verdict:
    status: str  # healthy | down | degraded | slow
    layer: str
    cause: str  # a stable word for machines and tests
    summary: str
    fix: list[str] = field(default_factory=list)
    cannot_tell: list[str] = field(default_factory=list)
    evidence: list[str] = field(default_factory=list)

    def line(self) -> str:
        return f"{self.status.upper()} [{self.layer}] {self.summary}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "layer": self.layer,
            "cause": self.cause,
            "summary": self.summary,
            "fix": self.fix,
            "cannot_tell_apart": self.cannot_tell,
            "evidence": self.evidence,
        }


@dataclass
class Context:
    """The settings the rules need to write commands a person can paste."""

    db_host: str
    db_port: int
    db_user: str
    app_addr: str
    password_file: str | None
    readyz_url: str
    public_url: str
    lab: bool
    lab_ctl: str = "nat/lab/ctl.sh"
    app_program: str = "app"
    db_program: str = "mysql"
    gateway_program: str = "gateway"


def _on(ctx: Context, host: str, cmd: str) -> str:
    return f"ip netns exec {host} {cmd}" if ctx.lab else cmd


def _start(ctx: Context, program: str, unit: str) -> str:
    return f"{ctx.lab_ctl} start {program}" if ctx.lab else f"systemctl start {unit}"


def _blocking_moves(lab: LabEvidence | None, host: str | None = None) -> list[dict[str, Any]]:
    if lab is None:
        return []
    return [
        m
        for m in lab.counters_moved
        if m["target"] in ("DROP", "REJECT")
        and (host is None or m["host"] == host)
        and m["table"] == "filter"
    ]


def _rule_text(move: dict[str, Any]) -> str:
    where = "policy" if move["num"] == 0 else f"rule {move['num']}"
    spec = f" {move['spec']}" if move["spec"] else ""
    return (
        f"{move['host']} {move['table']} {move['chain']} {where}: {move['target']}{spec}"
        f" (+{move['delta']} packets during the probe)"
    )


def _fw_fix(ctx: Context, move: dict[str, Any]) -> str:
    chain = move["chain"]
    if move["num"] == 0:
        rule = f"-A {chain} -s {ctx.app_addr} -p tcp --dport {ctx.db_port} -j ACCEPT"
        return _on(ctx, move["host"], f"iptables {rule}") + "  (the accept rule is missing)"
    return _on(ctx, move["host"], f"iptables -D {chain} {move['num']}")


def slow_link(r: dict[str, Result]) -> bool:
    """Whether the ICMP echo measured the link to the database as slow or lossy.

    A probe above it that timed out is then read as that slowness first: on a link with
    300 ms round trips and some loss, one lost segment and its retransmission take a
    connect or a greeting past its timeout, with no firewall and no hung server involved.
    """
    ping = r.get("ping")
    if ping is None or not ping.ok:
        return False
    return ping.data.get("rtt_avg_ms", 0) > SLOW_RTT_MS or ping.data.get("loss_pct", 0) > 0


def decide(
    r: dict[str, Result], lab: LabEvidence | None, ctx: Context, app_env: dict[str, str]
) -> Verdict:
    """Name the lowest broken layer. `r` maps a check's name to its result."""
    target = f"{ctx.db_host}:{ctx.db_port}"
    for rule in (_dns, _route, _tcp, _greeting, _login, _select, _slow, _app, _public):
        verdict = rule(r, lab, ctx, app_env, target)
        if verdict is not None:
            return verdict
    plain = r.get("login-plain")
    if plain is not None and plain.outcome == "logged-in":
        return Verdict(
            "degraded",
            "mysql-tls",
            "tls-not-required",
            f"every layer answers, but MySQL on {target} accepts the app's login without TLS",
            fix=[
                (
                    "require_secure_transport = ON (mysql/server.cnf) and REQUIRE SSL on the "
                    "account (mysql/grants.sql)"
                )
            ],
        )
    if lab and lab.mysql_exits:
        last = lab.mysql_exits[-1]
        return Verdict(
            "healthy",
            "mysql",
            "mysql-restarted",
            f"every layer answers; mysqld died ({last['why']}) at {last['at']} and the "
            "supervisor restarted it",
            fix=["nothing to do now; find why mysqld died: " + "tail .lab/logs/mysql.log"],
        )
    return Verdict(
        "healthy",
        "none",
        "healthy",
        "every layer answers: DB reachable, login over TLS, app ready, public URL OK",
    )


def _dns(r, lab, ctx, env, target) -> Verdict | None:
    res = r.get("dns")
    if res is None or res.ok:
        return None
    return Verdict(
        "down",
        "dns",
        "dns",
        f"the database host {ctx.db_host} does not resolve ({res.outcome})",
        fix=[f"getent hosts {ctx.db_host}; fix APP_DB_HOST or DNS"],
    )


def _route(r, lab, ctx, env, target) -> Verdict | None:
    res = r.get("route")
    if res is None or res.ok:
        return None
    fix = (
        _on(ctx, "web", "ip route add default via 10.0.1.1")
        if ctx.lab
        else (f"ip route add {ctx.db_host} via <the subnet's gateway>")
    )
    ev = []
    if lab and lab.web_routes:
        ev.append("web routes: " + "; ".join(lab.web_routes))
    return Verdict(
        "down",
        "route",
        "no-route",
        f"this host has no route to {ctx.db_host} ({res.data.get('error', res.outcome)})",
        fix=[fix],
        evidence=ev,
    )


def _tcp(r, lab, ctx, env, target) -> Verdict | None:
    tcp = r.get("tcp")
    if tcp is None or tcp.ok:
        return None
    ping = r.get("ping")
    pinged = bool(ping and ping.ok)
    ping_says = "the host answers ping" if pinged else "the host does not answer ping either"
    outcome = tcp.outcome
    icmp = tcp.data.get("icmp")
    ev = []
    blocking = _blocking_moves(lab)
    for move in blocking:
        ev.append("counter moved: " + _rule_text(move))

    if outcome in ("prohibited", "rejected-icmp") and icmp:
        who = icmp["from"]
        fix = (
            [_fw_fix(ctx, blocking[0])]
            if blocking
            else [
                (
                    f"on {who}: iptables -L -v -n --line-numbers, then delete the REJECT rule for "
                    f"{ctx.db_port}"
                )
            ]
        )
        return Verdict(
            "down",
            "firewall",
            "firewall-reject",
            f"a firewall on {who} rejects TCP {target} (ICMP {icmp['name']}); {ping_says}",
            fix=fix,
            evidence=ev,
        )

    if outcome == "refused":
        return _refused(lab, ctx, target, ping_says, blocking, ev)

    if outcome == "timeout":
        if lab and lab.router_ip_forward == "0":
            return Verdict(
                "down",
                "router",
                "forwarding-off",
                f"TCP {target} times out and {ping_says}: the router does not forward "
                "(net.ipv4.ip_forward = 0 on router)",
                fix=[_on(ctx, "router", "sysctl -w net.ipv4.ip_forward=1")],
                evidence=ev + ["router net.ipv4.ip_forward = 0"],
            )
        rejects = [m for m in blocking if m["target"] == "REJECT"]
        if rejects:
            move = rejects[0]
            return Verdict(
                "down",
                "firewall",
                "firewall-reject",
                f"a REJECT rule on {move['host']} ({move['chain']} rule {move['num']}) matches "
                f"TCP {target}; its ICMP answers are rate-limited by the kernel under load, so "
                "this connect timed out instead of failing at once",
                fix=[_fw_fix(ctx, move)],
                evidence=ev,
            )
        if blocking:
            move = blocking[0]
            return Verdict(
                "down",
                "firewall",
                "firewall-drop",
                f"TCP {target} times out although {ping_says}: the firewall on "
                f"{move['host']} drops it ({move['chain']} "
                f"{'policy' if move['num'] == 0 else 'rule ' + str(move['num'])})"
                if pinged
                else f"TCP {target} times out and {ping_says}: the firewall on {move['host']} "
                "drops it",
                fix=[_fw_fix(ctx, move)],
                evidence=ev,
            )
        if pinged and slow_link(r):
            return None  # read as slowness below: no firewall counter moved
        if pinged:
            return Verdict(
                "down",
                "firewall",
                "firewall-drop",
                f"TCP {target} times out although the host answers ping: a firewall on the "
                "path drops port 3306",
                fix=[
                    (
                        "iptables -L -v -n on the db host and on the path's firewalls "
                        "(security groups, NACLs)"
                    )
                ],
                cannot_tell=["the db host's own firewall", "a firewall between here and it"],
                evidence=ev,
            )
        return Verdict(
            "down",
            "network",
            "no-answer",
            f"nothing answers from {ctx.db_host}: TCP {target} times out and {ping_says}",
            fix=[
                (
                    f"check the host is up, then each hop: ip route get {ctx.db_host}; "
                    "the router's forwarding and firewall"
                )
            ],
            cannot_tell=[
                "the db host is down",
                "the router drops or does not forward",
                "a firewall drops everything",
            ],
            evidence=ev,
        )

    if outcome == "unreachable":
        via = f" (ICMP from {icmp['from']})" if icmp else ""
        return Verdict(
            "down",
            "network",
            "host-unreachable",
            f"{ctx.db_host} is unreachable{via}: no host answers at that address",
            fix=[f"check the db host is up and has {ctx.db_host}"],
            cannot_tell=["the host is down", "a REJECT rule with icmp-host-unreachable"]
            if not blocking
            else [],
            evidence=ev,
        )
    if outcome == "no-route":
        return Verdict(
            "down",
            "route",
            "no-route",
            tcp.detail,
            fix=[f"ip route get {ctx.db_host}"],
            evidence=ev,
        )
    return Verdict("down", "tcp", "tcp-error", tcp.detail, evidence=ev)


def _refused(lab, ctx, target, ping_says, blocking, ev) -> Verdict:
    if lab is None:
        return Verdict(
            "down",
            "mysql",
            "refused",
            f"{target} refuses connections (TCP reset) and {ping_says}: nothing listens "
            f"there, or a firewall answers with tcp-reset",
            fix=[
                (
                    "on the db host: systemctl status mysql; ss -ltnp 'sport = :3306'; "
                    "iptables -L INPUT -v -n"
                )
            ],
            cannot_tell=[
                "MySQL stopped",
                "MySQL bound to another address",
                "a REJECT --reject-with tcp-reset rule",
            ],
            evidence=ev,
        )
    mine = [x for x in lab.db_listeners if x.port == ctx.db_port]
    ev += [
        "db listens on "
        + (", ".join(x.line() for x in mine) if mine else f"nothing on port {ctx.db_port}")
    ]
    prog = lab.programs.get(ctx.db_program)
    if prog:
        ev.append(f"supervisor: {prog.name} {prog.state} {prog.description}".rstrip())
    # The reset came from a rule whose counter moved: a REJECT on any host, the db host's first.
    resets = sorted(
        (m for m in blocking if m["target"] == "REJECT" or m["host"] == "db"),
        key=lambda m: m["host"] != "db",
    )
    if resets:
        move = resets[0]
        return Verdict(
            "down",
            "firewall",
            "firewall-reject",
            f"the {move['host']} host's firewall resets TCP {target} ({move['chain']} rule "
            f"{move['num']}: REJECT); MySQL itself is listening",
            fix=[_fw_fix(ctx, move)],
            evidence=ev,
        )
    on_target = [x for x in mine if x.addr in (ctx.db_host, "0.0.0.0", "*", "::")]
    if mine and not on_target:
        where = ", ".join(x.addr for x in mine)
        return Verdict(
            "down",
            "mysql",
            "mysql-bound-elsewhere",
            f"MySQL runs but listens on {where}:{ctx.db_port} only, not on {ctx.db_host}; "
            f"{ping_says}",
            fix=[
                (
                    f"set bind-address = {ctx.db_host} (mysql/server.cnf) and restart: "
                    f"{ctx.lab_ctl} restart {ctx.db_program}"
                )
            ],
            evidence=ev,
        )
    if not mine:
        exits = lab.mysql_exits
        # Just restarted after a crash: RUNNING to the supervisor, not listening yet.
        young = prog is not None and prog.state == "RUNNING" and prog.uptime() < 60
        if (prog and prog.state in ("STARTING", "BACKOFF")) or (exits and young):
            why = f" (died: {exits[-1]['why']} at {exits[-1]['at']})" if exits else ""
            return Verdict(
                "down",
                "mysql",
                "mysql-restarting",
                f"MySQL on {ctx.db_host} is not up yet: the supervisor is restarting it{why}",
                fix=[
                    "wait for the supervisor's restart; if it keeps dying: tail .lab/logs/mysql.log"
                ],
                evidence=ev,
            )
        state = f"supervisor: {prog.state}" if prog else "no mysql program in the supervisor"
        return Verdict(
            "down",
            "mysql",
            "mysql-not-running",
            f"MySQL is not running on {ctx.db_host} although {ping_says} ({state})"
            if "answers" in ping_says
            else f"MySQL is not running on {ctx.db_host} ({state})",
            fix=[_start(ctx, ctx.db_program, "mysql")],
            evidence=ev,
        )
    # The probes and the lab's evidence run side by side: a mysqld that came back between
    # the refused connect and the `ss` listing is a restart seen half-way, not a mystery.
    # mysqld listens within a second of its start, while the supervisor still calls it
    # STARTING until its startsecs have passed: that is the same restart, seen earlier.
    # Without a recorded crash, only a start within the last seconds can explain a refusal.
    exits = lab.mysql_exits
    restarting = prog is not None and prog.state in ("STARTING", "BACKOFF")
    young = prog is not None and prog.state == "RUNNING" and prog.uptime() < (60 if exits else 10)
    if restarting or young:
        why = f" (died: {exits[-1]['why']} at {exits[-1]['at']})" if exits else ""
        since = (
            f"the supervisor is starting it again ({prog.state})"
            if restarting
            else f"the supervisor started it again {prog.uptime():.0f} s ago"
        )
        return Verdict(
            "down",
            "mysql",
            "mysql-restarting",
            f"MySQL on {ctx.db_host} refused connections while it was restarting{why}; "
            f"{since} and it listens now",
            fix=["run the diagnosis again; if mysqld keeps dying: tail .lab/logs/mysql.log"],
            evidence=ev,
        )
    return Verdict(
        "down",
        "tcp",
        "refused",
        f"{target} refuses connections though MySQL listens there",
        cannot_tell=["a firewall rule with tcp-reset", "a listener backlog overflow"],
        evidence=ev,
    )


def _greeting(r, lab, ctx, env, target) -> Verdict | None:
    res = r.get("greeting")
    if res is None or res.ok:
        return None
    if res.outcome == "error" and res.data.get("code") == 1130:
        return _host_not_allowed(ctx, res)
    if res.outcome == "no-greeting" and slow_link(r):
        return None  # read as slowness below
    if res.outcome == "no-greeting":
        return Verdict(
            "down",
            "mysql",
            "no-greeting",
            f"TCP {target} connects but the server sends no greeting: mysqld hung, "
            "or not MySQL on that port",
            fix=["on the db host: tail the mysql log; ss -ltnp 'sport = :3306'"],
        )
    return Verdict("down", "mysql", "greeting-" + res.outcome, res.detail)


def _host_not_allowed(ctx: Context, res: Result) -> Verdict:
    grant = f"'{ctx.db_user}'@'{ctx.app_addr}'"
    return Verdict(
        "down",
        "mysql-auth",
        "host-not-allowed",
        f"MySQL refuses this host: no account {grant} ({res.data.get('code')})",
        fix=[
            (
                f"on the db host, as root: SELECT user, host FROM mysql.user WHERE user = "
                f"'{ctx.db_user}'; then RENAME USER or CREATE USER {grant} (mysql/grants.sql)"
            )
        ],
    )


def _login(r, lab, ctx, env, target) -> Verdict | None:
    res = r.get("login-tls")
    if res is None or res.ok:
        return None
    grant = f"'{ctx.db_user}'@'{ctx.app_addr}'"
    if res.outcome == "host-not-allowed":
        return _host_not_allowed(ctx, res)
    if res.outcome == "auth":
        return Verdict(
            "down",
            "mysql-auth",
            "wrong-password",
            f"MySQL rejects the app's password for {grant} (1045): the password in "
            f"{ctx.password_file} does not match the server's",
            fix=[
                (
                    f"on the db host, as root: ALTER USER {grant} IDENTIFIED BY "
                    f"'<the content of {ctx.password_file}>'"
                )
            ],
        )
    if res.outcome == "tls-failed":
        return Verdict(
            "down",
            "tls",
            "tls-failed",
            f"the TLS handshake with {target} fails: {res.data.get('tls_error')}",
            fix=["check APP_DB_CA_FILE signs the server's certificate"],
        )
    if res.outcome == "db-denied":
        return Verdict(
            "down",
            "mysql-auth",
            "db-denied",
            res.detail,
            fix=["GRANT the app's privileges again (mysql/grants.sql)"],
        )
    if res.outcome == "no-password":
        return Verdict(
            "unknown",
            "config",
            "no-password",
            f"cannot log in: the password file {ctx.password_file} is unreadable",
            cannot_tell=["a wrong password", "a good one"],
        )
    if res.outcome == "timeout":
        return None  # read as slowness or loss below
    return Verdict("down", "mysql", "login-" + res.outcome, res.detail)


def _select(r, lab, ctx, env, target) -> Verdict | None:
    res = r.get("select")
    if res is None or res.ok:
        return None
    if "timed out" in res.detail and slow_link(r):
        return None  # read as slowness below
    return Verdict("down", "mysql", "query-failed", res.detail)


def _slow(r, lab, ctx, env, target) -> Verdict | None:
    ping, tcp, sel, login = r.get("ping"), r.get("tcp"), r.get("select"), r.get("login-tls")
    signs = []
    if ping and ping.ok:
        if ping.data.get("rtt_avg_ms", 0) > SLOW_RTT_MS:
            signs.append(f"ping rtt {ping.data['rtt_avg_ms']:.0f} ms")
        if ping.data.get("loss_pct", 0) > 0:
            signs.append(f"ping loss {ping.data['loss_pct']:.0f} %")
    if tcp and tcp.ok and tcp.seconds * 1000 > SLOW_CONNECT_MS:
        signs.append(f"TCP connect {tcp.seconds * 1000:.0f} ms")
    if tcp and tcp.outcome == "timeout":
        signs.append(f"TCP connect timed out after {tcp.seconds:.1f}s")
    greeting = r.get("greeting")
    if greeting and greeting.outcome == "no-greeting":
        signs.append(f"no greeting within {greeting.seconds:.1f}s")
    if sel and sel.ok and sel.seconds * 1000 > SLOW_QUERY_MS:
        signs.append(f"SELECT 1 {sel.seconds * 1000:.0f} ms")
    if sel and not sel.ok and "timed out" in sel.detail:
        signs.append(f"SELECT 1 timed out after {sel.seconds:.1f}s")
    timed_out = login is not None and login.outcome == "timeout"
    if timed_out:
        signs.append(f"login timed out after {login.seconds:.1f}s")
    if not signs:
        return None
    ev = [f"db link: {q}" for q in (lab.db_netem if lab else [])]
    queues = lab.db_queues if lab else []
    ev += [
        f"db link: {q.line('db')} (packets leaving db wait in a user-space queue)" for q in queues
    ]
    ready = r.get("readyz")
    if ready is not None:
        ev.append("the app: " + ready.detail)
    # A probe that got no answer at all is read as the slow link's loss, but the link does not
    # prove it: with no blocking counter seen, a drop or a hung server looks the same.
    cannot_tell = []
    if tcp and tcp.outcome == "timeout":
        cannot_tell = ["a SYN lost on the slow link", "a firewall that drops port 3306"]
    elif greeting and greeting.outcome == "no-greeting":
        cannot_tell = ["a greeting lost on the slow link", "a hung mysqld"]
    return Verdict(
        "slow",
        "network",
        "db-slow",
        f"the database answers but slowly: {', '.join(signs)}; slow, not down"
        + (
            f" (the app's /readyz gives up under it: kind={ready.data.get('kind')})"
            if ready is not None and not ready.ok
            else ""
        ),
        fix=[
            _on(ctx, "db", "tc qdisc show")
            + "; then the link's delay and loss"
            + (
                "; remove the netem qdisc: " + _on(ctx, "db", "tc qdisc del dev eth0 root")
                if lab and lab.db_netem
                else ""
            )
        ]
        + [_on(ctx, "db", f"iptables -t mangle -D OUTPUT {q.num}") for q in queues],
        cannot_tell=cannot_tell,
        evidence=ev,
    )


def _app(r, lab, ctx, env, target) -> Verdict | None:
    res = r.get("readyz")
    if res is None or res.ok:
        return None
    ev = []
    prog = lab.programs.get(ctx.app_program) if lab else None
    if prog:
        ev.append(f"supervisor: {prog.name} {prog.state} {prog.description}".rstrip())
    if res.outcome in ("refused", "unreachable"):
        return Verdict(
            "down",
            "app",
            "app-down",
            f"the app is not listening on {ctx.readyz_url.split('/')[2]}"
            + (f" (supervisor: {prog.state})" if prog else "")
            + "; the database itself is fine",
            fix=[_start(ctx, ctx.app_program, "notes-gunicorn")],
            evidence=ev,
        )
    kind = res.data.get("kind")
    tls_env = env.get("APP_DB_TLS", "on")
    if tls_env.lower() in ("off", "0", "false", "no"):
        return Verdict(
            "down",
            "app-config",
            "app-tls-off",
            f"the app connects to MySQL without TLS (APP_DB_TLS={tls_env}) and the server "
            f"requires it; the app reports kind={kind}; a TLS login from here works",
            fix=[
                "unset APP_DB_TLS (or set it to on) in the app's environment and restart it"
                + (f": {ctx.lab_ctl} restart {ctx.app_program}" if ctx.lab else "")
            ],
            evidence=ev + [f"app environment: APP_DB_TLS={tls_env}"],
        )
    return Verdict(
        "degraded",
        "app",
        f"app-not-ready-{kind}",
        f"the app is not ready (kind={kind}) although this host reaches MySQL and logs in "
        "with the app's settings",
        cannot_tell=["stale pooled connections", "different settings in the app's process"],
        fix=["compare the app's environment with APP_DB_*; restart the app"],
        evidence=ev,
    )


def _public(r, lab, ctx, env, target) -> Verdict | None:
    https = r.get("public-https")
    if https is None or https.ok:
        cert = r.get("certificate")
        if cert is not None and not cert.ok and cert.outcome == "invalid":
            return Verdict(
                "degraded",
                "tls-edge",
                "certificate-invalid",
                cert.detail,
                fix=["renew or reinstall the gateway's certificate"],
            )
        return None
    ev = [res.detail for k, res in r.items() if k.startswith("public") or k == "certificate"]
    if https.outcome == "denied":
        allow = lab_allow(lab)
        return Verdict(
            "down",
            "gateway-access",
            "access-denied",
            f"the gateway denies the client that should be allowed ({https.data.get('status')}"
            f"): its allowlist does not hold that client's range",
            fix=[
                (
                    "put the office range (203.0.113.0/28) back in [access] allow of "
                    "gateway.toml and reload the gateway (SIGHUP)"
                )
            ],
            evidence=ev + allow,
        )
    if https.outcome == "upstream-failed":
        return Verdict(
            "down",
            "gateway-upstream",
            "upstream-failed",
            f"the gateway answers {https.data.get('status')}: it cannot reach the app",
            fix=["look at the gateway's log for the upstream error"],
            evidence=ev,
        )
    gw = r.get("gateway-local")
    if lab is not None:
        dnat = [x for x in lab.router_prerouting if x.target == "DNAT"]
        if not dnat:
            return Verdict(
                "down",
                "router-nat",
                "dnat-missing",
                "the public URL does not answer: the router has no DNAT of the public "
                "address to the web host, while the gateway answers locally",
                fix=[_on(ctx, "router", "iptables-restore nat/router.rules")],
                evidence=ev + ([gw.detail] if gw else []) + ["router nat PREROUTING: no DNAT rule"],
            )
    if gw is not None and gw.ok:
        return Verdict(
            "down",
            "edge",
            "public-unreachable",
            "the public URL does not answer from the internet side, while the gateway answers "
            "on the web host",
            cannot_tell=["the DNAT / load balancer in front", "an edge firewall", "the public DNS"],
            evidence=ev + [gw.detail],
        )
    return Verdict(
        "down",
        "gateway",
        "gateway-down",
        "neither the public URL nor the gateway on the web host answers",
        fix=[_start(ctx, ctx.gateway_program, "edge-gateway")],
        evidence=ev + ([gw.detail] if gw else []),
    )


def lab_allow(lab: LabEvidence | None, client: str = "203.0.113.10") -> list[str]:
    """What the gateway's allowlist holds, and whether the office client is in it."""
    if lab is None or lab.gateway_allow is None:
        return []
    nets = []
    for text in lab.gateway_allow:
        try:
            nets.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            continue
    holds = any(ipaddress.ip_address(client) in net for net in nets)
    verb = "holds" if holds else "does not hold"
    return [f"gateway [access] allow = {lab.gateway_allow}: {verb} office {client}"]
