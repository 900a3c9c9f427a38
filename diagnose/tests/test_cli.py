"""The command end to end against a real MariaDB on loopback: verdict, evidence, fix."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def diagnose(*args: str) -> subprocess.CompletedProcess:
    # Every target is given, and all are on loopback: nothing is taken from a running app.
    base = [
        "--app-addr",
        "127.0.0.1",
        "--readyz-url",
        "",
        "--gateway-url",
        "",
        "--public-url",
        "",
        "--db-user",
        "app",
        "--db-name",
        "notes",
    ]
    return subprocess.run(
        [sys.executable, "-m", "diagnose", *base, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def db_args(db) -> list[str]:
    return [
        "--db-host",
        db.host,
        "--db-port",
        str(db.port),
        "--password-file",
        db.password_file,
        "--ca-file",
        db.ca_file,
    ]


def test_healthy_database(mariadb):
    out = diagnose(*db_args(mariadb), "--json")
    report = json.loads(out.stdout)
    assert report["verdict"]["status"] == "healthy", report["verdict"]
    checks = {c["check"]: c for c in report["checks"]}
    assert checks["login-tls"]["ok"] and checks["select"]["ok"]
    # Without TLS the server refuses the same login, as it must: that is the good outcome.
    assert checks["login-plain"]["ok"] and checks["login-plain"]["outcome"] == "auth"
    assert out.returncode == 0


def test_nothing_listening_is_refused_and_says_what_it_cannot_tell(closed_port, mariadb):
    out = diagnose(
        "--db-host",
        "127.0.0.1",
        "--db-port",
        str(closed_port),
        "--password-file",
        mariadb.password_file,
    )
    assert out.returncode == 1
    lines = out.stdout.splitlines()
    assert lines[0].startswith("DOWN [mysql]"), out.stdout
    assert "refuses connections (TCP reset)" in lines[0]
    # Without the db host's sockets and counters, it does not guess between these.
    assert "cannot tell apart: MySQL stopped / MySQL bound to another address" in out.stdout
    assert "fix:" in out.stdout


def test_wrong_password(mariadb, tmp_path):
    wrong = tmp_path / "pw"
    wrong.write_text("not-the-password\n")
    args = db_args(mariadb)
    args[args.index("--password-file") + 1] = str(wrong)
    report = json.loads(diagnose(*args, "--json").stdout)
    v = report["verdict"]
    assert (v["layer"], v["cause"]) == ("mysql-auth", "wrong-password"), v
    assert str(wrong) in v["summary"]


def test_unknown_account_host(mariadb):
    mariadb.root_sql("RENAME USER 'app'@'127.0.0.1' TO 'app'@'10.0.1.99'")
    try:
        report = json.loads(diagnose(*db_args(mariadb), "--json").stdout)
    finally:
        mariadb.root_sql("RENAME USER 'app'@'10.0.1.99' TO 'app'@'127.0.0.1'")
    assert report["verdict"]["cause"] == "host-not-allowed", report["verdict"]


def test_a_server_that_accepts_the_app_without_tls_is_a_finding(mariadb):
    mariadb.root_sql("SET GLOBAL require_secure_transport = OFF")
    mariadb.root_sql("ALTER USER 'app'@'127.0.0.1' REQUIRE NONE")
    try:
        report = json.loads(diagnose(*db_args(mariadb), "--json").stdout)
    finally:
        mariadb.root_sql("ALTER USER 'app'@'127.0.0.1' REQUIRE SSL")
        mariadb.root_sql("SET GLOBAL require_secure_transport = ON")
    v = report["verdict"]
    assert (v["status"], v["cause"]) == ("degraded", "tls-not-required"), v
