"""The lab builder itself: `make up` on a lab that is up changes nothing, and teardown
leaves nothing behind in the machine's own namespace."""

from __future__ import annotations

import re
from pathlib import Path

from conftest import HOSTS


def _state(lab) -> dict[str, str]:
    """Everything `make up` could change: links, addresses, routes, rules, services."""
    snap = {}
    for host in HOSTS:
        snap[f"{host} addr"] = lab.run(host, "ip", "-o", "addr", "show").stdout
        snap[f"{host} route"] = lab.run(host, "ip", "route", "show", "table", "all").stdout
        rules = lab.run(host, "iptables-save").stdout
        snap[f"{host} iptables"] = "\n".join(
            re.sub(r"\[\d+:\d+\]", "", line) for line in rules.splitlines()
            if not line.startswith("#")
        )  # fmt: skip
        snap[f"{host} hosts"] = Path(f"/etc/netns/{host}/hosts").read_text()
    # A restarted program would show a new pid.
    snap["services"] = "\n".join(
        line.split("uptime")[0] for line in lab.ctl("status").stdout.splitlines()
    )
    snap["namespaces"] = " ".join(lab.present())
    return snap


def test_make_up_twice_changes_nothing(lab):
    before = _state(lab)
    out = lab.run(None, "make", "up", timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "already up" in out.stdout
    after = _state(lab)
    changed = [key for key in before if before[key] != after[key]]
    assert not changed, f"make up changed: {changed}"


def test_teardown_leaves_nothing_behind_and_the_lab_comes_back(lab):
    lab.down()
    try:
        assert lab.present() == [], "namespaces left"
        assert not [h for h in HOSTS if Path("/etc/netns", h).exists()], "/etc/netns left"
        assert not Path("/run/edge-lab").exists()
        assert lab.lab_processes() == [], "processes left"
        after = lab.root_snapshot()
        for key, value in lab.before.items():
            assert after[key] == value, f"the machine's own {key} changed"
        # Down again on a lab that is down: nothing to do, and it says so.
        assert "no lab" in lab.down().stdout
    finally:
        lab.up()
    assert lab.curl("office", "https://app.example.com/").status == 200


def test_a_lab_left_by_a_crashed_run_is_cleaned_up(lab):
    """Namespaces with no supervisor behind them: `up` removes them and builds anew."""
    lab.ctl("shutdown", check=True)
    pid_file = Path("/run/edge-lab/supervisord.pid")
    lab.sh(None, f"while [ -e {pid_file} ]; do sleep 0.2; done", timeout=60)
    assert len(lab.present()) == len(HOSTS)
    # A process left inside a namespace, as a crashed supervisor would leave its children.
    stray = lab.sh("web", "sleep 300 >/dev/null 2>&1 & echo $!").stdout.strip()
    out = lab.run(None, str(lab.root / "nat/lab/up.sh"), timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "left from an earlier run" in out.stderr
    assert not Path(f"/proc/{stray}").exists(), "the stray process still runs"
    assert lab.curl("office", "https://app.example.com/").status == 200
