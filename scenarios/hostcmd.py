"""Small clients that scenarios run inside emulated hosts, as `python -m scenarios.hostcmd CMD ...`
(the host's working directory is the repository). Standard library only.

  post-fill URL BODY_FILE   POST the JSON in BODY_FILE to URL/fill; prints the HTTP status.
  warm URLS_JSON            HEAD each URL (6 at a time); prints {"n": ..., "ok": ...}. A HEAD
                            miss makes a proxy-mode OCA pull and store the object, sending no
                            body (no egress counted).
"""
from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor


def post_fill(url: str, body_file: str) -> int:
    with open(body_file, "rb") as f:
        body = f.read()
    req = urllib.request.Request(url + "/fill", data=body, method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as r:
        return r.status


def head(url: str, attempts: int = 5) -> int:
    """HEAD status of url; a 503 (the OCA is at its stream limit) is retried shortly."""
    for _ in range(attempts):
        try:
            with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=60) as r:
                return r.status
        except urllib.error.HTTPError as e:
            if e.code != 503:
                return e.code
            time.sleep(0.2)
    return 503


def warm(urls: list[str]) -> dict:
    with ThreadPoolExecutor(6) as ex:
        codes = list(ex.map(head, urls))
    return {"n": len(codes), "ok": sum(c == 200 for c in codes)}


def main(argv: list[str]) -> int:
    if len(argv) == 3 and argv[0] == "post-fill":
        print(post_fill(argv[1], argv[2]))
    elif len(argv) == 2 and argv[0] == "warm":
        print(json.dumps(warm(json.loads(argv[1]))))
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
