"""`python -m diagnose`: which layer between the app and its database (or the internet
and the app) is broken, the evidence, and the command that fixes it."""

from __future__ import annotations

import argparse
import json
import os
import sys

from . import lab


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m diagnose",
        description="Diagnose the notes deployment layer by layer: name, route, ping, TCP, "
        "MySQL greeting, TLS login, SELECT 1, the app's /readyz, the public URL. Settings "
        "default to those of the running app (its APP_DB_* environment).",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument(
        "--lab",
        action="store_true",
        help="in the lab: run on the web host, look at db, router and the "
        "supervisor too, check the public URL from office",
    )
    p.add_argument("--db-host", help="database host (default: APP_DB_HOST or 10.0.2.10)")
    p.add_argument("--db-port", type=int, help="database port (default: APP_DB_PORT, 3306)")
    p.add_argument("--db-user", help="database user (default: APP_DB_USER, app)")
    p.add_argument("--db-name", help="database (default: APP_DB_NAME, notes)")
    p.add_argument("--password-file", help="the app's password file (APP_DB_PASSWORD_FILE)")
    p.add_argument("--ca-file", help="CA of the database's certificate (APP_DB_CA_FILE)")
    p.add_argument(
        "--app-addr", default="10.0.1.10", help="the app host's address, as MySQL's grants name it"
    )
    p.add_argument("--readyz-url", default="http://127.0.0.1:8000/readyz")
    p.add_argument(
        "--gateway-url", default="http://10.0.1.10/", help="the gateway on this host; empty to skip"
    )
    p.add_argument(
        "--public-url", default="https://app.example.com/", help="the public URL; empty to skip"
    )
    p.add_argument("--public-ca", help="CA file for the public certificate (default: system)")
    p.add_argument("--public-from", help="network namespace to check the public URL from")
    p.add_argument("--timeout", type=float, default=1.5, help="per-probe timeout, seconds")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    defaults = parser().parse_args([])
    lab_targets = (
        args.db_host is None
        or args.gateway_url == defaults.gateway_url
        or args.public_url == defaults.public_url
    )
    if not args.lab and lab_targets and lab.lab_present() and lab.current_netns() is None:
        # This machine holds the lab, and this process is outside it: the default targets
        # (10.0.2.10, 10.0.1.10) are lab addresses that only exist inside its namespaces.
        print(
            "diagnose: this machine runs the lab; use --lab (make diagnose), or run inside "
            "a lab host with ip netns exec",
            file=sys.stderr,
        )
        return 2
    if args.lab:
        if not lab.lab_present():
            print(
                "diagnose: --lab, but the lab is not up (no db/web namespace): make up",
                file=sys.stderr,
            )
            return 2
        if lab.current_netns() != "web":
            # The checks of the app host run on the app host.
            cmd = [
                "ip",
                "netns",
                "exec",
                "web",
                sys.executable,
                "-m",
                "diagnose",
                *(argv if argv is not None else sys.argv[1:]),
            ]
            os.chdir(lab.ROOT)
            os.execvp(cmd[0], cmd)
        args.public_from = args.public_from or "office"
        args.public_ca = args.public_ca or lab.public_ca()
    # Imported after the hop into `web`, so that it is imported once.
    from . import check

    settings = check.load_settings(args)
    report = check.run(settings)
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        print(render(report))
    return 0 if report.verdict.status == "healthy" else 1


def render(report) -> str:  # a check.Report
    v = report.verdict
    lines = [v.line(), ""]
    if v.cannot_tell:
        lines.append("cannot tell apart: " + " / ".join(v.cannot_tell))
    lines += ["evidence:"] + [f"  {e}" for e in v.evidence]
    if v.fix:
        lines += ["", "fix:"] + [f"  {f}" for f in v.fix]
    lines += [
        "",
        f"({report.seconds:.2f}s; target {report.settings.db.host}:{report.settings.db.port})",
    ]
    lines += [f"note: {n}" for n in report.notes]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
