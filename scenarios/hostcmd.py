"""Small clients that scenarios run inside emulated hosts, as `python -m scenarios.hostcmd CMD ...`
(the host's working directory is the repository). Standard library only.

  post-fill URL BODY_FILE   POST the JSON in BODY_FILE to URL/fill; prints the HTTP status.
"""
from __future__ import annotations

import sys
import urllib.request


def post_fill(url: str, body_file: str) -> int:
    with open(body_file, "rb") as f:
        body = f.read()
    req = urllib.request.Request(url + "/fill", data=body, method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as r:
        return r.status


def main(argv: list[str]) -> int:
    if len(argv) == 3 and argv[0] == "post-fill":
        print(post_fill(argv[1], argv[2]))
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
