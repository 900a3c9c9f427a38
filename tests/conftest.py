"""The lab as a pytest fixture, for the end-to-end tests in tests/.

A test that takes the session fixture ``lab`` runs against the whole lab: seven network
namespaces (office, outsider, acme, router, web, bastion, db) built by ``nat/lab/up.sh``, with
MariaDB, gunicorn, edge-gateway and Prometheus running under the lab's supervisord. The
fixture

- takes ``flock /run/edge-lab.lock`` itself (and waits its turn, saying so), unless a process
  that started pytest already holds it (``flock /run/edge-lab.lock .venv/bin/pytest tests``);
- tears down a lab it finds already up (this checkout's or a crashed run's), so that every
  session starts from a known state, and records the machine's own namespace (links, iptables)
  to compare with after teardown;
- brings the lab up once per session and always tears it down at the end, even when tests
  fail; the service logs stay in ``.lab/logs/NAME.log`` (gateway, app, mysql, prometheus,
  supervisord), and every failing test's report says so.

Using it from a test::

    def test_something(lab):
        lab.run("web", "ss", "-ltn")                  # any command inside a host
        lab.sh("db", "ip route; iptables -S")         # a shell line inside a host
        r = lab.curl("office", "https://app.example.com/")   # trusts the lab CA
        assert r.status == 200 and "notes" in r.body
        r = lab.curl("office", "http://app.example.com/x", "-X", "POST")  # extra curl args
        assert lab.connect("bastion", "10.0.2.10", 3306) == "timeout"
        # "open", "refused", "timeout" or "unreachable": a filtered port times out
        assert lab.ping("web", "10.0.2.10")
        with lab.listener("office", 7000) as peers:   # a TCP server inside a host
            lab.connect("db", "203.0.113.10", 7000)
        assert peers() == ["198.51.100.20"]           # who connected (read after the block)
        rows = lab.sql("SELECT COUNT(*) FROM notes.notes")   # root on db, over the socket
        lab.ctl("stop", "mysql")                      # the lab's systemctl (supervisorctl)
        lab.program_pid("mysql")                      # pid the supervisor holds, or None
        lab.log("gateway").read_text()                # a service's log file
        lab.log_lines("gateway", tag)                 # its lines with tag, waiting for one

Names and addresses are those of the topology (README.md); paths are in ``lab.root``,
``lab.state`` (``.lab``), ``lab.logs`` and ``lab.ca`` (what the lab's clients trust: the lab
CA, which signed MariaDB's certificate, and Pebble's roots, for the gateway's). A test that
breaks the lab must heal it before it returns (try/finally); the fixture does not rebuild the
lab between tests. ``lab.down()`` and ``lab.up()`` rebuild it
for tests of the builder itself.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
STATE = ROOT / ".lab"
LOGS = STATE / "logs"
# The gateway's certificate comes from Pebble (ACME); this bundle holds the lab CA and every
# Pebble root (nat/lab/pebble.sh), the way a client's store holds the public CAs.
CA = STATE / "ca" / "trust.pem"
LOCK = Path("/run/edge-lab.lock")
SUPERVISOR_CONF = ROOT / "nat" / "lab" / "supervisord.conf"
HOSTS = ("router", "office", "outsider", "acme", "web", "bastion", "db")

# Run inside a host by `Lab.connect`: one TCP connect, classified by how it ended.
_CONNECT = """
import errno, socket, sys
s = socket.socket()
s.settimeout(float(sys.argv[3]))
try:
    s.connect((sys.argv[1], int(sys.argv[2])))
    print("open")
except socket.timeout:
    print("timeout")
except OSError as e:
    kinds = {errno.ECONNREFUSED: "refused", errno.EHOSTUNREACH: "unreachable",
             errno.ENETUNREACH: "unreachable", errno.ETIMEDOUT: "timeout"}
    print(kinds.get(e.errno, "error:" + errno.errorcode.get(e.errno, str(e.errno))))
"""

# Run inside a host by `Lab.listener`: accept connections, print each peer's address, and
# at the end of its standard input take what is still queued, print it, and exit. A connect
# that returned "open" is in the accept queue already, whether or not this process was
# scheduled to accept it before the block ended.
_LISTEN = """
import select, socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen()
print("ready", flush=True)
while True:
    ready, _, _ = select.select([s, sys.stdin], [], [])
    if sys.stdin in ready:
        s.setblocking(False)
        while True:
            try:
                c, peer = s.accept()
            except BlockingIOError:
                sys.exit(0)
            print(peer[0], flush=True)
            c.close()
    c, peer = s.accept()
    print(peer[0], flush=True)
    c.close()
"""


@dataclass
class Http:
    """What curl saw: the status, the response headers (lower-case names), the body."""

    status: int
    headers: dict[str, str]
    body: str


def _holds_lock_in_ancestry(path: Path) -> bool:
    """True when this process or an ancestor holds the flock on path (see /proc/locks)."""
    if not path.exists():
        return False
    inode = path.stat().st_ino
    holders = set()
    for line in Path("/proc/locks").read_text().splitlines():
        cols = line.split()
        if len(cols) >= 6 and cols[1] == "FLOCK" and cols[5].split(":")[-1] == str(inode):
            holders.add(int(cols[4]))
    pid = os.getpid()
    while pid > 1:
        if pid in holders:
            return True
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        pid = int(stat.rsplit(")", 1)[1].split()[1])
    return False


def _strip_counters(text: str) -> str:
    """iptables-save without its packet counters and comment lines, for comparing."""
    lines = []
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        lines.append(re.sub(r"\[\d+:\d+\]", "", line).rstrip())
    return "\n".join(lines)


class Lab:
    """The running lab, as a test reaches it. See the module docstring."""

    def __init__(self) -> None:
        self.root = ROOT
        self.state = STATE
        self.logs = LOGS
        self.ca = CA
        # The machine's own namespace before the session's first `up` (see root_snapshot).
        self.before: dict[str, str] = {}

    # --- Running things inside the hosts ---------------------------------------------------

    def run(
        self, host: str | None, *argv: str, timeout: float = 15, check: bool = False, **kw
    ) -> subprocess.CompletedProcess:
        """Run argv inside host (None: in the machine's own namespace), output captured."""
        cmd = ["ip", "netns", "exec", host, *argv] if host else list(argv)
        out = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT, check=False, **kw
        )
        if check and out.returncode != 0:
            raise AssertionError(
                f"{' '.join(cmd)} exited {out.returncode}\n"
                f"stdout: {out.stdout}\nstderr: {out.stderr}"
            )
        return out

    def sh(self, host: str | None, script: str, **kw) -> subprocess.CompletedProcess:
        """Run a bash command line inside host."""
        return self.run(host, "bash", "-c", script, **kw)

    def curl(self, host: str, url: str, *args: str, timeout: float = 5) -> Http:
        """One HTTP request from host with curl, trusting the lab CA; no redirects followed."""
        marker = "\n--edge-lab-status--"
        out = self.run(
            host,
            "curl", "-sS", "--cacert", str(CA), "-m", str(timeout), "-D", "/dev/stderr",
            "-w", marker + "%{http_code}", *args, url,
            timeout=timeout + 5,
        )  # fmt: skip
        body, _, code = out.stdout.rpartition(marker)
        headers = {}
        for line in out.stderr.splitlines():
            name, sep, value = line.partition(":")
            if sep and not name.startswith("curl"):
                headers[name.strip().lower()] = value.strip()
        status = int(code) if code.isdigit() else 0
        if status == 0:
            headers["curl-error"] = out.stderr.strip()
        return Http(status, headers, body)

    def connect(self, host: str, addr: str, port: int, timeout: float = 1.0) -> str:
        """A TCP connect from host: "open", "refused", "timeout", "unreachable" or "error:..."."""
        out = self.run(
            host, sys.executable, "-c", _CONNECT, addr, str(port), str(timeout), check=True
        )
        return out.stdout.strip()

    def ping(self, host: str, addr: str) -> bool:
        """One ICMP echo from host, answered within a second."""
        return self.run(host, "ping", "-c", "1", "-W", "1", addr).returncode == 0

    @contextlib.contextmanager
    def listener(
        self, host: str, port: int, addr: str = "0.0.0.0"
    ) -> Iterator[Callable[[], list[str]]]:
        """A TCP server inside host for the block; yields a function returning the peers."""
        cmd = ["ip", "netns", "exec", host, sys.executable, "-u", "-c", _LISTEN, addr, str(port)]
        proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        try:
            assert proc.stdout is not None
            first = proc.stdout.readline().strip()
            assert first == "ready", f"listener on {host}:{port} failed: {proc.stderr.read()}"
            peers: list[str] = []

            def seen() -> list[str]:
                return list(peers)

            yield seen
        finally:
            # End of input: the listener takes the connections still queued, then exits.
            try:
                rest, _ = proc.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                rest, _ = proc.communicate()
        peers.extend(line.strip() for line in rest.splitlines() if line.strip())

    def sql(self, query: str) -> list[list[str]]:
        """Run SQL as root on db, through the server's socket; rows of strings."""
        out = self.run(
            "db", "mariadb", f"--socket={STATE / 'db' / 'mysqld.sock'}", "-N", "-B", "-e", query,
            check=True,
        )  # fmt: skip
        return [line.split("\t") for line in out.stdout.splitlines()]

    # --- The services ------------------------------------------------------------------------

    def ctl(self, *args: str, check: bool = False) -> subprocess.CompletedProcess:
        """supervisorctl on the lab's supervisor: the lab's systemctl."""
        return self.run(None, "supervisorctl", "-c", str(SUPERVISOR_CONF), *args, check=check)

    def program_pid(self, name: str) -> int | None:
        out = self.ctl("pid", name)
        text = out.stdout.strip()
        return int(text) if text.isdigit() and text != "0" else None

    def log(self, name: str) -> Path:
        return LOGS / f"{name}.log"

    def log_lines(self, name: str, text: str, patience: float = 30) -> list[str]:
        """The lines of a service's log that hold `text`, once there is one.

        A service's output reaches its log through the supervisor, which copies it when it
        next runs, and the gateway writes its access line as the response ends: a client can
        have its answer before the line is in the file. Empty after `patience` seconds.
        """
        deadline = time.monotonic() + patience
        while True:
            try:
                lines = [line for line in self.log(name).read_text().splitlines() if text in line]
            except FileNotFoundError:
                lines = []
            if lines or time.monotonic() >= deadline:
                return lines
            time.sleep(0.1)

    # --- The lab as a whole ------------------------------------------------------------------

    def up(self) -> None:
        out = self.run(None, str(ROOT / "nat/lab/up.sh"), timeout=300)
        if out.returncode != 0:
            pytest.fail(
                f"the lab did not come up (nat/lab/up.sh exited {out.returncode});"
                f" service logs are in {LOGS}/\n{out.stdout}\n{out.stderr}",
                pytrace=False,
            )

    def down(self) -> subprocess.CompletedProcess:
        return self.run(None, str(ROOT / "nat/lab/down.sh"), timeout=180, check=True)

    def present(self) -> list[str]:
        """The lab namespaces that exist now."""
        return [h for h in HOSTS if Path("/run/netns", h).exists()]

    def root_snapshot(self) -> dict[str, str]:
        """What the lab must never leave behind in the machine's own namespace."""
        return {
            "links": self.run(None, "ip", "-o", "link", "show").stdout,
            "iptables": _strip_counters(self.run(None, "iptables-save").stdout),
            "ip6tables": _strip_counters(self.run(None, "ip6tables-save").stdout),
            "routes": self.run(None, "ip", "route", "show", "table", "all").stdout,
        }

    def lab_processes(self) -> list[str]:
        """Processes of this lab still running: started from its state or by its supervisor."""
        found = []
        marks = (str(STATE), str(SUPERVISOR_CONF), "/run/edge-lab/")
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit() or int(proc.name) == os.getpid():
                continue
            try:
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if any(mark in cmdline for mark in marks):
                found.append(f"{proc.name}: {cmdline.strip()}")
        return found


@pytest.fixture(scope="session")
def lab() -> Iterator[Lab]:
    """The whole lab, up for the session, torn down at its end whatever happened."""
    if os.geteuid() != 0:
        pytest.fail("the lab's tests need root (namespaces, iptables)", pytrace=False)
    lab = Lab()
    lock = None
    if not _holds_lock_in_ancestry(LOCK):
        lock = open(LOCK, "a")  # noqa: SIM115 (held for the whole session)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"\nwaiting for {LOCK}: another user of the lab holds it", flush=True)
            fcntl.flock(lock, fcntl.LOCK_EX)
    try:
        if lab.present() or Path("/run/edge-lab").exists():
            lab.down()
        lab.before = lab.root_snapshot()
        started = time.monotonic()
        lab.up()
        print(f"\nlab up in {time.monotonic() - started:.1f} s", flush=True)
        yield lab
    finally:
        try:
            lab.down()
        finally:
            if lock is not None:
                fcntl.flock(lock, fcntl.LOCK_UN)
                lock.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failing lab test says where the service logs are."""
    outcome = yield
    report = outcome.get_result()
    if report.failed and "lab" in getattr(item, "fixturenames", ()):
        names = sorted(p.name for p in LOGS.glob("*.log")) if LOGS.exists() else []
        report.sections.append(
            ("lab logs", f"service logs in {LOGS}/: {', '.join(names) or 'none yet'}")
        )
