"""The JSON API: /api/notes and /api/notes/<id>."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify, request, url_for
from werkzeug.exceptions import UnsupportedMediaType

from . import store
from .db import Database
from .errors import error
from .validation import InvalidNote, note_from_json

bp = Blueprint("api", __name__, url_prefix="/api")


def db() -> Database:
    return current_app.extensions["notes.db"]


@bp.get("/notes")
def list_notes() -> Response:
    with db().begin() as conn:
        return jsonify(notes=store.latest(conn))


@bp.post("/notes")
def create_note() -> tuple[Response, int] | Response:
    if not request.is_json:
        raise UnsupportedMediaType("the body must be JSON, sent as Content-Type: application/json")
    # Parsed here rather than by get_json(silent=True), whose None stands for both a body that
    # does not parse and the valid JSON `null`.
    try:
        body = current_app.json.loads(request.get_data())
    except RecursionError:
        return error(400, 'the body is nested too deeply for a note {"text": ...}')
    except ValueError as e:  # not JSON, or not UTF-8 (or UTF-16/32) text
        raise UnsupportedMediaType("the body is not valid JSON") from e
    try:
        text = note_from_json(body)
    except InvalidNote as e:
        return error(400, str(e))
    with db().begin() as conn:
        note = store.add(conn, text)
    response = jsonify(note)
    response.status_code = 201
    response.headers["Location"] = url_for("api.get_note", note_id=note["id"])
    return response


@bp.get("/notes/<int:note_id>")
def get_note(note_id: int) -> tuple[Response, int] | Response:
    with db().begin() as conn:
        note = store.get(conn, note_id)
    if note is None:
        return error(404, f"note {note_id} not found")
    return jsonify(note)


@bp.delete("/notes/<int:note_id>")
def delete_note(note_id: int) -> tuple[Response, int] | Response:
    with db().begin() as conn:
        removed = store.remove(conn, note_id)
    if not removed:
        return error(404, f"note {note_id} not found")
    return Response(status=204)
