"""Is the lab whole? Every row of the topology contract, each checked from the host it
names, plus no trace of a drill left behind. Returns the problems; none means healthy."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from . import labctl
from .lab import public_ca
from .labctl import LabError, on

URL = "https://app.example.com/"


def _curl(host: str, url: str, *extra: str) -> str:
    ca = public_ca()
    args = ["curl", "-sS", "-m", "3", "-o", "/dev/null", "-w", "%{http_code} %{redirect_url}"]
    if ca:
        args += ["--cacert", ca]
    out = on(host, *args, *extra, url, check=False, timeout=6)
    return out.stdout.strip() or f"000 {out.stderr.strip()[:80]}"


def _expect_status(host: str, url: str, codes: tuple[str, ...], what: str) -> Callable:
    def check() -> str | None:
        got = _curl(host, url)
        return None if got.split()[0] in codes else f"{what}: got {got}"

    return check


def _redirect() -> str | None:
    got = _curl("office", "http://app.example.com/any/path?q=1")
    code, _, location = got.partition(" ")
    if code in ("301", "308") and location == "https://app.example.com/any/path?q=1":
        return None
    return f"office http://app.example.com/any/path?q=1 should redirect to https: got {got}"


def _tcp(host: str, addr: str, port: int, open_: bool, what: str) -> Callable:
    def check() -> str | None:
        ok = (
            on(host, "nc", "-z", "-w", "1", addr, str(port), check=False, timeout=4).returncode == 0
        )
        return None if ok == open_ else f"{what}: {'closed' if open_ else 'open'}"

    check.__name__ = what
    return check


def _ping_db() -> str | None:
    ok = on("web", "ping", "-c", "1", "-W", "1", "10.0.2.10", check=False).returncode == 0
    return None if ok else "web cannot ping 10.0.2.10"


def _programs() -> str | None:
    out = labctl.ctl("status", check=False).stdout
    bad = [line for line in out.splitlines() if line.split()[1:2] != ["RUNNING"]]
    return ("supervisor: " + "; ".join(" ".join(b.split()[:2]) for b in bad)) if bad else None


def readyz_status(max_time: float, timeout: float) -> str:
    """The HTTP status of the app's /readyz, asked on web: "000" when nothing answered within
    `max_time` seconds, "" when curl did not run there; LabError after `timeout` seconds."""
    return on(
        "web",
        "curl",
        "-sS",
        "-m",
        str(max_time),
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "http://127.0.0.1:8000/readyz",
        check=False,
        timeout=timeout,
    ).stdout.strip()


def _readyz() -> str | None:
    out = readyz_status(3, timeout=6)
    return None if out == "200" else f"web /readyz: {out or 'no answer'}"


def _residue() -> str | None:
    found = []
    db_rules = on("db", "iptables-save", check=False).stdout
    if "drill:" in db_rules:
        found.append("drill rules on db")
    if "DNAT" not in on("router", "iptables", "-t", "nat", "-S", check=False).stdout:
        found.append("no DNAT on router")
    fwd = on("router", "sysctl", "-n", "net.ipv4.ip_forward", check=False).stdout.strip()
    if fwd != "1":
        found.append(f"router ip_forward={fwd}")
    if "default" not in on("web", "ip", "route", check=False).stdout:
        found.append("no default route on web")
    leftovers = (
        sorted(p.stem for p in labctl.DRILL_STATE.glob("*.json"))
        if (labctl.DRILL_STATE.exists())
        else []
    )
    if leftovers:
        found.append("drill state left: " + ", ".join(leftovers))
    return ("residue: " + "; ".join(found)) if found else None


CHECKS: list[Callable[[], str | None]] = [
    _programs,
    _readyz,
    _residue,
    _expect_status("office", URL, ("200",), "office https://app.example.com/"),
    _redirect,
    _expect_status("outsider", URL, ("403",), "outsider https://app.example.com/"),
    _expect_status(
        "outsider", "http://app.example.com/", ("403",), "outsider http://app.example.com/"
    ),
    _tcp("web", "10.0.2.10", 3306, True, "web -> 10.0.2.10:3306"),
    _tcp("bastion", "10.0.2.10", 3306, False, "bastion -> 10.0.2.10:3306"),
    _tcp("office", "198.51.100.10", 22, False, "office -> 198.51.100.10:22"),
    _tcp("office", "10.0.2.10", 3306, False, "office -> 10.0.2.10:3306"),
    _tcp("bastion", "10.0.1.10", 8000, False, "bastion -> web:8000 (Flask)"),
    _tcp("bastion", "10.0.1.10", 9180, True, "bastion -> web:9180 (metrics)"),
    _tcp("office", "198.51.100.10", 9180, False, "office -> 198.51.100.10:9180"),
    _ping_db,
]


def _check(check: Callable[[], str | None]) -> str | None:
    # A check that could not run (a namespace command past its time limit on a busy machine)
    # is a problem to report, not the end of the drill that asked.
    try:
        return check()
    except LabError as exc:
        return f"{getattr(check, '__name__', 'a check').lstrip('_')}: could not check ({exc})"


def problems() -> list[str]:
    """What is wrong with the lab now; empty when every check holds."""
    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(_check, CHECKS))
    return [r for r in results if r]


def settled(patience: float = 30.0) -> list[str]:
    """What is still wrong once the lab has had `patience` seconds to settle; empty as soon
    as every check holds.

    For right after a heal: part of it lands a moment later (the gateway reloads on SIGHUP
    in its own time, the app's pooled connections find the database again on their next
    use), and a lab checked at once can look broken when it is not.
    """
    deadline = time.monotonic() + patience
    while True:
        found = problems()
        if not found or time.monotonic() >= deadline:
            return found
        time.sleep(0.5)
