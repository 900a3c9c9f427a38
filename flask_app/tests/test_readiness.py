"""/healthz and /readyz, and the kind of failure /readyz names, each from a real cause."""

from __future__ import annotations

import contextlib
import errno
import socket
import ssl
import threading
from collections.abc import Iterator

import pymysql
import pytest

from notes.failures import classify

READY_LIMIT_MS = 1000


def readyz(app) -> tuple[int, dict]:
    response = app.test_client().get("/readyz")
    return response.status_code, response.get_json()


def test_healthz_does_not_need_the_database(make_app, port):
    app = make_app(APP_DB_PORT=str(port))
    response = app.test_client().get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}


def test_ready(app, db):
    status, body = readyz(app)
    assert status == 200
    assert body["status"] == "ready"
    assert body["target"] == f"127.0.0.1:{db.port}"
    assert body["elapsed_ms"] < READY_LIMIT_MS


def test_wrong_password_is_auth(make_app, work_dir):
    wrong = work_dir / "wrong-password"
    wrong.write_text("not-the-password\n")
    status, body = readyz(make_app(APP_DB_PASSWORD_FILE=str(wrong)))
    assert status == 503
    assert body["status"] == "unavailable"
    assert body["kind"] == "auth"
    assert "Access denied" in body["error"]


def test_server_certificate_from_another_ca_is_tls(make_app, other_tls):
    status, body = readyz(make_app(APP_DB_CA_FILE=str(other_tls.ca)))
    assert (status, body["kind"]) == (503, "tls")
    assert "CERTIFICATE_VERIFY_FAILED" in body["error"]


def test_app_without_tls_is_refused_by_the_server(make_app):
    # The mysql-no-tls drill: the server refuses the login (MariaDB says 1045), and the app,
    # knowing it did not offer TLS, names the cause.
    status, body = readyz(make_app(APP_DB_TLS="off"))
    assert (status, body["kind"]) == (503, "tls")


def test_nothing_listening_is_refused(make_app, port):
    status, body = readyz(make_app(APP_DB_PORT=str(port)))
    assert status == 503
    assert body == {
        "status": "unavailable",
        "kind": "refused",
        "target": f"127.0.0.1:{port}",
        "error": body["error"],
        "elapsed_ms": body["elapsed_ms"],
    }
    assert body["elapsed_ms"] < READY_LIMIT_MS


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A port whose kernel completes the TCP handshake but where nothing ever answers, like a
    mariadbd that hangs (SIGSTOP, a full disk)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        yield s.getsockname()[1]


def test_server_that_never_answers_is_timeout(make_app, silent_server):
    status, body = readyz(make_app(APP_DB_PORT=str(silent_server)))
    assert (status, body["kind"]) == (503, "timeout")
    # Given up after the read timeout of the probe, not after the driver's default of none.
    assert body["elapsed_ms"] < 2 * READY_LIMIT_MS


def test_host_without_an_account_is_host_not_allowed(db):
    # The server sees 127.0.0.2, for which no account exists at all.
    with pytest.raises(pymysql.err.OperationalError) as raised:
        pymysql.connect(
            host="127.0.0.1",
            port=db.port,
            user="app",
            password=db.web_password_file.read_text().strip(),
            bind_address="127.0.0.2",
            ssl_ca=str(db.tls.ca),
            connect_timeout=2,
        )
    assert classify(raised.value).kind == "host-not-allowed"


def _connect_error(cause: OSError) -> pymysql.err.OperationalError:
    """The error PyMySQL raises when the socket connect fails with `cause`."""
    exc = pymysql.err.OperationalError(2003, f"Can't connect to MySQL server on 'h' ({cause})")
    exc.original_exception = cause
    return exc


def _refused_after_a_timed_out_ping() -> BaseException:
    """What a pre-ping that timed out, then a refused reconnect, leave: the second error
    raised while the first was being handled."""
    try:
        try:
            raise TimeoutError("timed out")
        except TimeoutError as e:
            raise pymysql.err.OperationalError(2013, "Lost connection (timed out)") from e
    except pymysql.err.OperationalError:
        try:
            raise _connect_error(ConnectionRefusedError(errno.ECONNREFUSED, "refused"))
        except pymysql.err.OperationalError as e:
            return e
    raise AssertionError("unreachable")


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (_refused_after_a_timed_out_ping(), "refused"),
        (_connect_error(ConnectionRefusedError(errno.ECONNREFUSED, "refused")), "refused"),
        (_connect_error(OSError(errno.ETIMEDOUT, "timed out")), "timeout"),
        (_connect_error(TimeoutError("timed out")), "timeout"),
        (_connect_error(OSError(errno.EHOSTUNREACH, "no route to host")), "unreachable"),
        (_connect_error(OSError(errno.ENETUNREACH, "network is unreachable")), "unreachable"),
        (_connect_error(socket.gaierror(socket.EAI_NONAME, "Name not known")), "dns"),
        (pymysql.err.OperationalError(1045, "Access denied"), "auth"),
        (pymysql.err.OperationalError(1130, "Host is not allowed"), "host-not-allowed"),
        (pymysql.err.OperationalError(3159, "insecure transport prohibited"), "tls"),
        (pymysql.err.OperationalError(2013, "Lost connection"), "lost-connection"),
        (pymysql.err.OperationalError(2006, "MySQL server has gone away"), "lost-connection"),
        (pymysql.err.OperationalError(1040, "Too many connections"), "unknown"),
    ],
)
def test_kinds_from_error_codes_and_errno(exc, kind):
    # These codes need a network or server state that loopback cannot give (a dropped SYN, a
    # missing route, DNS); the exceptions are built as PyMySQL builds them.
    assert classify(exc).kind == kind


def test_password_changed_under_a_live_pool_is_auth_at_once(app, db, log_lines):
    # Pooled connections outlive a password change and keep serving; only new logins fail.
    # /readyz says so at once, before recycling turns it into an outage for every request.
    client = app.test_client()
    assert client.get("/api/notes").status_code == 200, "the pool holds a connection"
    password = db.web_password_file.read_text().strip()
    db.sql("ALTER USER 'app'@'127.0.0.1' IDENTIFIED BY 'changed-behind-the-apps-back'")
    try:
        status, body = readyz(app)
        assert (status, body["kind"]) == (503, "auth")
        assert client.get("/api/notes").status_code == 200, "the pooled connection still works"
        assert readyz(app)[0] == 503
    finally:
        db.sql(f"ALTER USER 'app'@'127.0.0.1' IDENTIFIED BY '{password}'")
    assert readyz(app)[0] == 200
    started = log_lines.messages("Database outage started")
    ended = log_lines.messages("Database outage ended")
    assert [r["kind"] for r in started] == ["auth"], "successes on old connections end nothing"
    assert [r["kind"] for r in ended] == ["auth"]


@pytest.fixture
def relay(db) -> Iterator[int]:
    """A TCP relay from 127.0.0.2 to the server: the same server, at an address its
    certificate does not name. Yields the relay's port."""
    listener = socket.create_server(("127.0.0.2", 0))

    def pump(src: socket.socket, dst: socket.socket) -> None:
        # Either side ending ends both directions (the other pump then fails on a closed
        # socket, which is how it stops).
        with contextlib.suppress(OSError), src, dst:
            while data := src.recv(65536):
                dst.sendall(data)

    def serve() -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # the listener was closed
            server = socket.create_connection(("127.0.0.1", db.port))
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=pump, args=(a, b), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    with listener:
        yield listener.getsockname()[1]


def test_server_certificate_for_another_address_is_tls(make_app, db, relay):
    # The certificate is the lab CA's, but for 127.0.0.1: the app checks the address too.
    status, body = readyz(make_app(APP_DB_HOST="127.0.0.2", APP_DB_PORT=str(relay)))
    assert (status, body["kind"]) == (503, "tls")
    assert "IP address mismatch" in body["error"]
    # The relay itself works: without the address check, the same login succeeds.
    unchecked = ssl.create_default_context(cafile=str(db.tls.ca))
    unchecked.check_hostname = False
    password = db.web_password_file.read_text().strip()
    pymysql.connect(host="127.0.0.2", port=relay, user="app", password=password,
                    ssl=unchecked, connect_timeout=2).close()  # fmt: skip
