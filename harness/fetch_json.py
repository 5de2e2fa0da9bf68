"""`python -m harness.fetch_json URL [--ca-file PATH]`: write the body of GET URL to stdout
(3 s timeout).

Services run it inside an emulated host: only that host's namespace reaches the appliances'
addresses. An https URL is checked against --ca-file (the lab CA; default the system's CAs),
including the IP SAN when the URL names an address. On failure it writes one line to stderr
(a certificate problem is named there) and exits 1; bad usage exits 2.
"""
from __future__ import annotations

import sys
import urllib.request

from appliances.tls import client_context

TIMEOUT_S = 3
USAGE = "usage: python -m harness.fetch_json URL [--ca-file PATH]"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) not in (1, 3) or (len(args) == 3 and args[1] != "--ca-file"):
        print(USAGE, file=sys.stderr)
        return 2
    try:
        ctx = client_context(args[2]) if len(args) == 3 else None
        with urllib.request.urlopen(args[0], timeout=TIMEOUT_S, context=ctx) as r:
            sys.stdout.write(r.read().decode())
    except (OSError, ValueError) as e:  # the caller gets the reason instead of JSON
        print(f"{type(e).__name__}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
