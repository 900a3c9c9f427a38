"""Database access: the connection pool, the readiness probe, and outage bookkeeping."""

from __future__ import annotations

import ssl
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy.exc
from sqlalchemy import Connection, Engine, create_engine, text
from sqlalchemy.engine import URL
from sqlalchemy.pool import NullPool

from .config import (
    CONNECT_TIMEOUT_S,
    READ_TIMEOUT_S,
    READY_LIMIT_S,
    WRITE_TIMEOUT_S,
    Settings,
)
from .failures import Failure, OutageLog, classify

# What a broken or unreachable database raises through SQLAlchemy. Other errors (a constraint
# violated, bad SQL) are bugs and go to the 500 handler with their traceback.
UNAVAILABLE_ERRORS = (
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    sqlalchemy.exc.DisconnectionError,
)

# Sized for gunicorn's threads per worker (gunicorn.conf.py), so a request never queues for a
# connection; the overflow covers a burst, and waiting for one gives up after a second.
POOL_SIZE = 4
POOL_OVERFLOW = 2
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
            connect_args=self._connect_args(CONNECT_TIMEOUT_S, READ_TIMEOUT_S),
        )
        # The readiness probe opens a fresh connection each time, so it proves what a new
        # worker would need (route, TLS, login), not that an old pooled connection still lives.
        self._probe: Engine = create_engine(
            url,
            poolclass=NullPool,
            connect_args=self._connect_args(READY_LIMIT_S, READY_LIMIT_S),
        )

    def _connect_args(self, connect_timeout: float, read_timeout: float) -> dict[str, Any]:
        args: dict[str, Any] = {
            "connect_timeout": connect_timeout,
            "read_timeout": read_timeout,
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
        """Run `SELECT 1` on a new connection: (None, seconds) when it succeeded within the
        readiness limit, else (the failure, seconds)."""
        start = time.monotonic()
        failure: Failure | None = None
        try:
            with self._probe.connect() as conn:
                conn.execute(text("SELECT 1")).scalar_one()
        except UNAVAILABLE_ERRORS as e:
            failure = self._failed(e).failure
        elapsed = time.monotonic() - start
        if failure is None and elapsed > READY_LIMIT_S:
            failure = Failure("timeout", f"SELECT 1 took {elapsed:.3f} s, over {READY_LIMIT_S} s")
            self.outages.failed(failure)
        elif failure is None:
            self.outages.succeeded()
        return failure, elapsed

    def _failed(self, e: BaseException) -> DatabaseUnavailable:
        failure = classify(e, tls=self.settings.db_tls)
        self.outages.failed(failure)
        return DatabaseUnavailable(failure, self.target)

    def dispose(self) -> None:
        self.engine.dispose()
        self._probe.dispose()
