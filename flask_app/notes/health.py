"""Liveness (/healthz) and readiness (/readyz) for the gateway, the supervisor and Prometheus."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify

from .db import Database

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    """The process runs and answers; the database is not touched."""
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz() -> tuple[Response, int]:
    """Ready when `SELECT 1` succeeds within a second and a new login is not refused
    (Database.check says how the two checks combine)."""
    db: Database = current_app.extensions["notes.db"]
    failure, elapsed = db.check()
    fields = {"target": db.target, "elapsed_ms": round(elapsed * 1000, 1)}
    if failure is None:
        return jsonify(status="ready", **fields), 200
    body = jsonify(status="unavailable", kind=failure.kind, error=failure.detail, **fields)
    return body, 503
