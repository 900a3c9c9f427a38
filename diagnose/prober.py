"""A steady client during a drill: one request every interval, each result a JSON line.

Run on an internet host (`ip netns exec office python -m diagnose.prober ...`) so its
requests cross the router and the gateway like a user's. Each request carries its id as an
X-Request-Id and in the query string (`req=ID`): the gateway keeps a client's X-Request-Id only
from trusted proxies, and logs the query, so its access lines are matched to the requests by
that. It stops by itself after --max-seconds, or at SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from datetime import UTC, datetime

import requests


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m diagnose.prober")
    p.add_argument("url")
    p.add_argument("--ca", help="CA file for the certificate")
    p.add_argument("--interval", type=float, default=0.2)
    p.add_argument("--timeout", type=float, default=2.0)
    p.add_argument("--max-seconds", type=float, default=180.0)
    p.add_argument("--id-prefix", default="drill")
    args = p.parse_args()

    stop = False

    def on_term(_sig: int, _frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    end = time.monotonic() + args.max_seconds
    n = 0
    while not stop and time.monotonic() < end:
        n += 1
        rid = f"{args.id_prefix}-{n:05d}"
        sent = time.time()
        row: dict[str, object] = {"id": rid, "at": sent}
        try:
            # A new connection each time, as a new user would open: a stale keep-alive
            # connection would hide a broken path.
            resp = requests.get(
                args.url + ("&" if "?" in args.url else "?") + f"req={rid}",
                headers={"X-Request-Id": rid, "Connection": "close"},
                timeout=args.timeout,
                verify=args.ca or True,
                allow_redirects=False,
            )
            row.update(status=resp.status_code, ok=resp.status_code == 200)
        except requests.RequestException as exc:
            row.update(status=None, ok=False, error=type(exc).__name__)
        row["seconds"] = round(time.time() - sent, 3)
        row["iso"] = datetime.fromtimestamp(sent, UTC).isoformat(timespec="milliseconds")
        print(json.dumps(row), flush=True)
        time.sleep(max(0.0, args.interval - (time.time() - sent)))
    sys.exit(0)


if __name__ == "__main__":
    main()
