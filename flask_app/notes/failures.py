"""What kind of database failure an exception is, and the log of outages.

The kind is read from the driver's error codes and the socket errno found by walking the
exception's causes, never from message text. Kinds are the /readyz contract: refused, timeout,
unreachable, dns, auth, host-not-allowed, tls, lost-connection, unknown.
"""

from __future__ import annotations

import errno
import logging
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pymysql
import sqlalchemy.exc

log = logging.getLogger("notes.db")

# MySQL client and server error codes (errmsg.h, mysqld_error.h), shared by MariaDB.
CR_CONN_HOST_ERROR = 2003  # could not connect over TCP; the socket errno says why
CR_SERVER_GONE_ERROR = 2006  # write to a connection the server has closed
CR_SERVER_LOST = 2013  # read failed or timed out mid-conversation
CR_SSL_CONNECTION_ERROR = 2026
ER_ACCESS_DENIED_ERROR = 1045
ER_ACCESS_DENIED_NO_PASSWORD_ERROR = 1698  # MariaDB: a unix_socket account tried over TCP
ER_HOST_NOT_PRIVILEGED = 1130
ER_SECURE_TRANSPORT_REQUIRED = 3159  # MySQL 8; MariaDB answers 1045 instead

_ERRNO_KINDS = {
    errno.ECONNREFUSED: "refused",
    errno.ETIMEDOUT: "timeout",
    errno.EHOSTUNREACH: "unreachable",
    errno.ENETUNREACH: "unreachable",
}


# Failures of a new login only: connections already open keep working through them.
LOGIN_KINDS = frozenset({"auth", "host-not-allowed", "tls", "dns"})


@dataclass(frozen=True)
class Failure:
    kind: str
    detail: str


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """The exception, then what it wraps (SQLAlchemy's .orig, PyMySQL's .original_exception,
    __cause__) depth first, and only then what it was raised while handling (__context__):
    a reconnect that failed after a failed ping is classified by the reconnect's error."""
    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        # Pushed in reverse: the first popped is .orig.
        stack += [
            e.__context__,
            e.__cause__,
            getattr(e, "original_exception", None),
            getattr(e, "orig", None),
        ]


def classify(exc: BaseException, *, tls: bool = True) -> Failure:
    """The kind of a failure to reach or use the database. `tls` says whether the connection
    was to be encrypted: MariaDB answers a login without TLS, when it requires TLS, with the
    same 1045 as a wrong password, and only the client knows it did not offer TLS."""
    chain = list(_chain(exc))
    detail = _detail(chain)
    codes = [c for c in map(_mysql_code, chain) if c is not None]
    if codes and codes[0] in (CR_SERVER_LOST, CR_SERVER_GONE_ERROR):
        # An established connection broke. Any TLS error in its causes is the TLS layer
        # noticing the same broken socket, not a TLS problem.
        if any(isinstance(e, TimeoutError) for e in chain):
            return Failure("timeout", detail)
        return Failure("lost-connection", detail)
    for e in chain:
        if isinstance(e, sqlalchemy.exc.TimeoutError):
            # Waited in vain for a pooled connection; SQLAlchemy's message says which pool.
            return Failure("timeout", str(e).split(" (Background on this error")[0])
        if isinstance(e, (ssl.SSLError, ssl.CertificateError)):
            return Failure("tls", detail)
        if isinstance(e, socket.gaierror):
            return Failure("dns", detail)
        if isinstance(e, TimeoutError):
            return Failure("timeout", detail)
        if isinstance(e, OSError) and e.errno in _ERRNO_KINDS:
            return Failure(_ERRNO_KINDS[e.errno], detail)
    for code in codes:
        if code == ER_ACCESS_DENIED_ERROR:
            return Failure("auth" if tls else "tls", detail)
        if code == ER_ACCESS_DENIED_NO_PASSWORD_ERROR:
            return Failure("auth", detail)
        if code == ER_HOST_NOT_PRIVILEGED:
            return Failure("host-not-allowed", detail)
        if code in (ER_SECURE_TRANSPORT_REQUIRED, CR_SSL_CONNECTION_ERROR):
            return Failure("tls", detail)
    return Failure("unknown", detail)


def _mysql_code(e: BaseException) -> int | None:
    if isinstance(e, pymysql.err.MySQLError) and e.args and isinstance(e.args[0], int):
        return e.args[0]
    return None


def _detail(chain: list[BaseException]) -> str:
    """The driver's own message: short, and free of the SQL statement SQLAlchemy appends."""
    for e in chain:
        if not isinstance(e, sqlalchemy.exc.SQLAlchemyError):
            return str(e) or type(e).__name__
    return type(chain[0]).__name__


class OutageLog:
    """Logs a database outage once when it starts and once when it ends (per process).

    Requests and /readyz report each failure and success, and each new connection; only a
    change of state is logged, so an outage is two log lines, not a traceback per request.
    Gunicorn workers are separate processes: each one logs the outages it sees, and its lines
    carry its pid.
    """

    def __init__(self, target: str) -> None:
        self.target = target
        self._lock = threading.Lock()
        self._failure: Failure | None = None
        self._since = 0.0

    @property
    def current(self) -> Failure | None:
        return self._failure

    def failed(self, failure: Failure) -> None:
        with self._lock:
            if self._failure is not None and self._failure.kind == failure.kind:
                return
            previous, self._failure = self._failure, failure
            if previous is None:
                self._since = time.monotonic()
        fields = {"target": self.target, "kind": failure.kind, "error": failure.detail}
        if previous is None:
            log.warning("Database outage started", extra=fields)
        else:
            log.warning("Database outage changed kind", extra={**fields, "was": previous.kind})

    def succeeded(self) -> None:
        """A query succeeded. That ends an outage unless it is a login failure: a pooled
        connection opened before a password change still works, and proves nothing."""
        failure = self._failure
        if failure is None or failure.kind in LOGIN_KINDS:  # the common case without the lock
            return
        self._end()

    def connected(self) -> None:
        """A new connection logged in: that ends any outage."""
        if self._failure is not None:
            self._end()

    def _end(self) -> None:
        with self._lock:
            previous, self._failure = self._failure, None
            seconds = time.monotonic() - self._since
        if previous is not None:
            log.warning(
                "Database outage ended",
                extra={
                    "target": self.target,
                    "kind": previous.kind,
                    "duration_s": round(seconds, 3),
                },
            )
