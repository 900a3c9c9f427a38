"""The notes app: a Flask app factory over MySQL/MariaDB (see flask_app/README.md)."""

from __future__ import annotations

from flask import Flask
from flask_wtf.csrf import CSRFProtect
from werkzeug.middleware.proxy_fix import ProxyFix

from . import api, body, errors, health, logs, pages
from .config import Settings
from .db import Database
from .validation import MAX_BODY

__all__ = ["create_app"]


def create_app(settings: Settings | None = None) -> Flask:
    """Build the app from `settings`, or from the APP_* environment variables when None.
    Raises config.ConfigError, naming the variable, when one is missing or bad."""
    settings = settings or Settings.from_env()
    logs.configure()

    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=settings.secret_key,
        MAX_CONTENT_LENGTH=MAX_BODY,
        # The session cookie only carries the CSRF secret; the site is served over HTTPS by
        # the gateway, so the cookie is never sent in clear, nor to other sites' requests.
        SESSION_COOKIE_SECURE=True,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        # The form is valid as long as the session; a page left open for hours still posts.
        WTF_CSRF_TIME_LIMIT=None,
    )
    # The before-request hooks run in this order: the request id and start time first, so
    # that every answer is logged with them; then the body limit, before anything (the CSRF
    # check reads the form) reads a chunked body whose size is not yet known.
    logs.init_app(app)
    app.before_request(body.refuse_oversized_stream)
    # Exactly one proxy (the gateway) sits in front: trust one X-Forwarded-For hop, so
    # remote_addr is the client the gateway saw, and X-Forwarded-Proto, so external URLs are
    # https://. The Host header is the gateway's to pass through; X-Forwarded-Host is not read.
    app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1, x_proto=1)  # type: ignore[method-assign]

    db = Database(settings)
    app.extensions["notes.db"] = db

    csrf = CSRFProtect(app)
    # The JSON API takes no form posts: it answers 415 to any body that is not
    # application/json, which a cross-site form cannot send without a CORS preflight that
    # this app never grants. So CSRF tokens guard the HTML form only.
    csrf.exempt(api.bp)

    errors.init_app(app)
    app.register_blueprint(health.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(pages.bp)
    return app
