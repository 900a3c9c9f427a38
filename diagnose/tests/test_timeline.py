"""The gateway's access lines, read back in both of its log formats, from the real binary."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import pytest
import requests

from diagnose.timeline import gateway_records

ROOT = Path(__file__).resolve().parents[2]
GATEWAY = ROOT / "target" / "release" / "edge-gateway"


def _ports(count: int) -> list[int]:
    """Distinct free loopback ports: all held open until all are chosen, since a port closed
    at once can be handed out again by the next bind to port 0."""
    socks = [socket.socket() for _ in range(count)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _access_lines(log: Path) -> int:
    lines = log.read_text(errors="replace").splitlines()
    return sum("probe=drill-" in line and "http.status" in line for line in lines)


@pytest.mark.parametrize("fmt", ["json", "human"])
def test_access_lines_of_the_real_gateway(tmp_path, fmt):
    if not GATEWAY.exists():
        pytest.skip("no gateway binary (cargo build --release)")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(tmp_path / "key.pem"), "-out", str(tmp_path / "cert.pem"),
         "-subj", "/CN=localhost", "-days", "1", "-addext", "subjectAltName=DNS:localhost"],
        check=True, capture_output=True,
    )  # fmt: skip
    http, https, metrics, upstream = _ports(4)
    config = tmp_path / "gateway.toml"
    config.write_text(
        f'[listen]\nhttp = "127.0.0.1:{http}"\nhttps = "127.0.0.1:{https}"\n'
        f'metrics = "127.0.0.1:{metrics}"\n'
        f'[tls]\ncert = "{tmp_path / "cert.pem"}"\nkey = "{tmp_path / "key.pem"}"\n'
        # Nothing listens upstream: each proxied request is a 502 the gateway logs.
        f'[upstream]\nurl = "http://127.0.0.1:{upstream}"\n'
        f'[access]\nallow = ["127.0.0.0/8"]\ndeny = []\ntrusted_proxies = []\n'
        f'[log]\nformat = "{fmt}"\n'
    )
    log = tmp_path / "gateway.log"
    started = time.time()
    with log.open("w") as out:
        proc = subprocess.Popen(
            [str(GATEWAY), "run", "--config", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={"NO_COLOR": "1"},
        )
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", https), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        for n in range(3):
            resp = requests.get(
                f"https://localhost:{https}/x?probe=drill-{n}",
                timeout=5,
                verify=str(tmp_path / "cert.pem"),
            )
            assert resp.status_code == 502
        # The gateway writes a request's access line as the response ends, which can be
        # after the client has read it: wait for the three lines (raw text: the status is a
        # field of the access line alone) before stopping it.
        deadline = time.monotonic() + 30
        while _access_lines(log) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    records = gateway_records(log, started - 1, time.time() + 1, "127.0.0.1", "probe=drill-")
    assert [r.status for r in records] == [502, 502, 502], log.read_text()[-2000:]
    assert all(r.decision == "allow" for r in records)
    assert all(r.error for r in records)  # the gateway's own error kind for the upstream
    assert gateway_records(log, started - 1, time.time() + 1, "203.0.113.10") == []
