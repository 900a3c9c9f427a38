"""A post-mortem draft in Markdown, written from a drill's timeline and impact.

The facts (times, counts, the verdict) come from the drill; the root cause and action
items for each fault are written here once, for a person to edit into the published one.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from .timeline import hms, iso

if TYPE_CHECKING:
    from .drills import DrillResult
    from .faults import Fault

TEMPLATES = Path(__file__).parent / "templates"

# Per fault: what broke and why it hurt, and what would stop it happening again.
STORIES: dict[str, tuple[str, list[str]]] = {
    "mysql-stopped": (
        (
            "The MySQL service on db (10.0.2.10) was stopped. The host stayed up and answered "
            "ping, but nothing listened on 3306, so every new connection was refused (TCP reset)"
            " and every page that reads notes failed with 503."
        ),
        [
            "Alert on the app's readiness (5xx rate and /readyz), not only on host liveness.",
            "Require a change record for stopping production services.",
            "Run a replica so a stopped primary is a failover, not an outage.",
        ],
    ),
    "mysql-crashed": (
        (
            "mysqld was killed with SIGKILL. The supervisor restarted it; InnoDB crash recovery "
            "ran and the server listened again, and the app's pool reconnected by itself."
        ),
        [
            "Find what killed mysqld (OOM killer: dmesg; an operator: the audit log).",
            "Alert on restarts of mysqld even when it comes back by itself.",
        ],
    ),
    "mysql-localhost": (
        (
            "MySQL was restarted by hand with bind-address = 127.0.0.1. It ran, but listened on "
            "loopback only, so the app host's connections to 10.0.2.10:3306 were refused."
        ),
        [
            "Start MySQL only through its unit, with the configuration in the repository.",
            "Check after each restart that 10.0.2.10:3306 answers from the web host.",
        ],
    ),
    "db-firewall-drop": (
        (
            "A rule on the db host's firewall dropped TCP 3306 from the app host. Ping still "
            "worked; connections hung until the app's connect timeout."
        ),
        [
            "Keep host firewall rules in the repository and apply them as they are.",
            "Alert on readiness timeouts, which a silent drop produces.",
        ],
    ),
    "db-firewall-reject": (
        (
            "A rule on the db host's firewall rejected TCP 3306 from the app host with ICMP "
            "admin-prohibited: connections failed at once, with 'no route to host'."
        ),
        [
            "Keep host firewall rules in the repository and apply them as they are.",
            "Review firewall changes against the app's required flows.",
        ],
    ),
    "route-missing": (
        (
            "The web host lost its default route, the only route to the private subnet: its "
            "packets to 10.0.2.10 had nowhere to go, and neither had its replies to clients."
        ),
        [
            "Manage routes with the host's network configuration, never by hand.",
            "Alert on the app's readiness, which names the missing route at once.",
        ],
    ),
    "forwarding-off": (
        (
            "IP forwarding was turned off on the router. Both subnets and the internet still "
            "reached the router itself, but nothing crossed it: the app lost its database and "
            "the internet lost the app."
        ),
        [
            "Keep the router's sysctls in nat/router.sysctl.conf and check them after changes.",
            "Probe a path across the router, not only the router's own address.",
        ],
    ),
    "dnat-missing": (
        (
            "The router's DNAT of 198.51.100.10:80,443 to the web host was removed. The gateway "
            "and the app were healthy, but no request from the internet reached them."
        ),
        [
            "Apply the router's rules only from the repository (iptables-restore).",
            "Probe the public URL from outside, since inside checks stay green.",
        ],
    ),
    "wrong-password": (
        (
            "The app's MySQL password was changed on the server but not in the app's password "
            "file. Existing sessions were ended, and every new login failed with 1045."
        ),
        [
            "Rotate the password in both places at once, through provisioning.",
            "Let old and new passwords overlap during a rotation (MySQL 8's dual passwords).",
        ],
    ),
    "host-not-allowed": (
        (
            "The app's MySQL account was changed to another host. MySQL answered the app host's "
            "connections with error 1130 instead of a greeting."
        ),
        [
            "Keep grants in mysql/grants.sql and apply them only from there.",
            "Test the app's login from the app host after every grant change.",
        ],
    ),
    "mysql-no-tls": (
        (
            "The app was restarted with APP_DB_TLS=off. The server requires TLS "
            "(require_secure_transport and REQUIRE SSL), so it refused every login; MariaDB says "
            "1045, the same as a wrong password."
        ),
        [
            "Keep the app's environment in its unit file only; no hand-started processes.",
            "Have the app refuse to start with TLS off outside a drill.",
        ],
    ),
    "flask-stopped": (
        (
            "gunicorn was stopped on the web host. The gateway was up and answered every request "
            "with 502, since nothing listened on 127.0.0.1:8000."
        ),
        [
            "Alert on the gateway's upstream errors.",
            "Run the app with restart-on-failure and a watchdog.",
        ],
    ),
    "allowlist-wrong": (
        (
            "The gateway's allowlist was changed to a range without the office (203.0.113.0/28)."
            " Every request from the office got 403; everything behind the gateway was healthy."
        ),
        [
            "Validate allowlist changes against the known client ranges before a reload.",
            "Alert on a rise of 403 from the gateway.",
        ],
    ),
    "db-latency": (
        (
            "The db link had 300 ms of delay and 5 % loss. Nothing was down: every query worked, "
            "slowly, and requests took several round trips longer."
        ),
        [
            "Alert on query latency (p99), not only on errors.",
            "Keep the app's timeouts above the link's worst round trip, below the user's patience.",
        ],
    ),
}


def render(fault: Fault, result: DrillResult) -> str:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        undefined=StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    story, actions = STORIES.get(fault.name, ("(to be written)", []))
    marks = result.timeline.marks
    events = [
        {"time": hms(e.at), "source": e.source, "what": e.what} for e in result.timeline.sorted()
    ]
    detect = None
    if "injected" in marks:
        detected = min(
            (marks[k] for k in ("readyz_turned", "first_failed") if k in marks), default=None
        )
        if detected is not None:
            detect = round(detected - marks["injected"], 1)
    context: dict[str, Any] = {
        "fault": fault,
        "result": result,
        "verdict": result.verdict,
        "impact": result.impact,
        "events": events,
        "story": story,
        "actions": actions,
        "started": iso(marks.get("injected")),
        "detect_seconds": detect,
        "heal_seconds": round(marks["recovered"] - marks["injected"], 1)
        if "recovered" in marks and "injected" in marks
        else None,
        "diagnosis_seconds": round(result.diagnosis_seconds, 1),
    }
    return env.get_template("postmortem.md.j2").render(**context)
