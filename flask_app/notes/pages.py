"""The HTML page: the latest notes, a form to add one, and whether the database is reachable."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, redirect, render_template, url_for
from flask_wtf import FlaskForm
from flask_wtf.csrf import CSRFError
from wtforms import TextAreaField
from wtforms.validators import ValidationError

from . import store
from .db import Database, DatabaseUnavailable
from .failures import Failure
from .validation import MAX_TEXT, InvalidNote, clean_text

bp = Blueprint("pages", __name__)


class NoteForm(FlaskForm):
    """The form carries a CSRF token (Flask-WTF) checked against the session on submit."""

    text = TextAreaField("Note")

    def validate_text(self, field: TextAreaField) -> None:
        # Browsers send a textarea's line breaks as CRLF, but its maxlength counts each as one
        # character, as the JSON API's LF counts: one line break, one character.
        data = (field.data or "").replace("\r\n", "\n")
        try:
            field.data = clean_text(data or None)
        except InvalidNote as e:
            raise ValidationError(str(e)) from e


def render_index(
    form: NoteForm,
    status: int = 200,
    error: str | None = None,
    failure: Failure | None = None,
) -> Response:
    """The page; with `failure` (the database just failed this request) it is rendered without
    asking the database again, which would wait out its timeouts a second time."""
    db: Database = current_app.extensions["notes.db"]
    notes: list[dict] = []
    if failure is None:
        try:
            with db.begin() as conn:
                notes = store.latest(conn)
        except DatabaseUnavailable as e:
            failure = e.failure
    if failure is not None:
        status = 503
    html = render_template(
        "index.html",
        form=form,
        notes=notes,
        failure=failure,
        target=db.target,
        max_text=MAX_TEXT,
        error=error,
    )
    return Response(html, status=status, mimetype="text/html")


@bp.get("/")
def index() -> Response:
    return render_index(NoteForm())


@bp.post("/notes")
def add_note() -> Response:
    form = NoteForm()
    if not form.validate_on_submit():
        message = "; ".join(form.text.errors) or "the form is incomplete"
        return render_index(form, status=400, error=message)
    try:
        with current_app.extensions["notes.db"].begin() as conn:
            store.add(conn, form.text.data)
    except DatabaseUnavailable as e:
        return render_index(form, error="not saved: the database is unavailable", failure=e.failure)
    # Post/redirect/get: reloading the page does not post the note again.
    return redirect(url_for("pages.index"), code=303)


@bp.app_errorhandler(CSRFError)
def csrf_error(e: CSRFError) -> Response:
    return render_index(NoteForm(), status=400, error=f"form rejected: {e.description}")
