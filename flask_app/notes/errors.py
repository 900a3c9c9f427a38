"""Errors as JSON: {"error": message} with the HTTP status, for every path."""

from __future__ import annotations

import logging

from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException, MethodNotAllowed, RequestEntityTooLarge

from .db import DatabaseUnavailable
from .validation import MAX_BODY

log = logging.getLogger("notes.app")

# Short messages instead of Werkzeug's paragraphs, for the statuses clients meet.
MESSAGES = {
    404: "no such resource",
    405: "method not allowed",
}


def error(status: int, message: str, **fields: object) -> tuple[Response, int]:
    return jsonify(error=message, **fields), status


def init_app(app: Flask) -> None:
    @app.errorhandler(DatabaseUnavailable)
    def database_unavailable(e: DatabaseUnavailable) -> tuple[Response, int]:
        # Already logged by the outage log, once per outage: no traceback per request.
        return error(503, "the database is unavailable", kind=e.failure.kind, target=e.target)

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(e: RequestEntityTooLarge) -> tuple[Response, int]:
        return error(413, f"the body is larger than the limit of {MAX_BODY} bytes")

    @app.errorhandler(HTTPException)
    def http_error(e: HTTPException) -> Response | tuple[Response, int]:
        status = e.code or 500
        response, _ = error(status, MESSAGES.get(status) or e.description or e.name)
        if isinstance(e, MethodNotAllowed) and e.valid_methods:
            response.headers["Allow"] = ", ".join(sorted(e.valid_methods))
        return response, status

    @app.errorhandler(Exception)
    def internal_error(e: Exception) -> tuple[Response, int]:
        log.exception("Unhandled error")
        return error(500, "internal error")
