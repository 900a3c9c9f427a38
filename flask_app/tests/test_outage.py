"""The database stops and starts again under a running app: honest failures, fast recovery,
two log lines. These tests stop the session's server and start it again before they end."""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path

import pytest
import requests

from notes.db import POOL_OVERFLOW, POOL_SIZE

# The contract: while the database is down a request fails within 2 s and /readyz answers
# within its 1 s limit; once the database is back, the app serves within 2 s.
READY_LIMIT_S = 1.0
REQUEST_LIMIT_S = 2.0
RECOVERY_LIMIT_S = 2.0


def timed(call):
    start = time.monotonic()
    result = call()
    return result, time.monotonic() - start


def wait_until_serving(get, limit: float) -> float:
    """Seconds until get() answered 200, or fail after `limit` seconds."""
    start = time.monotonic()
    while time.monotonic() - start < limit:
        if get().status_code == 200:
            return time.monotonic() - start
        time.sleep(0.05)
    pytest.fail(f"the app did not serve again within {limit} s of the database's return")


def test_outage_and_recovery_without_restarting_the_app(app, db, log_lines):
    client = app.test_client()
    assert client.get("/api/notes").status_code == 200, "the pool holds a live connection"

    db.stop()
    try:
        ready, seconds = timed(lambda: client.get("/readyz"))
        print(f"server stopped: /readyz answered 503 after {seconds:.3f} s")
        assert ready.status_code == 503
        assert ready.get_json()["kind"] == "refused"
        assert ready.get_json()["target"] == f"127.0.0.1:{db.port}"
        assert seconds < READY_LIMIT_S

        listed, seconds = timed(lambda: client.get("/api/notes"))
        print(f"server stopped: first request failed after {seconds:.3f} s")
        assert listed.status_code == 503
        assert listed.get_json() == {
            "error": "the database is unavailable",
            "kind": "refused",
            "target": f"127.0.0.1:{db.port}",
        }
        assert seconds < REQUEST_LIMIT_S

        assert client.post("/api/notes", json={"text": "lost?"}).status_code == 503
        page = client.get("/")
        assert page.status_code == 503
        assert "unreachable (refused)" in page.get_data(as_text=True)
        assert "cannot be shown while the database is unreachable" in page.get_data(True)
        assert client.get("/healthz").status_code == 200
        for _ in range(5):
            client.get("/api/notes")
    finally:
        db.start()

    seconds = wait_until_serving(lambda: client.get("/api/notes"), RECOVERY_LIMIT_S)
    print(f"server back: serving again after {seconds:.3f} s")
    assert client.get("/readyz").status_code == 200
    for _ in range(3):
        client.get("/api/notes")

    started = log_lines.messages("Database outage started")
    ended = log_lines.messages("Database outage ended")
    assert len(started) == 1, "an outage is logged once, not per request"
    assert len(ended) == 1
    assert started[0]["kind"] == ended[0]["kind"] == "refused"
    assert started[0]["target"] == ended[0]["target"] == f"127.0.0.1:{db.port}"
    assert started[0]["level"] == "WARNING"
    assert ended[0]["duration_s"] > 0
    assert not log_lines.messages("Unhandled error"), "no traceback for an outage"


def json_lines(log: Path) -> list[dict]:
    lines = log.read_text().splitlines()
    records = [json.loads(line) for line in lines]  # every line is JSON, gunicorn's too
    return records


def test_gunicorn_logs_requests_and_survives_an_outage(gunicorn, db):
    base, log = gunicorn
    session = requests.Session()
    ok = session.get(f"{base}/api/notes", headers={"X-Request-Id": "edge-42"}, timeout=5)
    assert ok.status_code == 200
    assert ok.headers["X-Request-Id"] == "edge-42"

    db.stop()
    try:
        ready, seconds = timed(lambda: session.get(f"{base}/readyz", timeout=5))
        assert (ready.status_code, ready.json()["kind"]) == (503, "refused")
        assert seconds < READY_LIMIT_S
        for _ in range(3):
            failed, seconds = timed(lambda: session.get(f"{base}/api/notes", timeout=5))
            assert failed.status_code == 503
            assert seconds < REQUEST_LIMIT_S
    finally:
        db.start()
    seconds = wait_until_serving(
        lambda: session.get(f"{base}/api/notes", timeout=5), RECOVERY_LIMIT_S
    )
    print(f"gunicorn: serving again {seconds:.3f} s after the server was back")

    records = json_lines(log)
    (request,) = [r for r in records if r.get("request_id") == "edge-42"]
    assert request["logger"] == "notes.access"
    assert (request["method"], request["path"], request["status"]) == ("GET", "/api/notes", 200)
    assert request["remote_addr"] == "127.0.0.1"
    messages = [r["message"] for r in records]
    assert messages.count("Database outage started") == 1
    assert messages.count("Database outage ended") == 1
    assert any(r["logger"] == "gunicorn.error" for r in records), "gunicorn's lines are JSON"


def test_hung_server_fails_requests_within_the_limit(app, db, log_lines):
    # SIGSTOP freezes mariadbd while the kernel still accepts its TCP connections: the slowest
    # failure there is, a pooled connection whose ping waits out the read timeout, then a
    # reconnect whose greeting never comes. Both together stay under the request limit.
    client = app.test_client()
    assert client.get("/api/notes").status_code == 200, "the pool holds a live connection"
    assert db.proc is not None
    db.proc.send_signal(signal.SIGSTOP)
    try:
        listed, seconds = timed(lambda: client.get("/api/notes"))
        print(f"hung server: first request failed after {seconds:.3f} s")
        assert listed.status_code == 503
        assert listed.get_json()["kind"] == "timeout"
        assert seconds < REQUEST_LIMIT_S
        ready, seconds = timed(lambda: client.get("/readyz"))
        print(f"hung server: /readyz answered after {seconds:.3f} s")
        assert (ready.status_code, ready.get_json()["kind"]) == (503, "timeout")
    finally:
        db.proc.send_signal(signal.SIGCONT)
    wait_until_serving(lambda: client.get("/api/notes"), RECOVERY_LIMIT_S)
    assert [r["kind"] for r in log_lines.messages("Database outage started")] == ["timeout"]
    assert len(log_lines.messages("Database outage ended")) == 1


def test_gunicorn_stops_on_a_missing_setting(gunicorn_bad_env):
    done = gunicorn_bad_env
    assert done.returncode == 3, "gunicorn's exit status for a worker that cannot boot"
    output = done.stdout + done.stderr
    assert "APP_SECRET_KEY_FILE is not set" in output
    assert "Worker failed to boot" in output


def test_connection_killed_by_the_server_is_replaced_unseen(app, db, log_lines):
    # The server drops the app's pooled connections (KILL, a restart of a proxy, wait_timeout):
    # the pre-ping notices on checkout and the pool reconnects, so no request fails.
    client = app.test_client()
    assert client.get("/api/notes").status_code == 200
    ids = db.sql("SELECT id FROM information_schema.processlist WHERE user = 'app'").split()
    assert ids, "the pool holds a connection"
    for thread in ids:
        db.sql(f"KILL CONNECTION {int(thread)}")
    assert client.get("/api/notes").status_code == 200
    assert not log_lines.messages("Database outage started")


def test_readyz_checks_do_not_starve_requests_of_connections(app, db):
    # Each /readyz leaves its SELECT 1 running on a pooled connection after it has answered
    # (at most 1 s), until the driver's timeouts end it. While packets are dropped that takes
    # 1.8 s, so a prober's checks pile up beside gunicorn's four threads: requests must still
    # get a connection at once, not wait for one and then wait out the timeouts.
    client = app.test_client()
    assert client.get("/api/notes").status_code == 200
    answers: list[tuple[str, int, float]] = []

    def get(path: str) -> None:
        response, seconds = timed(lambda: app.test_client().get(path))
        answers.append((path, response.status_code, seconds))

    with db.dropping_packets():
        probes = [threading.Thread(target=get, args=("/readyz",)) for _ in range(4)]
        for probe in probes:
            probe.start()
        time.sleep(0.1)
        requests_ = [threading.Thread(target=get, args=("/api/notes",)) for _ in range(4)]
        for request in requests_:
            request.start()
        for thread in probes + requests_:
            thread.join()
    slowest = max(s for path, _, s in answers if path == "/api/notes")
    print(f"packets dropped, four probes and four requests: slowest request {slowest:.3f} s")
    assert {status for _, status, _ in answers} == {503}
    assert slowest < REQUEST_LIMIT_S


def test_no_free_connection_is_503_timeout(app, db, log_lines):
    # Every pooled connection busy (held here): the request gives up waiting for one and says
    # so like any other database failure, not as an internal error with a traceback.
    database = app.extensions["notes.db"]
    held = [database.engine.connect() for _ in range(POOL_SIZE + POOL_OVERFLOW)]
    try:
        response = app.test_client().get("/api/notes")
    finally:
        for conn in held:
            conn.close()
    assert response.status_code == 503
    assert response.get_json()["kind"] == "timeout"
    assert not log_lines.messages("Unhandled error")
