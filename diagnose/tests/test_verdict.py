"""The verdict rules on evidence that disagrees with itself.

The probes and the lab's evidence are gathered side by side, so a mysqld that the
supervisor restarts during a run can be refused by the TCP probe and yet be listening
by the time `ss` looks. These tests feed the rules such snapshots, written as the real
tools print them, and check that a restart seen half-way is named as one.
"""

from __future__ import annotations

from diagnose.lab import LabEvidence, Program, counter_deltas, parse_listeners
from diagnose.result import Result
from diagnose.verdict import Context, decide

CTX = Context(
    db_host="10.0.2.10",
    db_port=3306,
    db_user="app",
    app_addr="10.0.1.10",
    password_file=None,
    readyz_url="http://127.0.0.1:8000/readyz",
    public_url="https://app.example.com/",
    lab=True,
)
SS_MYSQLD = 'LISTEN 0 80 10.0.2.10:3306 0.0.0.0:* users:(("mariadbd",pid=4242,fd=20))\n'
EXIT = {"at": "2026-12-03 13:19:19,158", "why": "terminated by SIGKILL; not expected"}


def _refused() -> dict[str, Result]:
    return {
        "ping": Result("ping", "answered", "10.0.2.10 answers ping", True),
        "tcp": Result("tcp", "refused", "10.0.2.10:3306 answered with a TCP reset", False),
    }


def _lab(uptime: str, exits: list[dict[str, str]], state: str = "RUNNING") -> LabEvidence:
    # supervisorctl describes a STARTING program by its start time, not an uptime.
    desc = f"pid 4242, uptime {uptime}" if state == "RUNNING" else "Dec 03 01:19 PM"
    return LabEvidence(
        db_listeners=parse_listeners(SS_MYSQLD),
        programs={"mysql": Program("mysql", state, desc, 4242)},
        mysql_exits=exits,
    )


def test_refused_then_listening_after_a_crash_is_a_restart():
    verdict = decide(_refused(), _lab("0:00:02", [EXIT]), CTX, {})

    assert (verdict.status, verdict.layer, verdict.cause) == ("down", "mysql", "mysql-restarting")
    assert "SIGKILL" in verdict.summary
    assert "started it again 2 s ago" in verdict.summary


def test_refused_then_listening_before_the_supervisor_calls_it_running_is_a_restart():
    # mysqld listens within a second; the supervisor says STARTING for its startsecs (3 s).
    verdict = decide(_refused(), _lab("", [EXIT], state="STARTING"), CTX, {})

    assert (verdict.status, verdict.layer, verdict.cause) == ("down", "mysql", "mysql-restarting")
    assert "SIGKILL" in verdict.summary
    assert "starting it again (STARTING)" in verdict.summary


def test_a_reject_that_counted_the_probe_is_no_restart_however_young_mysqld_is():
    lab = _lab("0:00:02", [EXIT])
    reject = "filter/FORWARD/3/REJECT/tcp dpt:3306 reject-with tcp-reset"
    lab.counters_moved = counter_deltas({"router": {reject: 0}}, {"router": {reject: 1}})

    verdict = decide(_refused(), lab, CTX, {})

    assert (verdict.layer, verdict.cause) == ("firewall", "firewall-reject"), verdict.summary
    assert "the router host's firewall resets TCP 10.0.2.10:3306" in verdict.summary


def test_a_refusal_seconds_after_a_start_with_no_crash_is_a_restart_only_while_fresh():
    fresh = decide(_refused(), _lab("0:00:02", []), CTX, {})
    settled = decide(_refused(), _lab("0:00:30", []), CTX, {})

    assert fresh.cause == "mysql-restarting", fresh.summary
    assert (settled.layer, settled.cause) == ("tcp", "refused"), settled.summary


def test_refused_while_a_long_running_mysqld_listens_is_left_to_tcp():
    verdict = decide(_refused(), _lab("3:12:45", []), CTX, {})

    assert (verdict.layer, verdict.cause) == ("tcp", "refused")
    assert "a firewall rule with tcp-reset" in verdict.cannot_tell


def _slow_ping(rtt_ms: float, loss_pct: float = 0.0) -> Result:
    data = {"sent": 3, "received": 3, "loss_pct": loss_pct, "rtt_avg_ms": rtt_ms}
    return Result("ping", "answered", f"rtt avg {rtt_ms} ms", True, 0.9, data)


def test_a_greeting_lost_on_a_slow_lossy_link_is_slowness_not_a_hung_server():
    # 300 ms each way and 5 % loss: one lost segment and its retransmission outlast 1.5 s.
    results = {
        "ping": _slow_ping(301.0, 33.3),
        "tcp": Result("tcp", "connected", "connected in 301 ms", True, 0.301),
        "greeting": Result("greeting", "no-greeting", "no greeting within 1.5s", False, 1.8),
    }
    verdict = decide(results, LabEvidence(), CTX, {})

    assert (verdict.status, verdict.cause) == ("slow", "db-slow")
    assert "no greeting within 1.8s" in verdict.summary and "slow, not down" in verdict.summary
    # The link explains a lost greeting; it does not rule out the server.
    assert "a hung mysqld" in verdict.cannot_tell


def test_a_connect_timeout_on_a_slow_link_is_slowness_on_a_fast_one_a_firewall():
    timeout = Result("tcp", "timeout", "no answer within 1.5s", False, 1.5)
    slow = decide({"ping": _slow_ping(302.0), "tcp": timeout}, LabEvidence(), CTX, {})
    fast = decide({"ping": _slow_ping(0.1), "tcp": timeout}, LabEvidence(), CTX, {})

    assert (slow.status, slow.cause) == ("slow", "db-slow")
    assert "TCP connect timed out after 1.5s" in slow.summary
    assert "a firewall that drops port 3306" in slow.cannot_tell
    assert (fast.status, fast.layer, fast.cause) == ("down", "firewall", "firewall-drop")


def test_a_greeting_that_never_comes_on_a_fast_link_is_the_server():
    results = {
        "ping": _slow_ping(0.1),
        "tcp": Result("tcp", "connected", "connected in 0.2 ms", True, 0.0002),
        "greeting": Result("greeting", "no-greeting", "no greeting within 1.5s", False, 1.5),
    }
    assert decide(results, LabEvidence(), CTX, {}).cause == "no-greeting"


def test_counters_move_only_where_both_snapshots_were_taken():
    # The listing of db before the connect timed out: its counters are unknown, not zero.
    before = {"router": {"filter/FORWARD/0/DROP/": 10}}
    after = {
        "db": {"filter/INPUT/0/DROP/": 500, "filter/INPUT/1/REJECT/tcp dpt:3306": 3},
        "router": {"filter/FORWARD/0/DROP/": 12},
    }
    moved = counter_deltas(before, after)

    assert [(m["host"], m["chain"], m["delta"]) for m in moved] == [("router", "FORWARD", 2)]
