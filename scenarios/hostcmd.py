"""Small clients that scenarios run inside emulated hosts, as `python -m scenarios.hostcmd CMD ...`
(the host's working directory is the repository). Standard library and appliances only.

  post-fill URL BODY_FILE [KEY_FILE]   POST the JSON in BODY_FILE to URL/fill, signed with the
                                       command key in KEY_FILE (appliances.commands) when given;
                                       prints the HTTP status.
"""
from __future__ import annotations

import sys
import time
import urllib.request


def post_fill(url: str, body_file: str, key_file: str | None = None) -> int:
    with open(body_file, "rb") as f:
        body = f.read()
    headers = {"Content-Type": "application/json"}
    if key_file is not None:
        from appliances import commands, tokens
        headers.update(commands.sign(tokens.load_key(key_file), "POST",
                                     commands.target_of(url + "/fill"), body, time.time()))
    req = urllib.request.Request(url + "/fill", data=body, method="POST", headers=headers)
    with urllib.request.urlopen(req, timeout=5) as r:
        return r.status


def main(argv: list[str]) -> int:
    if len(argv) in (3, 4) and argv[0] == "post-fill":
        print(post_fill(*argv[1:]))
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
