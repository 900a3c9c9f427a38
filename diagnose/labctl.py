"""Acting on the lab: commands on its hosts, its supervisor, MySQL's root, its processes.

The drills inject and heal through these; the paths they need (MySQL's socket, the
app's password file, the gateway's config) are read from the running processes, so they
follow the lab's layout rather than repeat it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from .lab import LAB_LOGS, LAB_STATE, ROOT, SUPERVISOR_CONF, process_env

DRILL_STATE = LAB_STATE / "drill"


class LabError(RuntimeError):
    """A lab command failed; the message names the command and what it said."""


def sh(
    *argv: str, check: bool = True, timeout: float = 20.0, input_text: str | None = None
) -> subprocess.CompletedProcess:
    try:
        out = subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input_text,
            check=False,
            cwd=ROOT,
        )
    except subprocess.TimeoutExpired as exc:
        raise LabError(f"{' '.join(argv)}: no answer within {timeout}s") from exc
    if check and out.returncode != 0:
        raise LabError(f"{' '.join(argv)}: exit {out.returncode}: {out.stderr.strip()[-400:]}")
    return out


def on(
    host: str, *argv: str, check: bool = True, timeout: float = 20.0
) -> subprocess.CompletedProcess:
    return sh("ip", "netns", "exec", host, *argv, check=check, timeout=timeout)


def ctl(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """The lab's systemctl (nat/lab/ctl.sh)."""
    return sh("supervisorctl", "-c", str(SUPERVISOR_CONF), *args, check=check, timeout=60)


def program_pid(name: str) -> int | None:
    out = ctl("pid", name, check=False).stdout.strip()
    return int(out) if out.isdigit() and out != "0" else None


def program_state(name: str) -> str:
    out = ctl("status", name, check=False).stdout.split()
    return out[1] if len(out) > 1 else "UNKNOWN"


def wait_for(pred: Callable[[], bool], timeout: float, interval: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if pred():
                return True
        except (LabError, OSError):
            pass
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode() for a in raw.split(b"\0") if a]


def option(argv: list[str], name: str) -> str | None:
    """The value of --name=VALUE or --name VALUE in a command line."""
    for i, arg in enumerate(argv):
        if arg.startswith(f"--{name}="):
            return arg.split("=", 1)[1]
        if arg == f"--{name}" and i + 1 < len(argv):
            return argv[i + 1]
    return None


def _remembered(name: str, found: str | None) -> str | None:
    """A path read from a running process, kept under DRILL_STATE for when a drill has stopped
    that process; without one, the path kept last time (None when none was)."""
    saved = DRILL_STATE / name
    if found:
        DRILL_STATE.mkdir(parents=True, exist_ok=True)
        saved.write_text(found)
        return found
    return saved.read_text().strip() if saved.exists() else None


def mysqld_argv() -> list[str]:
    pid = program_pid("mysql")
    if pid is None:
        raise LabError("mysql is not running under the lab's supervisor")
    return cmdline(pid)


def mysql_socket() -> str:
    """The server's unix socket, from its command line (or the drill's saved copy)."""
    pid = program_pid("mysql")
    sock = _remembered("mysql-socket", option(cmdline(pid), "socket") if pid else None)
    if not sock:
        raise LabError("cannot find MySQL's socket: mysql is not running and none was saved")
    return sock


def mysql_root(sql: str) -> str:
    """SQL as root over the local socket on db: the only way root may log in."""
    # Through standard input, so no password or statement shows in a process list.
    out = sh(
        "ip",
        "netns",
        "exec",
        "db",
        "mariadb",
        "--no-defaults",
        f"--socket={mysql_socket()}",
        "-uroot",
        "-N",
        "-B",
        input_text=sql,
        timeout=15,
    )
    return out.stdout


def kill_app_sessions(user: str = "app") -> None:
    """End the app's open sessions, so its pool must log in again (as a new worker would)."""
    ids = mysql_root(f"SELECT id FROM information_schema.processlist WHERE user = '{user}'")
    for sid in ids.split():
        try:
            mysql_root(f"KILL {int(sid)}")
        except LabError as exc:
            # The session ended by itself between the listing and the KILL.
            if "Unknown thread id" not in str(exc):
                raise


def app_pid() -> int | None:
    return program_pid("app")


def app_environment() -> dict[str, str]:
    pid = app_pid()
    return process_env(pid) if pid else {}


def app_password() -> str:
    """The password the app logs in with (from the file its environment names)."""
    path = _remembered("app-password-file", app_environment().get("APP_DB_PASSWORD_FILE"))
    if not path:
        raise LabError("cannot find the app's APP_DB_PASSWORD_FILE")
    return Path(path).read_text().strip()


def gateway_config() -> Path:
    pid = program_pid("gateway")
    path = _remembered("gateway-config", option(cmdline(pid), "config") if pid else None)
    if not path:
        raise LabError("cannot find the gateway's --config")
    return Path(path)


def spawn(
    host: str, argv: list[str], log: Path, env: dict[str, str] | None = None, cwd: str | None = None
) -> int:
    """Start a process on a lab host, detached from us; returns its pid.

    `ip netns exec` execs the command, so the pid is the command's own.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        proc = subprocess.Popen(
            ["ip", "netns", "exec", host, *argv],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env=env,
            cwd=cwd or ROOT,
        )
    return proc.pid


def stop_pid(pid: int, timeout: float = 30.0) -> None:
    """SIGTERM, then SIGKILL if it is still there after `timeout`."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    if not wait_for(lambda: not alive(pid), timeout):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        wait_for(lambda: not alive(pid), 5)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie child of ours counts as gone.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    if state == "Z":
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        return False
    return True


def listening(host: str, port: int, addr: str | None = None) -> bool:
    out = on(host, "ss", "-ltnH", f"sport = :{port}", check=False).stdout
    rows = [line.split()[3] for line in out.splitlines() if line.strip()]
    return any(addr is None or r.startswith(addr + ":") for r in rows)


def log_path(name: str) -> Path:
    return LAB_LOGS / f"{name}.log"
