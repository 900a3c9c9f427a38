"""The HTTP checks: the app's /readyz and the public URL as the internet sees it."""

from __future__ import annotations

import datetime as dt
import http.client
import json
import socket
import ssl
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from .result import Clock, Result


@dataclass
class Response:
    status: int
    location: str | None
    body: str


class FetchError(Exception):
    """A request that got no HTTP answer; `outcome` says how it failed."""

    def __init__(self, outcome: str, detail: str) -> None:
        super().__init__(detail)
        self.outcome = outcome


def fetch(url: str, timeout: float, ca_file: str | None = None) -> Response:
    """One GET, no redirect followed, the first 2 KiB of the body.

    The standard library's client rather than requests: this also runs in a fresh process
    on an internet host, where every import is time spent before the first packet.
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    conn: http.client.HTTPConnection
    if parts.scheme == "https":
        ctx = ssl.create_default_context(cafile=ca_file)
        conn = http.client.HTTPSConnection(host, parts.port or 443, timeout=timeout, context=ctx)
    else:
        conn = http.client.HTTPConnection(host, parts.port or 80, timeout=timeout)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    try:
        conn.request("GET", path, headers={"Connection": "close"})
        resp = conn.getresponse()
        body = resp.read(2048).decode("utf-8", "replace")
        return Response(resp.status, resp.getheader("location"), body)
    except ssl.SSLError as exc:
        raise FetchError("tls-failed", f"TLS failed ({exc})") from exc
    except TimeoutError as exc:
        raise FetchError("timeout", f"no answer within {timeout}s") from exc
    except ConnectionRefusedError as exc:
        raise FetchError("refused", "connection refused") from exc
    except OSError as exc:
        raise FetchError("unreachable", f"{exc.strerror or exc}") from exc
    finally:
        conn.close()


def readyz(url: str, timeout: float) -> Result:
    """The app's own view of its database, with the kind of failure it read."""
    clock = Clock()
    try:
        resp = fetch(url, timeout)
    except FetchError as exc:
        if exc.outcome == "timeout":
            return Result("readyz", "timeout", f"GET {url}: {exc}", False, clock())
        outcome = "refused" if exc.outcome == "refused" else "unreachable"
        detail = f"GET {url}: connection {outcome} (the app is not listening)"
        return Result("readyz", outcome, detail, False, clock())
    try:
        body: Any = json.loads(resp.body)
    except ValueError:
        body = {"text": resp.body[:200]}
    data = {"status": resp.status, "body": body}
    if resp.status == 200:
        return Result(
            "readyz", "ready", f"GET {url}: 200, the app reaches its database", True, clock(), data
        )
    kind = body.get("kind", "?") if isinstance(body, dict) else "?"
    data["kind"] = kind
    detail = f"GET {url}: {resp.status}, the app says kind={kind}"
    return Result("readyz", "not-ready", detail, False, clock(), data)


def _certificate(host: str, port: int, ca_file: str | None, timeout: float) -> Result:
    """TLS handshake with SNI; the certificate's issuer, names and validity."""
    clock = Clock()
    ctx = ssl.create_default_context(cafile=ca_file)
    verify_error = None
    der = None
    try:
        with (
            socket.create_connection((host, port), timeout=timeout) as raw,
            ctx.wrap_socket(raw, server_hostname=host) as tls,
        ):
            der = tls.getpeercert(binary_form=True)
    except ssl.SSLCertVerificationError as exc:
        verify_error = exc.verify_message or str(exc)
    except (OSError, ssl.SSLError) as exc:
        outcome = "timeout" if isinstance(exc, TimeoutError) else "connect-failed"
        if isinstance(exc, ConnectionRefusedError):
            outcome = "refused"
        detail = f"TLS to {host}:{port}: {outcome} ({exc})"
        return Result("certificate", outcome, detail, False, clock(), {"error": str(exc)})
    if der is None:
        # Verification failed: look at the certificate anyway, to say what is wrong with it.
        unverified = ssl._create_unverified_context()
        try:
            with (
                socket.create_connection((host, port), timeout=timeout) as raw,
                unverified.wrap_socket(raw, server_hostname=host) as tls,
            ):
                der = tls.getpeercert(binary_form=True)
        except OSError as exc:
            detail = f"TLS to {host}:{port}: {verify_error}; then {exc}"
            return Result("certificate", "invalid", detail, False, clock())
    # Imported here: the check runs in a fresh process on an internet host, where every
    # import is startup time, and the rest of the module does not need it.
    from cryptography import x509

    cert = x509.load_der_x509_certificate(der)
    not_after = cert.not_valid_after_utc
    days = (not_after - dt.datetime.now(dt.UTC)).total_seconds() / 86400
    data = {
        "subject": cert.subject.rfc4514_string(),
        "issuer": cert.issuer.rfc4514_string(),
        "not_after": not_after.isoformat(),
        "days_left": round(days, 1),
        "verify_error": verify_error,
    }
    if verify_error:
        detail = f"certificate for {host} does not verify: {verify_error} (issuer {data['issuer']})"
        return Result("certificate", "invalid", detail, False, clock(), data)
    detail = f"certificate for {host} valid, {days:.0f} days left, issuer {data['issuer']}"
    return Result("certificate", "valid", detail, True, clock(), data)


def _get(url: str, ca_file: str | None, timeout: float, check: str) -> Result:
    clock = Clock()
    try:
        resp = fetch(url, timeout, ca_file)
    except FetchError as exc:
        return Result(check, exc.outcome, f"GET {url}: {exc}", False, clock())
    data = {"status": resp.status, "location": resp.location, "body": resp.body[:160]}
    status = resp.status
    if check == "public-http":
        ok = status in (301, 308) and (data["location"] or "").startswith("https://")
        outcome = "redirect" if ok else f"http-{status}"
        detail = f"GET {url}: {status} -> {data['location']}"
        return Result(check, outcome, detail, ok, clock(), data)
    if status < 400:
        outcome, ok = "allowed", True
    elif status == 403:
        outcome, ok = "denied", False
    elif status in (502, 503, 504):
        outcome, ok = "upstream-failed", False
    else:
        outcome, ok = f"http-{status}", False
    first_line = data["body"].strip().splitlines()[0] if data["body"].strip() else ""
    detail = f"GET {url}: {status} ({outcome}) {first_line[:80]}".rstrip()
    return Result(check, outcome, detail, ok, clock(), data)


def public(url: str, ca_file: str | None, timeout: float) -> list[Result]:
    """The public URL from where this runs: certificate, HTTPS decision, HTTP redirect."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    clock = Clock()
    try:
        addr = socket.gethostbyname(host)
    except OSError as exc:
        detail = f"{host} does not resolve here ({exc})"
        return [Result("public-dns", "nxdomain", detail, False, clock())]
    resolved = Result(
        "public-dns", "resolved", f"{host} resolves to {addr}", True, clock(), {"addr": addr}
    )
    http_url = f"http://{host}{parts.path or '/'}"
    with ThreadPoolExecutor(3) as pool:
        cert = pool.submit(_certificate, host, parts.port or 443, ca_file, timeout)
        https = pool.submit(_get, url, ca_file, timeout, "public-https")
        http = pool.submit(_get, http_url, ca_file, timeout, "public-http")
        return [resolved, cert.result(), https.result(), http.result()]
