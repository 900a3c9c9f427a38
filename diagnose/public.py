"""The public URL checked from where this runs, as JSON lines for a caller elsewhere.

The diagnosis runs this inside an internet-side lab host (`ip netns exec office ...`), so
the certificate, the redirect and the access decision are the ones a client there gets.
"""

from __future__ import annotations

import argparse
import json

from .httpchecks import public


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m diagnose.public")
    parser.add_argument("url")
    parser.add_argument("--ca", help="CA file the certificate should chain to")
    parser.add_argument("--timeout", type=float, default=2.0)
    args = parser.parse_args()
    rows = [res.as_dict() for res in public(args.url, args.ca, args.timeout)]
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
