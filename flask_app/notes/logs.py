"""JSON log lines on stdout: one per request, carrying the gateway's X-Request-Id."""

from __future__ import annotations

import logging
import re
import sys
import time
import uuid
from typing import IO

from flask import Flask, Response, g, request
from pythonjsonlogger.json import JsonFormatter

access_log = logging.getLogger("notes.access")

# Every line has ts (UTC, ISO 8601, microseconds), level, logger, message and pid, then the
# event's own fields.
FORMAT = ["levelname", "name", "message", "process"]
RENAME = {"levelname": "level", "name": "logger", "process": "pid"}

# A request id from outside is logged and echoed back: up to 128 visible ASCII characters,
# the gateway's own limit (it makes 32 hex digits), so one id follows a request end to end.
REQUEST_ID = re.compile(r"[\x21-\x7e]{1,128}")
_HANDLER_NAME = "notes-json"


def json_formatter() -> logging.Formatter:
    return JsonFormatter(FORMAT, rename_fields=RENAME, timestamp="ts")


def configure(stream: IO[str] | None = None, level: int = logging.INFO) -> None:
    """Send the app's loggers ("notes.*") to `stream` (stdout) as JSON lines. Calling it
    again replaces the handler instead of adding a second one."""
    logger = logging.getLogger("notes")
    for handler in list(logger.handlers):
        if handler.get_name() == _HANDLER_NAME:
            logger.removeHandler(handler)
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(json_formatter())
    logger.addHandler(handler)
    logger.setLevel(level)
    # Gunicorn's own loggers have their JSON handler from gunicorn.conf.py; the root logger
    # has none here, so nothing is printed twice.
    logger.propagate = False


def init_app(app: Flask) -> None:
    app.before_request(_start)
    app.after_request(_finish)


def _start() -> None:
    g.start = time.monotonic()
    given = request.headers.get("X-Request-Id", "")
    g.request_id = given if REQUEST_ID.fullmatch(given) else uuid.uuid4().hex


def _finish(response: Response) -> Response:
    request_id = g.get("request_id") or uuid.uuid4().hex
    response.headers["X-Request-Id"] = request_id
    start = g.get("start", time.monotonic())
    access_log.info(
        "Request",
        extra={
            "request_id": request_id,
            "remote_addr": request.remote_addr,
            "method": request.method,
            "path": request.path,
            "status": response.status_code,
            "duration_ms": round((time.monotonic() - start) * 1000, 1),
            "bytes": response.calculate_content_length(),
            "user_agent": request.user_agent.string or None,
        },
    )
    return response
