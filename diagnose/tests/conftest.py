"""Real things to classify: a MariaDB on loopback provisioned by mysql/provision.sh, a
closed port, and a network namespace of our own with iptables rules in it."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


# A new P-256 key, unencrypted: the curve of the lab's keys (nat/lab/pki.sh).
_NEW_EC_KEY = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")


def _new_ca(key: Path, cert: Path, name: str) -> None:
    """A self-signed CA named `name`, valid two days: its key and certificate in PEM."""
    _openssl(
        "req",
        "-x509",
        *_NEW_EC_KEY,
        "-keyout",
        str(key),
        "-out",
        str(cert),
        "-subj",
        f"/CN={name}",
        "-days",
        "2",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign",
    )


@dataclass
class MariaDB:
    host: str
    port: int
    socket: str
    password_file: str
    ca_file: str

    def root_sql(self, sql: str) -> str:
        out = subprocess.run(
            [
                "mariadb",
                "--no-defaults",
                f"--socket={self.socket}",
                "-uroot",
                "-N",
                "-B",
                "-e",
                sql,
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        return out.stdout


@pytest.fixture(scope="session")
def mariadb() -> Iterator[MariaDB]:
    if os.geteuid() != 0 or not shutil.which("mariadbd"):
        pytest.skip("needs root and mariadb-server (make deps)")
    # Not under pytest's own temporary folder: that one is 0700, and mariadbd runs as mysql.
    base = Path(tempfile.mkdtemp(prefix="diagtest-mariadb-"))
    base.chmod(0o755)
    tls = base / "tls"
    tls.mkdir()
    _new_ca(tls / "ca.key", tls / "ca.pem", "diagtest CA")
    _openssl(
        "req",
        *_NEW_EC_KEY,
        "-keyout",
        str(tls / "server.key"),
        "-out",
        str(tls / "server.csr"),
        "-subj",
        "/CN=127.0.0.1",
    )
    ext = tls / "ext.cnf"
    ext.write_text("subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    _openssl(
        "x509",
        "-req",
        "-in",
        str(tls / "server.csr"),
        "-CA",
        str(tls / "ca.pem"),
        "-CAkey",
        str(tls / "ca.key"),
        "-CAcreateserial",
        "-days",
        "2",
        "-out",
        str(tls / "server.pem"),
        "-extfile",
        str(ext),
    )
    shutil.chown(tls / "server.key", "mysql")
    port = _free_port()
    rundir = base / "run"
    rundir.mkdir()
    shutil.chown(rundir, "mysql")
    sock = str(rundir / "mysqld.sock")
    datadir = base / "data"
    # The options mysql/provision.sh and mysql/serve.sh share: where the server runs.
    server_args = [
        "--datadir",
        str(datadir),
        "--socket",
        sock,
        "--bind-address",
        "127.0.0.1",
        "--port",
        str(port),
        "--tls-ca",
        str(tls / "ca.pem"),
        "--tls-cert",
        str(tls / "server.pem"),
        "--tls-key",
        str(tls / "server.key"),
    ]
    prov = subprocess.run(
        [
            str(ROOT / "mysql/provision.sh"),
            *server_args,
            "--app-host",
            "127.0.0.1",
            "--db-password-file",
            str(base / "db-password"),
            "--web-password-file",
            str(base / "web-password"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if prov.returncode != 0:
        raise RuntimeError(f"mysql/provision.sh failed:\n{prov.stdout}{prov.stderr[-3000:]}")
    log = (base / "mysqld.log").open("w")
    proc = subprocess.Popen(
        [str(ROOT / "mysql/serve.sh"), *server_args],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    db = MariaDB("127.0.0.1", port, sock, str(base / "web-password"), str(tls / "ca.pem"))
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"mariadbd did not start; see {base / 'mysqld.log'}")
            time.sleep(0.2)
    try:
        yield db
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def other_ca(tmp_path: Path) -> Path:
    """The certificate of a CA that signed nothing the tests' MariaDB serves."""
    cert = tmp_path / "other-ca.pem"
    _new_ca(tmp_path / "other-ca.key", cert, "another CA")
    return cert


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on."""
    return _free_port()


@dataclass
class Netns:
    """Two namespaces of the tests' own, `diagtest-c*` (10.77.0.1) and `diagtest-p*`
    (10.77.0.2), joined by a veth pair: probes run in the first against the second, and the
    traffic never leaves them."""

    client: str
    peer: str
    peer_addr: str

    def on(self, host: str, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["ip", "netns", "exec", host, *argv], check=check, capture_output=True, text=True
        )


@pytest.fixture
def netns() -> Iterator[Netns]:
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces)")
    client, peer = f"diagtest-c{os.getpid()}", f"diagtest-p{os.getpid()}"
    run = lambda *a: subprocess.run(a, check=True, capture_output=True)
    try:
        run("ip", "netns", "add", client)
        run("ip", "netns", "add", peer)
        run(
            "ip",
            "-n",
            client,
            "link",
            "add",
            "eth0",
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            peer,
        )
        for host, addr in ((client, "10.77.0.1/24"), (peer, "10.77.0.2/24")):
            run("ip", "-n", host, "addr", "add", addr, "dev", "eth0")
            run("ip", "-n", host, "link", "set", "eth0", "up")
            run("ip", "-n", host, "link", "set", "lo", "up")
        yield Netns(client, peer, "10.77.0.2")
    finally:
        for host in (client, peer):
            pids = subprocess.run(
                ["ip", "netns", "pids", host], capture_output=True, text=True, check=False
            ).stdout.split()
            for pid in pids:
                subprocess.run(["kill", pid], capture_output=True, check=False)
            subprocess.run(["ip", "netns", "del", host], capture_output=True, check=False)
