"""The app's settings, read once from APP_* environment variables (see flask_app/README.md)."""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

# Timeouts of every database connection, in seconds. A request that needs the database must
# fail within 2 s while it is down. The slowest paths start with a pooled connection whose peer
# went silent: its pre-ping waits one read timeout, then the reconnect waits one connect timeout
# (packets dropped) or one more read timeout (a hung server accepts TCP but never greets), so
# READ + max(CONNECT, READ) = 1.8 s, under 2 s with room for scheduling delays. Notes queries
# are single-row or LIMITed reads and writes that take milliseconds; 0.8 s leaves room for a
# slow fsync and still fails fast.
CONNECT_TIMEOUT_S = 1.0
READ_TIMEOUT_S = 0.8
WRITE_TIMEOUT_S = 0.8
# /readyz is ready only when `SELECT 1` succeeds within this long, and answers within it.
READY_LIMIT_S = 1.0


class ConfigError(Exception):
    """An APP_* variable is missing or bad; the message names the variable and the file."""


@dataclass(frozen=True)
class Settings:
    db_host: str
    db_port: int
    db_user: str
    db_password: str
    db_name: str
    db_tls: bool
    db_ca_file: Path | None
    secret_key: bytes

    @property
    def db_target(self) -> str:
        """The database as logs and /readyz name it: host:port."""
        return f"{self.db_host}:{self.db_port}"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        tls = _flag(env, "APP_DB_TLS", default=True)
        ca_file = env.get("APP_DB_CA_FILE") or None
        if tls and ca_file is None:
            raise ConfigError(
                "APP_DB_CA_FILE is not set: with APP_DB_TLS=on the app verifies the database's"
                " certificate and needs the CA that signed it"
            )
        if ca_file is not None:
            _check_ca(ca_file)
        return cls(
            db_host=env.get("APP_DB_HOST", "10.0.2.10"),
            db_port=_port(env, "APP_DB_PORT", default=3306),
            db_user=env.get("APP_DB_USER", "app"),
            db_password=_read_text(env, "APP_DB_PASSWORD_FILE"),
            db_name=env.get("APP_DB_NAME", "notes"),
            db_tls=tls,
            db_ca_file=Path(ca_file) if ca_file else None,
            secret_key=_read_secret(env, "APP_SECRET_KEY_FILE"),
        )


def _check_ca(path: str) -> None:
    if not Path(path).is_file():
        raise ConfigError(f"APP_DB_CA_FILE={path}: no such file")
    try:
        ssl.create_default_context(cafile=path)
    except ssl.SSLError as e:
        raise ConfigError(f"APP_DB_CA_FILE={path}: no PEM certificate in it ({e.reason})") from e


def _flag(env: Mapping[str, str], name: str, *, default: bool) -> bool:
    value = env.get(name)
    if value is None or value == "":
        return default
    if value.lower() in ("on", "true", "1", "yes"):
        return True
    if value.lower() in ("off", "false", "0", "no"):
        return False
    raise ConfigError(f"{name}={value!r}: expected on or off")


def _port(env: Mapping[str, str], name: str, *, default: int) -> int:
    value = env.get(name)
    if value is None or value == "":
        return default
    if not value.isdigit() or not 0 < int(value) < 65536:
        raise ConfigError(f"{name}={value!r}: expected a TCP port number (1-65535)")
    return int(value)


def _read_text(env: Mapping[str, str], name: str) -> str:
    data = _read_secret(env, name)
    try:
        return data.decode()
    except UnicodeDecodeError as e:
        raise ConfigError(f"{name}={env[name]}: not UTF-8 text (byte {e.start + 1})") from e


def _read_secret(env: Mapping[str, str], name: str) -> bytes:
    path = env.get(name)
    if not path:
        raise ConfigError(f"{name} is not set: it names the file that holds the secret")
    try:
        data = Path(path).read_bytes().strip()
    except OSError as e:
        raise ConfigError(f"{name}={path}: cannot read it ({e.strerror})") from e
    if not data:
        raise ConfigError(f"{name}={path}: the file is empty")
    return data
