"""Small clients that scenarios run inside emulated hosts, as `python -m scenarios.hostcmd CMD ...`
(the host's working directory is the repository). Standard library and appliances only.

  post-fill URL BODY_FILE [KEY_FILE]   POST the JSON in BODY_FILE to URL/fill, signed with the
                                       command key in KEY_FILE (appliances.commands) when given;
                                       prints the HTTP status.
  warm CONTROL TITLE ACCOUNT           log in as ACCOUNT, read TITLE's MPD and steering document,
                                       GET every segment of every rung (audio too) from every
                                       location but the origin (pull-through OCAs then hold it);
                                       prints "fetched N bad M" (bad: not 200 or SHA-256 off).
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


def warm(control: str, title: str, account: str) -> tuple[int, int]:
    """(segments fetched, bad ones) after fetching TITLE fully from every non-origin location."""
    import hashlib
    import json
    from urllib.parse import quote
    from appliances.manifest_adapter import mpd_session, steering_server

    def get(url: str, data: dict | None = None) -> bytes:
        req = urllib.request.Request(url, data=None if data is None else json.dumps(data).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.read()
    token = json.loads(get(f"{control}/login", {"account": account}))["account_token"]
    mpd = get(f"{control}/dash/{title}.mpd?account_token={quote(token)}").decode()
    steer = steering_server(mpd)
    m = mpd_session(mpd, json.loads(get(steer)) if steer else None)
    fetched = bad = 0
    for loc in m["steering"]["locations"]:
        if loc["tier"] == "origin":
            continue
        for kbps, rows in {**m["segments"], **m["audio_segments"]}.items():
            for i, (size, sha) in enumerate(rows):
                fetched += 1
                try:
                    body = get(f"{loc['base_url']}{kbps}/{i}?{loc['query']}")
                except OSError:  # URLError / HTTPError: counted, the caller judges the total
                    bad += 1
                    continue
                bad += len(body) != size or hashlib.sha256(body).hexdigest() != sha
    return fetched, bad


def main(argv: list[str]) -> int:
    if len(argv) in (3, 4) and argv[0] == "post-fill":
        print(post_fill(*argv[1:]))
    elif len(argv) == 4 and argv[0] == "warm":
        print("fetched %d bad %d" % warm(*argv[1:]))
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
