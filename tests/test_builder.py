"""The lab builder itself: `make up` on a lab that is up changes nothing, and teardown
leaves nothing behind in the machine's own namespace."""

from __future__ import annotations

import re
import shutil
import tempfile
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


def test_a_service_that_cannot_start_is_named_with_its_log_and_the_lab_removed(lab):
    """A checkout whose gateway cannot bind: up.sh names the service, shows its log's last
    lines, and tears the half-built lab down again, keeping the logs."""
    # Not under pytest's tmp_path, whose 0700 parent the mysql user cannot cross.
    top = Path(tempfile.mkdtemp(prefix="edge-lab-test-", dir="/tmp"))
    top.chmod(0o755)
    copy = top / "checkout"
    for part in ("nat", "mysql", "flask_app", "config"):
        shutil.copytree(lab.root / part, copy / part, ignore=shutil.ignore_patterns(".lab"))
    for built in ("target", ".venv"):
        (copy / built).symlink_to(lab.root / built)
    config = copy / "nat/lab/gateway.toml"
    # An address the web host does not have: the bind fails, as a taken port's would.
    config.write_text(config.read_text().replace('"10.0.1.10:80"', '"10.0.1.99:80"'))
    lab.down()
    try:
        out = lab.run(None, str(copy / "nat/lab/up.sh"), timeout=300)
        assert out.returncode != 0
        assert "gateway did not come up" in out.stderr, out.stderr
        assert "10.0.1.99:80" in out.stderr, "the gateway's log lines are not shown"
        assert f"logs are in {copy}/.lab/logs" in out.stderr
        assert lab.present() == [], "the half-built lab was left up"
        assert (copy / ".lab/logs/gateway.log").exists()
    finally:
        shutil.rmtree(top, ignore_errors=True)
        lab.up()
