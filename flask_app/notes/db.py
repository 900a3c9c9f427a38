"""Database access: the connection pool, the readiness checks, and outage bookkeeping."""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import contextmanager
from typing import Any

import sqlalchemy.exc
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import URL
from sqlalchemy.pool import NullPool

from .config import (
    CONNECT_TIMEOUT_S,
    READ_TIMEOUT_S,
    READY_LIMIT_S,
    WRITE_TIMEOUT_S,
    Settings,
)
from .failures import LOGIN_KINDS, Failure, OutageLog, classify

# What a broken or unreachable database raises through SQLAlchemy. Other errors (a constraint
# violated, bad SQL) are bugs and go to the 500 handler with their traceback.
UNAVAILABLE_ERRORS = (
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    sqlalchemy.exc.DisconnectionError,
    # No pooled connection became free within POOL_WAIT_S.
    sqlalchemy.exc.TimeoutError,
)

# Threads that run /readyz's checks. A check that outlives the 1 s wait keeps running, and
# its SELECT 1 keeps a pooled connection, until the driver's timeouts end it (1.8 s at most).
READY_CHECKS = 4
# Sized for gunicorn's threads per worker (gunicorn.conf.py) plus the readiness checks, so a
# request never queues for a connection: a wait for one, added to the timeouts that follow,
# would break the 2 s limit. Two more cover other callers; waiting gives up after a second.
POOL_SIZE = 4
POOL_OVERFLOW = READY_CHECKS + 2
POOL_WAIT_S = 1.0
# Replace connections older than five minutes: well inside the server's wait_timeout (8 h)
# and any firewall's idle timeout, so a pooled connection is never one the network forgot.
POOL_RECYCLE_S = 300


class DatabaseUnavailable(Exception):
    """The database could not serve a request; carries the kind of failure and the target."""

    def __init__(self, failure: Failure, target: str) -> None:
        super().__init__(f"database {target} unavailable ({failure.kind}): {failure.detail}")
        self.failure = failure
        self.target = target


class Database:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.target = settings.db_target
        self.outages = OutageLog(self.target)
        url = URL.create(
            "mysql+pymysql",
            username=settings.db_user,
            password=settings.db_password,
            host=settings.db_host,
            port=settings.db_port,
            database=settings.db_name,
            query={"charset": "utf8mb4"},
        )
        self.engine: Engine = create_engine(
            url,
            pool_pre_ping=True,
            pool_recycle=POOL_RECYCLE_S,
            pool_size=POOL_SIZE,
            max_overflow=POOL_OVERFLOW,
            pool_timeout=POOL_WAIT_S,
            # Every use ends its transaction itself (begin() commits or rolls back), so the
            # pool's own ROLLBACK on check-in would be one more round trip, and one more place
            # where a link that just broke logs a traceback. The next checkout's ping finds a
            # dead connection anyway.
            pool_reset_on_return=None,
            connect_args=self._connect_args(),
        )
        # The login check of /readyz opens a fresh connection each time: it proves what a new
        # worker or a recycled connection would need (route, TLS, password, host grant), which
        # connections already in the pool no longer show.
        self._login_engine: Engine = create_engine(
            url,
            poolclass=NullPool,
            connect_args=self._connect_args(),
        )
        for engine in (self.engine, self._login_engine):
            event.listen(engine, "connect", self._logged_in)
        # /readyz runs its two checks side by side and waits for them at most READY_LIMIT_S;
        # a check that outlives the wait finishes here, bounded by its own timeouts.
        self._checks = ThreadPoolExecutor(READY_CHECKS, thread_name_prefix="readyz")
        self._login: Future[Failure | None] | None = None
        self._login_lock = threading.Lock()

    def _connect_args(self) -> dict[str, Any]:
        args: dict[str, Any] = {
            "connect_timeout": CONNECT_TIMEOUT_S,
            "read_timeout": READ_TIMEOUT_S,
            "write_timeout": WRITE_TIMEOUT_S,
            # TIMESTAMP columns are read in UTC whatever the server's zone is.
            "init_command": "SET time_zone = '+00:00'",
        }
        if self.settings.db_tls:
            # Verifies the chain against the lab CA and the certificate's name or IP against
            # APP_DB_HOST: a server that cannot prove it is the database gets no password.
            args["ssl"] = ssl.create_default_context(cafile=str(self.settings.db_ca_file))
        else:
            args["ssl_disabled"] = True
        return args

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        """A connection in a transaction, committed at the end of the block. A database that
        cannot be reached or breaks midway raises DatabaseUnavailable and is logged once as an
        outage; the first success afterwards logs its end."""
        try:
            with self.engine.begin() as conn:
                yield conn
        except UNAVAILABLE_ERRORS as e:
            raise self._failed(e) from e
        self.outages.succeeded()

    def check(self) -> tuple[Failure | None, float]:
        """Readiness: (None, seconds) when `SELECT 1` on a pooled connection succeeded within
        READY_LIMIT_S and a fresh login did not fail for a login reason; else (the failure,
        seconds). Answers within READY_LIMIT_S (plus scheduling) whatever the database does.

        The two checks disagree on purpose in two cases. A wrong password, a lost host grant
        or a TLS mismatch break only new logins: pooled connections go on serving until they
        are recycled, and then the site falls over. The login check reports it at once. A slow
        link (300 ms of latency) makes a fresh login take seconds, since it needs five round
        trips, while pooled queries still answer: the app serves, slowly, and stays ready.
        """
        start = time.monotonic()
        login = self._start_login()
        query = self._checks.submit(self._select_one, self.engine)
        try:
            failure = query.result(timeout=READY_LIMIT_S)
        except FutureTimeout:
            failure = Failure("timeout", f"SELECT 1 did not answer within {READY_LIMIT_S} s")
        if failure is None:
            left = READY_LIMIT_S - (time.monotonic() - start)
            try:
                login_failure = login.result(timeout=max(left, 0.0))
            except FutureTimeout:
                login_failure = None  # slow, not refused: see above
            if login_failure is not None and login_failure.kind in LOGIN_KINDS:
                failure = login_failure
        if failure is None:
            self.outages.succeeded()
        else:
            self.outages.failed(failure)
        return failure, time.monotonic() - start

    def _start_login(self) -> Future[Failure | None]:
        """The login check in flight, or a new one: never two at once per process, so a
        database that hangs logins does not pile up threads."""
        with self._login_lock:
            if self._login is None or self._login.done():
                self._login = self._checks.submit(self._select_one, self._login_engine)
            return self._login

    def _select_one(self, engine: Engine) -> Failure | None:
        try:
            with engine.begin() as conn:
                conn.execute(text("SELECT 1")).scalar_one()
        except UNAVAILABLE_ERRORS as e:
            return classify(e, tls=self.settings.db_tls)
        return None

    def _logged_in(self, dbapi_connection: Any, connection_record: Any) -> None:
        # A new connection got through TCP, TLS and the login: whatever the outage was, the
        # database takes connections again.
        self.outages.connected()

    def _failed(self, e: BaseException) -> DatabaseUnavailable:
        failure = classify(e, tls=self.settings.db_tls)
        self.outages.failed(failure)
        return DatabaseUnavailable(failure, self.target)

    def dispose(self) -> None:
        self.engine.dispose()
        self._login_engine.dispose()
        self._checks.shutdown(wait=False, cancel_futures=True)
