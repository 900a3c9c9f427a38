"""Gunicorn settings for the notes app (run from flask_app/, see README.md).

gunicorn -c flask_app/gunicorn.conf.py --chdir flask_app 'notes:create_app()'
"""

import os

# The web host's loopback only: the gateway on the same host is the one way in.
bind = "127.0.0.1:8000"

# One worker per core of the lab's web host; threads overlap the waits on the database.
# WEB_CONCURRENCY (gunicorn's own convention) overrides the number of workers.
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_class = "gthread"
# Matches POOL_SIZE in notes/db.py: each thread has a pooled connection of its own.
threads = 4

# A request waiting on an unreachable database gives up within 2 s (notes/config.py), so a
# worker that has been silent for 30 s is stuck for another reason and is replaced.
timeout = 30
graceful_timeout = 10
# The gateway keeps connections to the app open between requests.
keepalive = 5

# Each worker builds the app itself (no preload): HUP then starts workers with new code as
# well as new settings, and no connection pool is ever shared across a fork. A bad APP_*
# variable makes every worker fail to boot: gunicorn prints the ConfigError, which names the
# variable, and stops with "Worker failed to boot" (exit 3).
preload_app = False

# Gunicorn 27 opens a control socket in the home directory by default: one fixed path that a
# second gunicorn on the machine (the test suite's beside the lab's) would fight over, and that
# nothing here uses.
control_socket_disable = True

# The app writes its own access line, as JSON with the request id (notes/logs.py); gunicorn's
# would only repeat it as text.
accesslog = None
# Gunicorn's own messages (boot, workers, errors) as JSON lines on stdout too.
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": "notes.logs.json_formatter"}},
    "handlers": {
        "stdout": {
            "class": "logging.StreamHandler",
            "formatter": "json",
            "stream": "ext://sys.stdout",
        }
    },
    # Replaces gunicorn's default root logger, whose text handler this dict leaves out.
    "root": {"handlers": ["stdout"], "level": "INFO"},
    "loggers": {
        "gunicorn.error": {"handlers": ["stdout"], "level": "INFO", "propagate": False},
        "gunicorn.access": {"handlers": [], "level": "INFO", "propagate": False},
    },
}
