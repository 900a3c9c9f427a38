"""The gateway's certificate comes from Pebble on the acme host, through the router's NAT.

Pebble (nat/lab/pebble.sh) validates HTTP-01 on 198.51.100.10:80, which the router forwards to
the gateway's HTTP listener; the gateway's [acme] section (nat/lab/gateway.toml) orders the
certificate for app.example.com at start. Here office checks what it is served against
Pebble's root alone.
"""

from __future__ import annotations

import json
import re
import time


def pebble_root(lab) -> str:
    """Pebble's current root, as its management interface gives it (fresh at every start)."""
    out = lab.run("acme", "curl", "-fsSk", "-m", "5", "https://203.0.113.50:15000/roots/0")
    assert "BEGIN CERTIFICATE" in out.stdout
    return out.stdout


def s_client(lab, servername: str, *args: str):
    """openssl s_client from office to the gateway, asking for `servername` (SNI)."""
    return lab.run(
        "office",
        "openssl",
        "s_client",
        "-connect",
        "app.example.com:443",
        "-servername",
        servername,
        *args,
        input="",
        timeout=20,
    )


def test_office_gets_a_chain_that_verifies_against_pebbles_root(lab, tmp_path):
    root = tmp_path / "pebble-root.pem"
    root.write_text(pebble_root(lab))
    # openssl verifies the chain against that root alone, and the name.
    out = s_client(
        lab,
        "app.example.com",
        "-verify_hostname",
        "app.example.com",
        "-CAfile",
        str(root),
        "-verify_return_error",
        "-showcerts",
    )
    text = out.stdout
    assert "Verify return code: 0 (ok)" in text, text + out.stderr
    assert re.search(r"issuer=.*Pebble Intermediate", text), text
    # The same with curl, which also checks the name: the page is served over it.
    out = lab.run(
        "office",
        "curl",
        "-sS",
        "-m",
        "10",
        "--cacert",
        str(root),
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "https://app.example.com/",
    )
    assert out.stdout == "200", out.stderr


def _last_run_of_the_gateway(lab) -> list[str]:
    """The gateway's log messages since it last started.

    Each start says first what it made of the stored certificate (none, not usable, used);
    the log keeps the runs of earlier labs too.
    """
    messages = []
    for line in lab.log("gateway").read_text().splitlines():
        try:
            messages.append(json.loads(line).get("message", ""))
        except ValueError:
            continue  # not a JSON line, or the last one not yet written whole
    starts = [
        i
        for i, m in enumerate(messages)
        if m.startswith(("No stored certificate", "Stored certificate ", "Using the stored"))
    ]
    return messages[starts[-1] :] if starts else []


def test_the_gateway_logged_each_step_of_the_order(lab):
    # The log is copied from the gateway's output by the supervisor: wait for the last step.
    deadline = time.monotonic() + 30
    last_run = _last_run_of_the_gateway(lab)
    while not any(m.startswith("Certificate installed") for m in last_run):
        assert time.monotonic() < deadline, f"no certificate installed: {last_run[-30:]}"
        time.sleep(0.2)
        last_run = _last_run_of_the_gateway(lab)

    # A lab that kept the certificate an earlier lab got reuses it; a new lab orders one.
    if last_run[0].startswith("Using the stored certificate"):
        assert not any(m.startswith("Order created") for m in last_run), last_run[-30:]
        return
    for step in (
        "Order created for app.example.com",
        "Challenge ready: http-01 for app.example.com",
        "Validated app.example.com",
        "Certificate issued, serial",
        "Renewal due at",
    ):
        assert any(m.startswith(step) for m in last_run), (step, last_run[-30:])


def test_unknown_names_get_an_alert(lab):
    out = s_client(lab, "other.example.com")
    assert "alert access denied" in (out.stdout + out.stderr), out.stdout + out.stderr
