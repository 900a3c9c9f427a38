"""The network and MySQL probes, each bounded by a short timeout.

Every probe returns a `Result` with a one-word `outcome` that the verdict reads, a
line for people and the raw figures. Nothing here decides what is broken.
"""

from __future__ import annotations

import errno
import ipaddress
import json
import os
import select
import socket
import ssl
import struct
import subprocess
import time
from dataclasses import dataclass
from typing import Any

import pymysql

from .result import Clock, Result


def resolve(host: str, timeout: float) -> Result:
    """Name resolution of the database host (an address resolves to itself)."""
    clock = Clock()
    try:
        ipaddress.ip_address(host)
        return Result("dns", "literal", f"{host} is an address, nothing to resolve", True, clock())
    except ValueError:
        pass
    # getaddrinfo has no timeout of its own; `getent` in a subprocess can be bounded.
    try:
        out = subprocess.run(
            ["getent", "ahostsv4", host],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return Result("dns", "timeout", f"resolving {host} took over {timeout}s", False, clock())
    addrs = sorted({line.split()[0] for line in out.stdout.splitlines() if line.strip()})
    if out.returncode != 0 or not addrs:
        return Result("dns", "nxdomain", f"{host} does not resolve", False, clock())
    return Result(
        "dns", "resolved", f"{host} resolves to {', '.join(addrs)}", True, clock(), {"addrs": addrs}
    )


def route_get(addr: str) -> Result:
    """The kernel's route to the address, as `ip route get` gives it."""
    clock = Clock()
    out = subprocess.run(
        ["ip", "-j", "route", "get", addr], capture_output=True, text=True, timeout=2, check=False
    )
    if out.returncode != 0:
        reason = out.stderr.strip().removeprefix("RTNETLINK answers: ") or "no route"
        return Result(
            "route", "no-route", f"ip route get {addr}: {reason}", False, clock(), {"error": reason}
        )
    routes = json.loads(out.stdout or "[]")
    route = routes[0] if routes else {}
    kind = route.get("type", "unicast")
    if kind not in ("unicast", "local"):
        return Result(
            "route", "no-route", f"the route to {addr} is of type {kind}", False, clock(), route
        )
    via = f" via {route['gateway']}" if route.get("gateway") else " (directly connected)"
    detail = f"{addr} goes out {route.get('dev', '?')}{via}, source {route.get('prefsrc', '?')}"
    return Result("route", "routed", detail, True, clock(), route)


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def ping(addr: str, count: int = 3, interval: float = 0.2, timeout: float = 1.0) -> Result:
    """ICMP echo, `count` probes; loss and round-trip times.

    A raw socket (root or CAP_NET_RAW) rather than ping(8): the figures are read
    directly, and the host needs no iputils.
    """
    clock = Clock()
    try:
        sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    except PermissionError:
        return Result("ping", "no-permission", "ICMP echo needs root (raw socket)", False, clock())
    ident = os.getpid() & 0xFFFF
    sent: dict[int, float] = {}
    rtts: list[float] = []
    errors: list[str] = []
    deadline = time.monotonic() + interval * (count - 1) + timeout
    next_send = time.monotonic()
    seq = 0
    with sock:
        while time.monotonic() < deadline and (len(rtts) < count):
            now = time.monotonic()
            if seq < count and now >= next_send:
                seq += 1
                header = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
                payload = b"diagnose-echo"
                csum = _checksum(header + payload)
                packet = struct.pack("!BBHHH", 8, 0, csum, ident, seq) + payload
                try:
                    sock.sendto(packet, (addr, 0))
                    sent[seq] = time.monotonic()
                except OSError as exc:
                    errors.append(errno.errorcode.get(exc.errno or 0, str(exc)))
                next_send = now + interval
            wait = max(0.0, min(deadline, next_send if seq < count else deadline) - now)
            ready, _, _ = select.select([sock], [], [], wait)
            if not ready:
                if seq >= count and len(rtts) + len(errors) >= count:
                    break
                continue
            data, (src, _) = sock.recvfrom(2048)
            ihl = (data[0] & 0x0F) * 4
            icmp_type, _code, _c, rid, rseq = struct.unpack("!BBHHH", data[ihl : ihl + 8])
            if icmp_type == 0 and rid == ident and src == addr and rseq in sent:
                rtts.append((time.monotonic() - sent.pop(rseq)) * 1000)
            if seq >= count and not sent:
                break
    received = len(rtts)
    loss = 100.0 * (count - received) / count
    data = {"sent": count, "received": received, "loss_pct": loss}
    if rtts:
        data.update(rtt_min_ms=min(rtts), rtt_avg_ms=sum(rtts) / len(rtts), rtt_max_ms=max(rtts))
        detail = (
            f"ICMP echo to {addr}: {received}/{count} answered, "
            f"rtt avg {data['rtt_avg_ms']:.1f} ms (max {data['rtt_max_ms']:.1f} ms)"
        )
        return Result("ping", "answered", detail, True, clock(), data)
    if errors:
        data["errors"] = errors
        detail = f"ICMP echo to {addr} could not be sent ({errors[0]})"
        return Result("ping", "send-error", detail, False, clock(), data)
    return Result("ping", "no-answer", f"ICMP echo to {addr}: no answer", False, clock(), data)


# ICMP destination-unreachable codes (RFC 792, RFC 1812) the kernel folds into errno.
ICMP_UNREACH = {
    0: "net-unreachable",
    1: "host-unreachable",
    3: "port-unreachable",
    9: "net-prohibited",
    10: "host-prohibited",
    13: "admin-prohibited",
}


def _read_icmp_unreach(sock: socket.socket, dst: str, dport: int, sport: int) -> dict | None:
    """Find the ICMP destination-unreachable that answered our SYN, if one came."""
    while True:
        ready, _, _ = select.select([sock], [], [], 0.05)
        if not ready:
            return None
        data, (src, _) = sock.recvfrom(2048)
        ihl = (data[0] & 0x0F) * 4
        if len(data) < ihl + 8 + 20 + 4:
            continue
        icmp_type, code = data[ihl], data[ihl + 1]
        inner = data[ihl + 8 :]
        inner_ihl = (inner[0] & 0x0F) * 4
        inner_dst = socket.inet_ntoa(inner[16:20])
        if icmp_type != 3 or inner[9] != socket.IPPROTO_TCP or inner_dst != dst:
            continue
        isport, idport = struct.unpack("!HH", inner[inner_ihl : inner_ihl + 4])
        if (isport, idport) == (sport, dport):
            return {"from": src, "type": 3, "code": code, "name": ICMP_UNREACH.get(code, "other")}


def tcp_connect(addr: str, port: int, timeout: float) -> Result:
    """A TCP connect, classified from errno and, as root, from the ICMP that answered.

    ECONNREFUSED is a TCP reset (nothing listening, or a firewall's `tcp-reset`) or an
    ICMP port-unreachable (a firewall's default REJECT); EHOSTUNREACH is an ICMP
    host-unreachable or an administrative prohibition. The ICMP code, read on a raw
    socket, tells those apart; without root it stays unknown and the detail says so.
    """
    clock = Clock()
    try:
        raw: socket.socket | None = socket.socket(
            socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP
        )
    except PermissionError:
        raw = None
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    # Bind first so the source port is known before the SYN leaves.
    sock.bind(("0.0.0.0", 0))
    sport = sock.getsockname()[1]
    target = f"{addr}:{port}"
    try:
        code = sock.connect_ex((addr, port))
        secs = clock()
    except TimeoutError:
        code, secs = errno.ETIMEDOUT, clock()
    except OSError as exc:
        code, secs = exc.errno or 0, clock()
    finally:
        sock.close()
    icmp = _read_icmp_unreach(raw, addr, port, sport) if raw is not None and code else None
    if raw is not None:
        raw.close()
    data: dict[str, Any] = {
        "target": target,
        "errno": errno.errorcode.get(code, code) if code else 0,
    }
    if icmp:
        data["icmp"] = icmp
    if code == 0:
        return Result(
            "tcp", "connected", f"TCP {target}: connected in {secs * 1000:.1f} ms", True, secs, data
        )
    if code == errno.EAGAIN:  # connect_ex on a socket with a timeout returns EAGAIN/ETIMEDOUT
        code = errno.ETIMEDOUT
        data["errno"] = "ETIMEDOUT"
    by = f" by {icmp['from']} (ICMP {icmp['name']}, code {icmp['code']})" if icmp else ""
    if code == errno.ECONNREFUSED:
        if icmp and icmp["code"] == 3:
            outcome, what = "rejected-icmp", f"refused{by}"
        else:
            outcome, what = "refused", "refused (TCP reset)" if raw is not None else "refused"
    elif code == errno.ETIMEDOUT:
        outcome, what = "timeout", f"no answer within {timeout}s (timed out)"
    elif code == errno.EHOSTUNREACH:
        if icmp and icmp["code"] in (9, 10, 13):
            outcome, what = "prohibited", f"administratively prohibited{by}"
        elif icmp:
            outcome, what = "unreachable", f"unreachable{by}"
        elif raw is None:
            outcome, what = "unreachable", "host unreachable (ICMP code unread: not root)"
        else:
            outcome, what = "unreachable", "host unreachable (no ICMP came: no ARP answer?)"
    elif code == errno.ENETUNREACH:
        outcome, what = "no-route", "network unreachable (no route)"
    elif code == errno.EACCES:
        outcome, what = "prohibited", "permission denied (a local `prohibit` route or firewall)"
    else:
        outcome, what = "error", os.strerror(code)
    return Result("tcp", outcome, f"TCP {target}: {what}", False, secs, data)


# The greeting's capability bit for TLS (CLIENT_SSL).
CLIENT_SSL = 0x800


def mysql_greeting(addr: str, port: int, timeout: float) -> Result:
    """Read the server's first packet: the handshake with its version, or an error.

    MySQL answers a host it has no account for with error 1130 in place of the
    greeting, so this is also where host-based refusal shows.
    """
    clock = Clock()
    try:
        with socket.create_connection((addr, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            header = _recv_exact(sock, 4)
            length = int.from_bytes(header[:3], "little")
            payload = _recv_exact(sock, length)
    except TimeoutError:
        detail = f"connected to {addr}:{port} but no greeting within {timeout}s"
        return Result("greeting", "no-greeting", detail, False, clock())
    except OSError as exc:
        detail = f"no greeting: {exc.strerror or exc}"
        return Result("greeting", "connect-failed", detail, False, clock(), {"error": str(exc)})
    if payload[:1] == b"\xff":
        code = int.from_bytes(payload[1:3], "little")
        # After the code, "#" and a five-character SQLSTATE, unless the server sends the
        # error before any handshake (as it does for 1130), which has neither.
        rest = payload[9:] if payload[3:4] == b"#" else payload[3:]
        message = rest.decode("utf-8", "replace")
        detail = f"the server sent error {code} in place of the greeting: {message}"
        return Result(
            "greeting", "error", detail, False, clock(), {"code": code, "message": message}
        )
    if payload[:1] != b"\x0a":
        detail = f"{addr}:{port} answered, but not with a MySQL protocol-10 greeting"
        return Result(
            "greeting", "not-mysql", detail, False, clock(), {"first": payload[:16].hex()}
        )
    end = payload.index(b"\0", 1)
    version = payload[1:end].decode("utf-8", "replace")
    # protocol(1) version\0 thread-id(4) salt(8) filler(1) capability-low(2)
    caps_at = end + 1 + 4 + 8 + 1
    caps = int.from_bytes(payload[caps_at : caps_at + 2], "little")
    data = {"version": version, "tls_offered": bool(caps & CLIENT_SSL)}
    tls = "offers TLS" if data["tls_offered"] else "does NOT offer TLS"
    return Result("greeting", "greeting", f"server version {version}, {tls}", True, clock(), data)


def _recv_exact(sock: socket.socket, count: int) -> bytes:
    buf = b""
    while len(buf) < count:
        chunk = sock.recv(count - len(buf))
        if not chunk:
            raise ConnectionResetError(errno.ECONNRESET, "connection closed by the server")
        buf += chunk
    return buf


# MySQL client and server error codes the verdict reads.
ER_DBACCESS_DENIED = 1044
ER_ACCESS_DENIED = 1045
ER_HOST_NOT_PRIVILEGED = 1130
ER_SECURE_TRANSPORT_REQUIRED = 3159
CR_CONN_HOST_ERROR = 2003
CR_SERVER_LOST = 2013


@dataclass
class DbTarget:
    """Where and as whom the app logs in."""

    host: str
    port: int
    user: str
    password: str | None
    database: str
    ca_file: str | None


def mysql_login(target: DbTarget, tls: bool, timeout: float) -> tuple[Result, Any]:
    """Log in as the app does; returns the result and the open connection (or None)."""
    clock = Clock()
    name = "login-tls" if tls else "login-plain"
    # PyMySQL tries TLS whenever the server offers it unless told not to.
    kwargs: dict[str, Any] = {"ssl_disabled": not tls}
    if tls:
        if target.ca_file:
            # As the app does: the chain against its CA, the name or IP against the host.
            kwargs["ssl"] = ssl.create_default_context(cafile=target.ca_file)
        else:
            kwargs.update(ssl={"check_hostname": False, "verify_mode": ssl.CERT_NONE})
    if target.password is None:
        return Result(name, "no-password", "the app's password file is unreadable", False), None
    try:
        conn = pymysql.connect(
            host=target.host,
            port=target.port,
            user=target.user,
            password=target.password,
            database=target.database,
            connect_timeout=timeout,
            read_timeout=timeout,
            write_timeout=timeout,
            **kwargs,
        )
    except pymysql.err.MySQLError as exc:
        code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else 0
        message = str(exc.args[1]) if len(exc.args) > 1 else str(exc)
        original = getattr(exc, "original_exception", None)
        data = {"code": code, "message": message}
        if isinstance(original, ssl.SSLError):
            outcome = "tls-failed"
            data["tls_error"] = getattr(original, "reason", None) or str(original)
        elif code == ER_ACCESS_DENIED:
            outcome = "auth"
        elif code == ER_HOST_NOT_PRIVILEGED:
            outcome = "host-not-allowed"
        elif code == ER_DBACCESS_DENIED:
            outcome = "db-denied"
        elif code == ER_SECURE_TRANSPORT_REQUIRED or "insecure transport" in message:
            outcome = "tls-required"
        elif isinstance(original, TimeoutError) or "timed out" in message:
            outcome = "timeout"
        elif code in (CR_CONN_HOST_ERROR, CR_SERVER_LOST):
            outcome = "lost-connection"
        else:
            outcome = "error"
        how = "over TLS" if tls else "without TLS"
        detail = f"login as {target.user!r} {how}: {outcome} ({code} {message})"
        return Result(name, outcome, detail, False, clock(), data), None
    data = {"cipher": None}
    cipher = None
    if tls:
        # From the TLS socket itself: asking the server (SHOW STATUS LIKE 'Ssl_cipher')
        # would cost a round trip, which on a slow link is most of the budget. PyMySQL keeps
        # the socket as `_sock`; without it, ask the server after all.
        sock = getattr(conn, "_sock", None)
        if isinstance(sock, ssl.SSLSocket) and sock.cipher():
            cipher = sock.cipher()[0]
        else:
            row = _one(conn, "SHOW SESSION STATUS LIKE 'Ssl_cipher'")
            cipher = row[1] if row else None
        data["cipher"] = cipher
    how = f"over TLS ({cipher})" if tls else "without TLS"
    detail = f"logged in as {target.user!r} to {target.database!r} {how}"
    return Result(name, "logged-in", detail, True, clock(), data), conn


def _one(conn: Any, sql: str) -> Any:
    with conn.cursor() as cur:
        cur.execute(sql)
        return cur.fetchone()


def select_one(conn: Any) -> Result:
    clock = Clock()
    try:
        row = _one(conn, "SELECT 1")
    except pymysql.err.MySQLError as exc:
        return Result("select", "error", f"SELECT 1 failed: {exc}", False, clock())
    finally:
        conn.close()
    secs = clock()
    ok = bool(row and row[0] == 1)
    detail = f"SELECT 1 answered in {secs * 1000:.1f} ms" if ok else f"SELECT 1 returned {row!r}"
    return Result("select", "answered" if ok else "wrong", detail, ok, secs)
