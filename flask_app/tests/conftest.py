"""Fixtures: a real MariaDB provisioned by mysql/provision.sh and run by mysql/serve.sh on
127.0.0.1 with TLS required, and the notes app built against it.

One server serves the whole session; the tests that stop it start it again before they end.
Nothing is installed here: the server packages come from `make test`.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests
import trustme
from flask import Flask
from flask.testing import FlaskClient

from notes import create_app, logs
from notes.config import Settings

REPO = Path(__file__).resolve().parents[2]
PROVISION = REPO / "mysql" / "provision.sh"
SERVE = REPO / "mysql" / "serve.sh"
RUN_AS = "mysql"
# Generous: the first start of a fresh InnoDB on a busy two-core machine takes a few seconds.
START_LIMIT_S = 60.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class TLSFiles:
    ca: Path
    cert: Path
    key: Path


@dataclass
class MariaDB:
    """A mariadbd run by mysql/serve.sh; start() and stop() may be called again and again."""

    root: Path
    port: int
    tls: TLSFiles
    proc: subprocess.Popen | None = None
    starts: int = 0
    log_file: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log_file = self.root / "mariadbd.log"

    @property
    def datadir(self) -> Path:
        return self.root / "data"

    @property
    def socket(self) -> Path:
        return self.root / "mysqld.sock"

    @property
    def db_password_file(self) -> Path:
        return self.root / "db" / "app-password"

    @property
    def web_password_file(self) -> Path:
        return self.root / "web" / "app-password"

    def server_args(self) -> list[str]:
        """The options provision.sh and serve.sh share: where and how the server runs."""
        return [
            "--datadir", str(self.datadir),
            "--socket", str(self.socket),
            "--bind-address", "127.0.0.1",
            "--port", str(self.port),
            "--tls-ca", str(self.tls.ca),
            "--tls-cert", str(self.tls.cert),
            "--tls-key", str(self.tls.key),
            "--user", RUN_AS,
        ]  # fmt: skip

    def provision_args(self) -> list[str]:
        return [
            str(PROVISION),
            *self.server_args(),
            # The one adaptation of grants.sql: the app connects from loopback here.
            "--app-host", "127.0.0.1",
            "--db-password-file", str(self.db_password_file),
            "--web-password-file", str(self.web_password_file),
        ]  # fmt: skip

    def start(self) -> None:
        assert self.proc is None, "already running"
        args = [str(SERVE), *self.server_args()]
        with self.log_file.open("a") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_LIMIT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"mariadbd exited with {self.proc.returncode}:\n{self.log_tail()}")
            if self._answers():
                self.starts += 1
                return
            time.sleep(0.05)
        pytest.fail(f"mariadbd did not answer within {START_LIMIT_S} s:\n{self.log_tail()}")

    def _answers(self) -> bool:
        ping = subprocess.run(
            ["mariadb-admin", "--no-defaults", f"--socket={self.socket}", "--user=root", "ping"],
            check=False,
            capture_output=True,
        )
        if ping.returncode != 0:
            return False
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", self.port)) == 0

    def stop(self) -> None:
        """A clean shutdown (SIGTERM, what supervisord sends), waited for."""
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    @contextmanager
    def dropping_packets(self) -> Iterator[None]:
        """The server as behind a link that drops its packets (a partition, a firewall DROP),
        the slowest failure there is: established connections get no answer, so reads wait
        out their timeout, and new ones get no SYN-ACK, so connects wait out theirs. Loopback
        cannot drop packets, so: the server is frozen (SIGSTOP) and its TCP accept queue filled
        with connections nobody accepts, after which the kernel drops new SYNs."""
        assert self.proc is not None, "not running"
        self.proc.send_signal(signal.SIGSTOP)
        fillers: list[socket.socket] = []
        try:
            while True:
                filler = socket.socket()
                filler.setblocking(False)
                filler.connect_ex(("127.0.0.1", self.port))
                fillers.append(filler)
                if len(fillers) % 16 == 0 and not self._accepts_syn():
                    break
                assert len(fillers) < 4096, "the accept queue never filled"
            yield
        finally:
            for filler in fillers:
                filler.close()
            self.proc.send_signal(signal.SIGCONT)
            # The server works through the dead connections queued meanwhile; until then new
            # ones may still be dropped, and the next test must find it taking connections.
            deadline = time.monotonic() + START_LIMIT_S
            while not self._accepts_syn():
                assert time.monotonic() < deadline, "the server did not take connections again"

    def _accepts_syn(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
        except TimeoutError:
            return False
        return True

    def ensure_running(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            self.proc = None
            self.start()

    def sql(self, statement: str) -> str:
        """Run SQL as root over the unix socket; the output in batch form (tab-separated)."""
        args = [
            "mariadb", "--no-defaults", f"--socket={self.socket}", "--user=root",
            "--batch", "--skip-column-names", "-e", statement,
        ]  # fmt: skip
        done = subprocess.run(args, check=False, capture_output=True, text=True)
        assert done.returncode == 0, f"{statement}: {done.stderr}"
        return done.stdout

    def log_tail(self, lines: int = 30) -> str:
        if not self.log_file.exists():
            return "(no log)"
        return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])


def _require_server_packages() -> None:
    missing = [p for p in ("mariadbd", "mariadb-install-db", "mariadb") if not shutil.which(p)]
    if missing:
        pytest.fail(
            f"{', '.join(missing)} not found: these tests need a real MariaDB server. "
            "Run `make test`, which installs the packages (mariadb-server, mariadb-client) "
            "before running the tests.",
            pytrace=False,
        )
    if os.geteuid() != 0:
        pytest.fail(
            f"the tests start mariadbd as the '{RUN_AS}' user, which needs root; "
            "run them as root (as `make test` and CI do)",
            pytrace=False,
        )


def _write_tls(ca: trustme.CA, directory: Path) -> TLSFiles:
    directory.mkdir(parents=True, exist_ok=True)
    cert = ca.issue_cert("127.0.0.1", "localhost")
    files = TLSFiles(directory / "ca.pem", directory / "server.pem", directory / "server-key.pem")
    ca.cert_pem.write_to_path(str(files.ca))
    cert.cert_chain_pems[0].write_to_path(str(files.cert))
    cert.private_key_pem.write_to_path(str(files.key))
    # The key as a server keeps it: readable by the server's user alone.
    shutil.chown(files.key, RUN_AS)
    files.key.chmod(0o600)
    return files


@pytest.fixture(scope="session")
def work_dir() -> Iterator[Path]:
    """A directory the mysql user can enter (pytest's own tmp dirs are root-only, 0700)."""
    root = Path(tempfile.mkdtemp(prefix="notes-tests-"))
    root.chmod(0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on."""
    return free_port()


@pytest.fixture(scope="session")
def other_tls(work_dir: Path) -> TLSFiles:
    """TLS files from a CA that is not the server's."""
    return _write_tls(trustme.CA(), work_dir / "other-tls")


@pytest.fixture(scope="session")
def tls(work_dir: Path) -> TLSFiles:
    # ECDSA, as the lab's CA issues (nat/lab/pki.sh).
    return _write_tls(trustme.CA(key_type=trustme.KeyType.ECDSA), work_dir / "tls")


@pytest.fixture(scope="session")
def mariadb(work_dir: Path, tls: TLSFiles) -> Iterator[MariaDB]:
    _require_server_packages()
    root = work_dir / "db"
    root.mkdir()
    # The server creates its socket here, as the mysql user.
    shutil.chown(root, RUN_AS)
    server = MariaDB(root=root, port=free_port(), tls=tls)
    done = subprocess.run(server.provision_args(), check=False, capture_output=True, text=True)
    assert done.returncode == 0, f"provision.sh failed:\n{done.stdout}\n{done.stderr}"
    server.start()
    yield server
    server.stop()


@pytest.fixture
def db(mariadb: MariaDB) -> MariaDB:
    """The session's server, running (a test before may have stopped it and failed)."""
    mariadb.ensure_running()
    return mariadb


def app_env(server: MariaDB, work_dir: Path, **overrides: str) -> dict[str, str]:
    secret = work_dir / "secret-key"
    if not secret.exists():
        secret.write_bytes(os.urandom(32).hex().encode())
        secret.chmod(0o600)
    env = {
        "APP_DB_HOST": "127.0.0.1",
        "APP_DB_PORT": str(server.port),
        "APP_DB_USER": "app",
        "APP_DB_PASSWORD_FILE": str(server.web_password_file),
        "APP_DB_NAME": "notes",
        "APP_DB_CA_FILE": str(server.tls.ca),
        "APP_DB_TLS": "on",
        "APP_SECRET_KEY_FILE": str(secret),
    }
    env.update(overrides)
    return env


@pytest.fixture
def make_app(db: MariaDB, work_dir: Path) -> Iterator:
    """Builds apps from APP_* variables (overrides as keyword arguments); disposes of their
    pools afterwards."""
    apps: list[Flask] = []

    def make(**overrides: str) -> Flask:
        app = create_app(Settings.from_env(app_env(db, work_dir, **overrides)))
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.extensions["notes.db"].dispose()


@pytest.fixture
def app(make_app) -> Flask:
    return make_app()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


class LogLines:
    """The app's JSON log lines, captured from its handler."""

    def __init__(self) -> None:
        self.stream = io.StringIO()

    def records(self) -> list[dict]:
        return [json.loads(line) for line in self.stream.getvalue().splitlines()]

    def messages(self, message: str) -> list[dict]:
        return [r for r in self.records() if r["message"] == message]


@pytest.fixture
def log_lines(app: Flask) -> Iterator[LogLines]:
    captured = LogLines()
    logs.configure(stream=captured.stream)
    yield captured
    logs.configure()


def gunicorn_command(port: int) -> list[str]:
    """The lab's gunicorn command line (the contract of flask_app/README.md), bound to `port`.

    Run it from REPO.
    """
    return [
        str(Path(sys.executable).with_name("gunicorn")),
        "-c", "flask_app/gunicorn.conf.py",
        "--chdir", "flask_app",
        "--bind", f"127.0.0.1:{port}",
        "notes:create_app()",
    ]  # fmt: skip


@pytest.fixture
def gunicorn_bad_env(db, work_dir: Path) -> subprocess.CompletedProcess:
    """gunicorn started without APP_SECRET_KEY_FILE, run until it gives up."""
    env = {**os.environ, **app_env(db, work_dir), "WEB_CONCURRENCY": "1"}
    del env["APP_SECRET_KEY_FILE"]
    return subprocess.run(
        gunicorn_command(free_port()),
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def gunicorn(db, work_dir: Path) -> Iterator[tuple[str, Path]]:
    """The real gunicorn with flask_app/gunicorn.conf.py, as the lab runs it, on a free port.
    One worker, so that the outage lines of the test are those of one process."""
    port = free_port()
    log = work_dir / f"gunicorn-{port}.log"
    env = {**os.environ, **app_env(db, work_dir), "WEB_CONCURRENCY": "1"}
    args = gunicorn_command(port)
    with log.open("w") as out:
        proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            if proc.poll() is not None:
                pytest.fail(f"gunicorn exited with {proc.returncode}:\n{log.read_text()}")
            try:
                requests.get(f"{base}/healthz", timeout=1)
                break
            except requests.ConnectionError:
                time.sleep(0.05)
        yield base, log
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
