"""The drill matrix in the lab: each fault injected for real, diagnosed, healed, and the
lab whole again afterwards (every row of the topology contract).

Each drill keeps a client on office, so its timeline and post-mortem come from the
gateway's and the app's real logs; they are kept under .lab/drill/runs/ for a look after
a failure. The timings are printed, not asserted.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# The diagnosis and the drills are a package at the root of the repository.
sys.path.insert(0, str(ROOT))

from diagnose import health
from diagnose.drills import run_drill
from diagnose.faults import DROP_RULE, FAULTS, Fault, _delete, _insert
from diagnose.labctl import LabError, program_pid

# Faults that stop requests before they reach the gateway.
PATH_FAULTS = {"route-missing", "forwarding-off", "dnat-missing"}


def _explain(res) -> str:
    v = res.verdict
    return (
        f"{res.name}: verdict {v.get('status')} [{v.get('layer')}] {v.get('cause')}: "
        f"{v.get('summary')}; errors {res.errors}; lab after: {res.healthy_after}; "
        f"see {res.folder}"
    )


@pytest.mark.parametrize("name", [n for n in FAULTS if n not in ("mysql-crashed", "db-latency")])
def test_drill_names_the_cause_and_heals(lab, name):
    fault = FAULTS[name]
    res = run_drill(fault)
    print(f"\n{name}: diagnosis {res.diagnosis_seconds:.2f} s, impact {res.impact}")
    assert res.verdict.get("cause") in fault.causes, _explain(res)
    assert res.verdict.get("status") == fault.status, _explain(res)
    assert not res.errors, _explain(res)
    assert res.healthy_after == [], _explain(res)
    # The impact is counted: by the client always, by the gateway's access log when the
    # requests reach it (a broken path stops them before).
    assert res.impact["client_failed"] > 0, res.impact
    if name in PATH_FAULTS:
        assert res.impact["never_reached_gateway"] > 0, res.impact
    else:
        assert res.impact["gateway_failed"] > 0, res.impact
    draft = (res.folder / "postmortem.md").read_text()
    assert draft.startswith("# Post-mortem") and "## Action items" in draft


def test_db_latency_is_slow_not_down(lab):
    res = run_drill(FAULTS["db-latency"])
    v = res.verdict
    assert (v["status"], v["cause"]) == ("slow", "db-slow"), _explain(res)
    assert "slow, not down" in v["summary"]
    assert res.healthy_after == []


def test_mysql_crashed_recovers_with_no_one_touching_it(lab):
    before = program_pid("mysql")
    res = run_drill(FAULTS["mysql-crashed"])
    after = program_pid("mysql")
    assert before and after and before != after, "mysqld was not restarted"
    # The drill did not heal this one: the supervisor did, and the app reconnected alone.
    assert "healed" not in res.timeline.marks
    assert "recovered" in res.timeline.marks, _explain(res)
    assert res.verdict.get("cause") in FAULTS["mysql-crashed"].causes, _explain(res)
    assert not res.errors and res.healthy_after == [], _explain(res)


# Run on web: the app's /readyz, and the diagnosis's second look at a /readyz answer (given as
# JSON) that failed while the database checks from this host passed.
_READYZ = """
import json, sys
from diagnose import check, httpchecks
from diagnose.result import Result
url = "http://127.0.0.1:8000/readyz"
if len(sys.argv) == 1:
    print(json.dumps(httpchecks.readyz(url, 3.0).as_dict()))
    sys.exit()
first = json.loads(sys.argv[1])
first["check"], first["seconds"] = "readyz", 0.0
results = {"select": Result("select", "answered", "SELECT 1", True), "readyz": Result(**first)}
settings = check.Settings(db=None, password_file=None, app_env={}, readyz_url=url, public_url="")
notes = check.recheck_upper_layers(settings, results)
print(json.dumps({"readyz": results["readyz"].as_dict(), "notes": notes}))
"""


def test_a_readyz_answer_older_than_the_database_checks_is_asked_again(lab):
    """The diagnosis's checks run side by side: /readyz refused while mysqld was down, and the
    database checks passed once it was back, is a question to ask again, not an app fault."""

    def on_web(*args: str) -> dict:
        out = lab.run("web", sys.executable, "-c", _READYZ, *args, check=True)
        return json.loads(out.stdout)

    lab.ctl("stop", "mysql", check=True)
    try:
        down = on_web()
        # refused, or lost-connection for a pooled connection the shutdown cut: not a login's.
        assert down["outcome"] == "not-ready", down
        assert down["data"]["kind"] in ("refused", "lost-connection"), down
        # Still down: asked again, it fails again.
        still = on_web(json.dumps(down))
        assert still["readyz"]["outcome"] == "not-ready", still
        assert "asked again" in still["notes"][0]
    finally:
        FAULTS["mysql-stopped"].heal()
    again = on_web(json.dumps(down))
    assert again["readyz"]["outcome"] == "ready", again
    assert f"kind={down['data']['kind']}" in again["notes"][0]


def test_a_failing_drill_leaves_the_lab_as_it_found_it(lab):
    def inject_then_fail() -> None:
        _insert("db", DROP_RULE)
        raise LabError("the drill broke halfway")

    broken = Fault(
        "broken",
        "a drill that fails after injecting",
        ("firewall-drop",),
        inject_then_fail,
        lambda: _delete("db", DROP_RULE),
    )
    res = run_drill(broken)
    assert "the drill broke halfway" in res.errors
    assert not res.passed
    assert health.problems() == []


def test_make_fault_diagnose_heal(lab):
    """The commands a person types: inject, read the verdict as text and JSON, heal."""
    drills = [sys.executable, "-m", "diagnose.drills"]
    run = lambda *a: subprocess.run(
        a,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    out = run(*drills, "fault", "db-firewall-reject")
    assert out.returncode == 0, out.stderr
    try:
        text = run(sys.executable, "-m", "diagnose", "--lab")
        assert text.returncode == 1
        first = text.stdout.splitlines()[0]
        assert first.startswith("DOWN [firewall]") and "10.0.2.10" in first, text.stdout
        assert "fix:" in text.stdout and "iptables -D INPUT 1" in text.stdout
        report = json.loads(run(sys.executable, "-m", "diagnose", "--lab", "--json").stdout)
        assert report["verdict"]["cause"] == "firewall-reject"
        tcp = next(c for c in report["checks"] if c["check"] == "tcp")
        if tcp["outcome"] == "prohibited":
            assert tcp["data"]["icmp"]["code"] == 13
        else:
            # The kernel rate-limits the rejecting host's ICMP while the app retries: the
            # SYN then goes unanswered, and the REJECT rule's counter names the cause.
            assert tcp["outcome"] == "timeout", tcp
            moved = report["lab"]["counters_moved"][0]
            assert (moved["host"], moved["target"]) == ("db", "REJECT"), moved
    finally:
        healed = run(*drills, "heal")
    assert healed.returncode == 0, healed.stdout + healed.stderr
    assert health.problems() == []
