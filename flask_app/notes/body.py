"""The request body limit (MAX_BODY) for bodies sent without Content-Length as well."""

from __future__ import annotations

from flask import request
from werkzeug.exceptions import RequestEntityTooLarge


def refuse_oversized_stream() -> None:
    """Flask refuses a Content-Length over MAX_CONTENT_LENGTH before reading anything, but a
    chunked body it silently cuts at the limit: the view would see a prefix of what was sent,
    which may even parse. So such a body is read here, up to the limit, and refused when the
    client sent more. The body stays cached for the view and the form parser."""
    if request.content_length is not None or not request.environ.get("wsgi.input_terminated"):
        return
    request.get_data()
    if request.environ["wsgi.input"].read(1):
        raise RequestEntityTooLarge()
