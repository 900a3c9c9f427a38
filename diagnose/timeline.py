"""A drill's timeline: its own events, and what the gateway and the app logged meanwhile.

The gateway writes one access line per request (`edge_gateway::access`), as JSON or as
tracing's human format, whichever `[log] format` says; both are read here. The app
writes JSON lines (`ts`, `message`, `kind`, ...); its outage lines mark when it saw the
database go and come back.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def iso(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def hms(ts: float | None) -> str:
    return "-" if ts is None else datetime.fromtimestamp(ts, UTC).strftime("%H:%M:%S.%f")[:-3]


def parse_ts(text: str) -> float | None:
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None


@dataclass
class Event:
    at: float
    source: str  # drill | prober | gateway | app | readyz | diagnosis
    what: str

    def as_dict(self) -> dict[str, Any]:
        return {"at": iso(self.at), "source": self.source, "what": self.what}


@dataclass
class Timeline:
    name: str
    events: list[Event] = field(default_factory=list)
    marks: dict[str, float] = field(default_factory=dict)

    def add(self, source: str, what: str, at: float, mark: str | None = None) -> None:
        self.events.append(Event(at, source, what))
        if mark and mark not in self.marks:
            self.marks[mark] = at

    def sorted(self) -> list[Event]:
        return sorted(self.events, key=lambda e: e.at)


_TEXT_FIELD = re.compile(r'([\w.]+)=("(?:[^"\\]|\\.)*"|\S+)')
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_HUMAN_ACCESS = re.compile(r"(?:edge_gateway::access: |: )Request (?=[\w.]+=)")


def _gateway_line(line: str) -> dict[str, Any] | None:
    """One access line of the gateway as a dict, from JSON or the human format."""
    line = _ANSI.sub("", line).strip()
    if not line:
        return None
    if line.startswith("{"):
        try:
            obj = json.loads(line)
        except ValueError:
            return None
        if "access" not in str(obj.get("target", "")):
            return None
        fields = {**obj, **obj.get("fields", {})}
        fields["ts"] = parse_ts(str(obj.get("timestamp", "")))
        return fields
    # Human format: `TS  INFO [target: ]span{...}: Request key=value ...`, the target shown
    # or not as the gateway's subscriber is set up; the access event's message is "Request".
    match = _HUMAN_ACCESS.search(line)
    if not match:
        return None
    fields: dict[str, Any] = {"ts": parse_ts(line.split()[0])}
    for key, value in _TEXT_FIELD.findall(line[match.end() :]):
        fields[key] = value.strip('"')
    return fields


def _log_lines(path: Path) -> list[str]:
    """A log's lines; none when it cannot be read (not written yet, or gone)."""
    try:
        return path.read_text(errors="replace").splitlines()
    except OSError:
        return []


@dataclass
class AccessRecord:
    at: float
    status: int
    request_id: str | None
    decision: str | None
    error: str | None
    path: str = ""


def gateway_records(
    path: Path, since: float, until: float, client: str | None = None, marker: str | None = None
) -> list[AccessRecord]:
    """The gateway's access records in a time window, from one client address and with a
    marker in the request's path (the drill client's query string), when given.

    Not by request id: the gateway keeps a client's X-Request-Id only from trusted proxies.
    """
    records = []
    for line in _log_lines(path):
        fields = _gateway_line(line)
        if not fields or fields.get("ts") is None:
            continue
        at = fields["ts"]
        if not since <= at <= until:
            continue
        rid = fields.get("request_id")
        if client and str(fields.get("client.addr", "")).split(":")[0] != client:
            continue
        if marker and marker not in str(fields.get("http.path", "")):
            continue
        try:
            status = int(fields.get("http.status", 0))
        except (TypeError, ValueError):
            status = 0
        records.append(
            AccessRecord(
                at,
                status,
                rid,
                fields.get("decision"),
                fields.get("error.kind"),
                str(fields.get("http.path", "")),
            )
        )
    return records


def app_events(path: Path, since: float, until: float) -> list[tuple[float, dict[str, Any]]]:
    """The app's outage lines, and its failed requests, in a time window."""
    found = []
    for line in _log_lines(path):
        if not line.startswith("{"):
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        at = parse_ts(str(obj.get("ts", "")))
        if at is None or not since <= at <= until:
            continue
        message = str(obj.get("message", ""))
        status = obj.get("status")
        if "outage" in message.lower() or (isinstance(status, int) and status >= 500):
            found.append((at, obj))
    return found
