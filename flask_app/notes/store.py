"""The notes table and the queries on it; every value reaches the server as a bound
parameter."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    MetaData,
    String,
    Table,
    delete,
    insert,
    select,
)
from sqlalchemy.dialects.mysql import TIMESTAMP

# Mirrors mysql/schema.sql, which is what creates the table; this only describes it.
metadata = MetaData()
notes = Table(
    "notes",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("body", String(1000), nullable=False),
    Column("created_at", TIMESTAMP(fsp=3), nullable=False),
)

# The page and GET /api/notes show this many of the latest notes.
LATEST = 50


def note_json(row: Any) -> dict[str, Any]:
    created: datetime = row.created_at.replace(tzinfo=UTC)
    return {
        "id": row.id,
        "text": row.body,
        "created_at": created.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
    }


def latest(conn: Connection, limit: int = LATEST) -> list[dict[str, Any]]:
    rows = conn.execute(select(notes).order_by(notes.c.id.desc()).limit(limit))
    return [note_json(row) for row in rows]


def get(conn: Connection, note_id: int) -> dict[str, Any] | None:
    row = conn.execute(select(notes).where(notes.c.id == note_id)).one_or_none()
    return None if row is None else note_json(row)


def add(conn: Connection, text: str) -> dict[str, Any]:
    result = conn.execute(insert(notes).values(body=text))
    note = get(conn, int(result.inserted_primary_key[0]))
    assert note is not None, "a note inserted in this transaction is visible to it"
    return note


def remove(conn: Connection, note_id: int) -> bool:
    return conn.execute(delete(notes).where(notes.c.id == note_id)).rowcount == 1
