"""`python -m harness.fetch_json URL`: write the body of GET URL to stdout (3 s timeout).

Services run it inside an emulated host: only that host's namespace reaches the appliances'
addresses. On failure it writes one line to stderr and exits 1.
"""
from __future__ import annotations

import sys
import urllib.request

TIMEOUT_S = 3


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m harness.fetch_json URL", file=sys.stderr)
        return 2
    try:
        with urllib.request.urlopen(args[0], timeout=TIMEOUT_S) as r:
            sys.stdout.write(r.read().decode())
    except (OSError, ValueError) as e:  # the caller gets the reason instead of JSON
        print(f"{type(e).__name__}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
