"""The probes' classification, against a real MariaDB, a closed port and real iptables."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from diagnose import probes
from diagnose.probes import DbTarget

ROOT = Path(__file__).resolve().parents[2]


def target(db, password: str | None = None) -> DbTarget:
    pw = password if password is not None else Path(db.password_file).read_text().strip()
    return DbTarget(db.host, db.port, "app", pw, "notes", db.ca_file)


def test_closed_port_is_refused_by_a_tcp_reset(closed_port):
    res = probes.tcp_connect("127.0.0.1", closed_port, 1.0)
    assert (res.outcome, res.ok) == ("refused", False)
    assert res.data["errno"] == "ECONNREFUSED"
    assert "TCP reset" in res.detail


def test_mariadb_greets_with_its_version_and_offers_tls(mariadb):
    tcp = probes.tcp_connect(mariadb.host, mariadb.port, 1.0)
    assert tcp.outcome == "connected"
    res = probes.mysql_greeting(mariadb.host, mariadb.port, 1.0)
    assert res.outcome == "greeting", res.detail
    assert "MariaDB" in res.data["version"]
    assert res.data["tls_offered"] is True


def test_tls_login_and_select_one(mariadb):
    res, conn = probes.mysql_login(target(mariadb), True, 2.0)
    assert res.outcome == "logged-in", res.detail
    assert res.data["cipher"]
    sel = probes.select_one(conn)
    assert (sel.outcome, sel.ok) == ("answered", True)


def test_login_without_tls_is_refused_by_the_server(mariadb):
    # MariaDB checks the account's REQUIRE SSL before require_secure_transport, and says
    # 1045 as for a wrong password: only the TLS login with the same password tells them apart.
    res, conn = probes.mysql_login(target(mariadb), False, 2.0)
    assert conn is None
    assert (res.outcome, res.data["code"]) == ("auth", 1045), res.detail


def test_wrong_password_is_auth(mariadb):
    res, conn = probes.mysql_login(target(mariadb, "not-the-password"), True, 2.0)
    assert conn is None
    assert (res.outcome, res.data["code"]) == ("auth", 1045)


def test_wrong_ca_is_a_tls_failure(mariadb, other_ca):
    tgt = target(mariadb)
    tgt.ca_file = str(other_ca)
    res, _ = probes.mysql_login(tgt, True, 2.0)
    assert res.outcome == "tls-failed", res.detail


def test_no_account_for_this_host_shows_in_the_greeting(mariadb):
    mariadb.root_sql("RENAME USER 'app'@'127.0.0.1' TO 'app'@'10.0.1.99'")
    try:
        res = probes.mysql_greeting(mariadb.host, mariadb.port, 1.0)
        assert (res.outcome, res.data.get("code")) == ("error", 1130), res.detail
    finally:
        mariadb.root_sql("RENAME USER 'app'@'10.0.1.99' TO 'app'@'127.0.0.1'")


def wait_until(what: str, cond, patience: float = 30.0) -> None:
    """cond() until it is true; fail naming `what` after `patience` seconds."""
    deadline = time.monotonic() + patience
    while not cond():
        assert time.monotonic() < deadline, f"{what}: not within {patience:.0f} s"
        time.sleep(0.05)


def in_ns(netns, host: str, expr: str) -> dict:
    """Run one probe inside a namespace, as the diagnosis would run on that host."""
    code = f"import json; from diagnose import probes; print(json.dumps({expr}.as_dict()))"
    out = subprocess.run(
        ["ip", "netns", "exec", host, sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout)


@pytest.fixture
def listener(netns):
    """Something listening on 10.77.0.2:3306 in the peer namespace."""
    proc = subprocess.Popen(
        ["ip", "netns", "exec", netns.peer, "nc", "-lk", "-s", netns.peer_addr, "-p", "3306"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_until(
        "nc listening on 10.77.0.2:3306",
        lambda: netns.on(netns.peer, "ss", "-ltnH", "sport = :3306").stdout.strip(),
    )
    yield netns
    proc.terminate()
    proc.wait()


# (iptables action in the peer's INPUT, expected outcome, ICMP code seen)
FIREWALL_CASES = [
    (["-j", "REJECT", "--reject-with", "icmp-admin-prohibited"], "prohibited", 13),
    (["-j", "REJECT", "--reject-with", "icmp-host-prohibited"], "prohibited", 10),
    (["-j", "REJECT"], "rejected-icmp", 3),
    (["-j", "REJECT", "--reject-with", "tcp-reset"], "refused", None),
    (["-j", "DROP"], "timeout", None),
]


@pytest.mark.parametrize(("action", "outcome", "icmp_code"), FIREWALL_CASES)
def test_firewall_answers_are_told_apart(listener, action, outcome, icmp_code):
    netns = listener
    assert (
        in_ns(netns, netns.client, "probes.tcp_connect('10.77.0.2', 3306, 1.0)")["outcome"]
        == "connected"
    )
    netns.on(netns.peer, "iptables", "-I", "INPUT", "-p", "tcp", "--dport", "3306", *action)
    res = in_ns(netns, netns.client, "probes.tcp_connect('10.77.0.2', 3306, 1.0)")
    assert res["outcome"] == outcome, res
    if icmp_code is None:
        assert "icmp" not in res["data"]
    else:
        assert res["data"]["icmp"] == {
            "from": "10.77.0.2",
            "type": 3,
            "code": icmp_code,
            "name": probes.ICMP_UNREACH[icmp_code],
        }


def test_ping_answered_then_dropped(netns):
    res = in_ns(netns, netns.client, "probes.ping('10.77.0.2')")
    assert res["outcome"] == "answered" and res["data"]["received"] == 3
    assert res["data"]["rtt_avg_ms"] < 50
    netns.on(netns.peer, "iptables", "-I", "INPUT", "-p", "icmp", "-j", "DROP")
    res = in_ns(netns, netns.client, "probes.ping('10.77.0.2')")
    assert (res["outcome"], res["data"]["loss_pct"]) == ("no-answer", 100.0)


def test_delay_shows_in_the_round_trip(netns):
    netns.on(
        netns.peer,
        "iptables",
        "-t",
        "mangle",
        "-I",
        "OUTPUT",
        "-o",
        "eth0",
        "-j",
        "NFQUEUE",
        "--queue-num",
        "7",
        "--queue-bypass",
    )
    delayer = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            netns.peer,
            sys.executable,
            "-m",
            "diagnose.delayer",
            "--queue",
            "7",
            "--delay-ms",
            "200",
        ],
        cwd=ROOT,
    )
    try:
        # Until it has bound its queue, --queue-bypass lets the packets through undelayed; a
        # Python start-up takes as long as the machine's load makes it.
        wait_until(
            "the delayer bound to queue 7",
            lambda: any(
                line.split()[:1] == ["7"]
                for line in netns.on(
                    netns.peer, "cat", "/proc/net/netfilter/nfnetlink_queue"
                ).stdout.splitlines()
            ),
        )
        res = in_ns(netns, netns.client, "probes.ping('10.77.0.2')")
    finally:
        delayer.terminate()
        delayer.wait()
    assert res["outcome"] == "answered"
    assert 190 < res["data"]["rtt_avg_ms"] < 400


def test_no_route(netns):
    res = in_ns(netns, netns.client, "probes.route_get('10.88.0.1')")
    assert (res["outcome"], res["data"]["error"]) == ("no-route", "Network is unreachable")
    res = in_ns(netns, netns.client, "probes.tcp_connect('10.88.0.1', 3306, 1.0)")
    assert res["outcome"] == "no-route"
    res = in_ns(netns, netns.client, "probes.route_get('10.77.0.2')")
    assert res["outcome"] == "routed" and res["data"]["dev"] == "eth0"
