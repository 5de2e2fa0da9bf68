"""dash.js in headless Chromium as a second, independent player: one session, logged in the
Python player's columns.

    python -m appliances.realplayer --control URL --viewer NAME --title T \
      --chunk-log FILE --session-log FILE [--screenshot PNG] [--max-wall-s S]

The shell logs in, loads ocalab/web/static/player.html?mpd=<the control plane's MPD> from a
127.0.0.1 server in Debian's chromium (Playwright, executable_path; --no-sandbox as root,
autoplay without a gesture), waits for the page's `window.ocalab.done`, and collects every
segment response Chromium received (Playwright keeps the bodies). Invariants:
- every segment body Chromium received (initialization fetches included) is checked against
  the MPD's integrity SupplementalProperty; a mismatch counts in hash_failures and fails the
  session; a non-2xx, cut or refused request counts in failed_attempts and, as in the Python player, fails
  the session only if a segment then goes unplayed (dash.js retries at the next location);
- chunk rows (player.CHUNK_FIELDS) are the page's completed video media-segment requests in
  order (audio segments are integrity-checked like video but are not chunk rows: the ABR and QoE
  columns describe the video ladder);
  index and kbps come from the URL (the /v/<title>/<kbps>/<index> contract), `node` from the
  response's X-Ocalab-Node, `server` the MPD location whose BaseURL the URL starts with;
  `fallback` is 1 when that is not the location the steering document ranked first;
- the session summary has the Python player's keys (and dashjs_version), and is POSTed to
  <control>/telemetry like the Python player's;
- the summary's video_decoded_bytes and audio_decoded_bytes are Chromium's decoder counters;
- session QoE is qoe.summarize over the last rung fetched for each index, with the page's stalls
  (waiting -> playing after the first frame) and startup (page start -> first 'playing').
Exit status: 0 when the session is ok, 4 (player.SESSIONS_FAILED) when not, 2 on bad arguments.
"""
from __future__ import annotations

import argparse
import csv
import functools
import hashlib
import http.server
import json
import os
import shutil
import sys
import threading
import time
import urllib.request
from pathlib import Path
from urllib.parse import quote, urlsplit

from appliances.httpcore import NODE_HEADER
from appliances.manifest_adapter import mpd_session, steering_server
from appliances.player import CHUNK_FIELDS, SESSIONS_FAILED
from appliances.qoe import summarize

CHROMIUM = "/usr/bin/chromium"
STATIC = Path(__file__).resolve().parent.parent / "ocalab" / "web" / "static"
DASHJS = STATIC / "vendor" / "dash.all.min.js"
ABR_NAME = "dashjs"
DECODED_KEYS = ("video_decoded_bytes", "audio_decoded_bytes")
# --abr -> dash.js's streaming.abr.ABRStrategy (dynamic switches between BOLA and throughput)
ABR_RULES = {"dynamic": "abrDynamic", "bola": "abrBola", "throughput": "abrThroughput"}


def missing_requirement() -> str:
    """Why this machine cannot run the real player ("" when it can)."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (make setup)"
    if shutil.which(CHROMIUM) is None:
        return f"{CHROMIUM} is not installed (Debian package chromium; make setup)"
    if not DASHJS.is_file():
        return f"{DASHJS} is missing (make web-assets)"
    return ""


def segment_of(url: str, title: str) -> tuple[int, int] | None:
    """(kbps, index) of a /v/<title>/<kbps>/<index> URL, else None."""
    parts = urlsplit(url).path.split("/")
    if len(parts) < 5 or parts[-4:-2] != ["v", title]:
        return None
    try:
        return int(parts[-2]), int(parts[-1])
    except ValueError:
        return None


def check_bodies(fetched: list[tuple[str, int, bytes]], title: str, table: dict) -> dict:
    """Integrity of every segment response (url, status, body or None when the transfer did not
    complete): counts and the failures."""
    out = {"checked": 0, "hash_failures": 0, "failed_attempts": 0, "failures": []}
    for url, status, body in fetched:
        seg = segment_of(url, title)
        if seg is None:
            continue
        if not 200 <= status < 300 or body is None:
            out["failed_attempts"] += 1
            out["failures"].append(f"HTTP {status}{'' if body is not None else ' cut short'} {url}")
            continue
        kbps, index = seg
        rows = table.get(str(kbps), [])
        want = rows[index] if index < len(rows) else None
        out["checked"] += 1
        if want is None or [len(body), hashlib.sha256(body).hexdigest()] != list(want):
            out["hash_failures"] += 1
            out["failures"].append(f"integrity {url}")
    return out


def _location_of(url: str, locations: list[dict]) -> dict:
    for loc in locations:
        if url.startswith(loc["base_url"]):
            return loc
    return {"pathway": urlsplit(url).netloc, "tier": "unknown"}


def chunk_rows(rec: dict, viewer: str, title: str, locations: list[dict],
               nodes: dict[str, str]) -> list[dict]:
    """The page's media-segment records as rows in the Python player's chunk columns."""
    rows, stall_mark = [], 0.0
    top = locations[0]["pathway"] if locations else ""
    for s in rec["segments"]:
        if s.get("media_type", "video") != "video":
            continue
        seg = segment_of(s["url"], title)
        if seg is None:
            raise ValueError(f"dash.js fetched a segment off the /v/ contract: {s['url']}")
        loc = _location_of(s["url"], locations)
        fallback = loc["pathway"] != top
        rows.append({
            "time": round(s["time_unix"], 4), "request_unix": round(s["request_unix"], 4),
            "viewer": viewer, "title": title, "index": seg[1], "kbps": seg[0],
            "bytes": s["bytes"], "download_ms": round(s["download_ms"], 3),
            "conn": "", "connect_ms": "", "tls_ms": "", "ttfb_ms": round(s["ttfb_ms"], 3),
            "buffer_s": round(s["buffer_s"], 4),
            "rebuffer_s": round(s["stall_total_s"] - stall_mark, 4),
            "server": loc["pathway"], "tier": loc["tier"], "fallback": int(fallback),
            "fallback_reason": "content steering" if fallback else "",
            "node": nodes.get(s["url"], "")})
        stall_mark = s["stall_total_s"]
    return rows


def session_summary(rec: dict, rows: list[dict], integrity: dict, viewer: str, title: str,
                    n_segments: int, segment_s: float) -> dict:
    """One session in the Python player's summary keys (ViewerSession.summary)."""
    played: dict[int, int] = {}
    for r in rows:
        played[r["index"]] = r["kbps"]  # the last rung fetched for an index is the one played
    bitrates = [played[i] for i in sorted(played)]
    q = summarize(bitrates, segment_s, rec.get("startup_s"), len(rec["stalls"]),
                  rec["stall_total_s"])
    servers: dict[str, int] = {}
    for r in rows:
        servers[r["server"]] = servers.get(r["server"], 0) + 1
    error = rec.get("error") or ""
    if not error and len(played) != n_segments:
        error = f"played {len(played)} of {n_segments} segments"
    if not error and integrity["hash_failures"]:
        error = "; ".join(integrity["failures"][:3])
    conn = {k: "" for k in ("conn", "connect_ms", "tls_ms")}
    return {"viewer": viewer, "account": viewer, "title": title, "abr": ABR_NAME,
            "status": "failed" if error else "ok", "error": error, **q.to_dict(),
            "segments_verified": integrity["checked"] - integrity["hash_failures"],
            "bytes": sum(r["bytes"] for r in rows),
            "failed_attempts": integrity["failed_attempts"],
            "hash_failures": integrity["hash_failures"],
            "fallback_chunks": sum(r["fallback"] for r in rows),
            "steering_reloads": rec.get("steering_requests", 0),
            "control_retries": 0, "retry_rung_changes": 0, "redirects": 0,
            "content_misses": 0, "errors": integrity["failures"],
            "first_location": rows[0]["server"] if rows else "", "servers": servers,
            **{f"first_{k}": v for k, v in conn.items()},
            **{f"control_{k}": v for k, v in conn.items()},
            "started_unix": rec["started_unix"], "ended_unix": rec.get("ended_unix", time.time()),
            "speed": 1.0}


# --- the shell: HTTP, Chromium ------------------------------------------------------------

def _get_json(url: str, data: dict | None = None) -> dict:
    req = urllib.request.Request(url, data=None if data is None else json.dumps(data).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


class _StaticServer:
    """The player page on 127.0.0.1 (an ephemeral port), served from a thread."""

    def __init__(self) -> None:
        handler = functools.partial(_QuietHandler, directory=str(STATIC))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "_StaticServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, fmt, *args) -> None:  # the page's own requests are not news
        pass


def _body(response) -> bytes | None:
    """The body Chromium received (None: none, as when the server cut the transfer short)."""
    from playwright.sync_api import Error
    if not 200 <= response.status < 300:
        return b""
    try:
        return response.body()
    except Error:
        return None


def play(control: str, viewer: str, title: str, max_wall_s: float = 120.0,
         screenshot: Path | None = None, abr: str = "dynamic", buffer_s: float | None = None,
         initial_kbps: int | None = None, count_latency: bool = False) -> tuple[list[dict], dict]:
    """Play one title with dash.js; (chunk rows, session summary). abr: a key of ABR_RULES;
    buffer_s: dash.js's buffer target (stableBufferTime and bufferTimeAtTopQuality; None: its
    defaults), as the Python player's --max-buffer-s; initial_kbps: dash.js's first pick is the
    highest rung at most this (initialBitrate; None: dash.js's own estimate); count_latency:
    throughput samples over the whole request, the wait for the first byte included (dash.js's
    useDeadTimeLatency off), as the Python player measures them."""
    if abr not in ABR_RULES:
        raise ValueError(f"abr: {abr!r} is not one of {', '.join(ABR_RULES)}")
    why = missing_requirement()
    if why:
        raise RuntimeError(f"the real player cannot run here: {why}")
    from playwright.sync_api import TimeoutError as PlaywrightTimeout, sync_playwright
    token = _get_json(f"{control}/login", {"account": viewer})["account_token"]
    mpd_url = f"{control}/dash/{title}.mpd?account_token={quote(token)}"
    with urllib.request.urlopen(mpd_url, timeout=10) as r:
        mpd_text = r.read().decode()
    server_url = steering_server(mpd_text)
    manifest = mpd_session(mpd_text, _get_json(server_url) if server_url else None)
    locations = manifest["steering"]["locations"]
    responses = []
    args = ["--autoplay-policy=no-user-gesture-required"]
    args += ["--no-sandbox"] if os.geteuid() == 0 else []  # Chromium's sandbox refuses root
    with _StaticServer() as static, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=args)
        try:
            page = browser.new_page(viewport={"width": 700, "height": 460})
            page_errors: list[str] = []
            page.on("pageerror", lambda e: page_errors.append(str(e)))
            page.on("console", lambda m: print(f"realplayer: console {m.type}: {m.text}",
                                               file=sys.stderr) if m.type in ("error", "warning") else None)
            page.on("response", lambda r: responses.append(r)
                    if segment_of(r.url, title) is not None else None)
            refused: list[str] = []  # no response at all (connection refused or reset)
            page.on("requestfailed", lambda r: refused.append(r.url)
                    if segment_of(r.url, title) is not None else None)
            knobs = f"&abr={ABR_RULES[abr]}" + (f"&buffer_s={buffer_s:g}" if buffer_s else "") \
                + (f"&initial_kbps={initial_kbps}" if initial_kbps else "") \
                + ("&count_latency=1" if count_latency else "")
            page.goto(f"{static.url}player.html?mpd={quote(mpd_url, safe='')}{knobs}")
            try:
                page.wait_for_function("window.ocalab && window.ocalab.done",
                                       timeout=max_wall_s * 1000)
                timed_out = False
            except PlaywrightTimeout:
                timed_out = True
            rec = page.evaluate("window.ocalab || null")
            if rec is None:
                raise RuntimeError(f"the player page did not start: {page_errors}")
            if timed_out and not rec["error"]:
                rec["error"] = f"the session did not end within {max_wall_s:g} s"
            if screenshot is not None:
                page.screenshot(path=str(screenshot))
            fetched = [(r.url, r.status, _body(r)) for r in responses]
            fetched += [(url, 0, None) for url in refused]
            nodes = {r.url: r.headers.get(NODE_HEADER.lower(), "") for r in responses}
        finally:
            browser.close()
    if page_errors:  # an uncaught exception in the page: kept and printed; it fails the session
        # only through what it did to playback (segments missing, no end: checked below)
        print("realplayer: page errors: " + "; ".join(page_errors), file=sys.stderr)
    integrity = check_bodies(fetched, title, {**manifest["segments"], **manifest["audio_segments"]})
    rows = chunk_rows(rec, viewer, title, locations, nodes)
    summary = session_summary(rec, rows, integrity, viewer, title, manifest["n_segments"],
                              manifest["segment_s"])
    summary["dashjs_version"] = rec.get("dashjs_version", "")
    summary["dashjs_abr"] = rec.get("abr_strategy", "")
    summary["download_errors"] = len(rec.get("download_errors", []))
    summary["page_errors"] = len(page_errors)
    summary["errors"] = summary["errors"] + [f"page error: {e}" for e in page_errors]
    for k in DECODED_KEYS:  # Chromium's counters when the session ended
        summary[k] = rec.get(k, 0)
    summary["telemetry_posted"] = _post_summary(control, summary)
    return rows, summary


def _post_summary(control: str, summary: dict) -> bool:
    """POST the summary to <control>/telemetry as the Python player does (False: not taken)."""
    try:
        _get_json(f"{control}/telemetry", summary)
        return True
    except (OSError, ValueError) as exc:  # URLError/HTTPError are OSErrors; bad JSON a ValueError
        print(f"realplayer: telemetry post failed: {exc}", file=sys.stderr)
        return False


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m appliances.realplayer", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--control", required=True, help="control plane base URL, http://host:port")
    p.add_argument("--viewer", required=True, help="account name to log in as")
    p.add_argument("--title", required=True)
    p.add_argument("--chunk-log", required=True)
    p.add_argument("--session-log", required=True)
    p.add_argument("--screenshot", help="PNG of the page when the session ends")
    p.add_argument("--max-wall-s", type=float, default=120.0)
    p.add_argument("--abr", choices=sorted(ABR_RULES), default="dynamic", help="dash.js ABR rule")
    p.add_argument("--buffer-s", type=float, default=None,
                   help="dash.js buffer target (default: dash.js's own)")
    p.add_argument("--initial-kbps", type=int, default=None,
                   help="dash.js's first rung: the highest at most this (default: its estimate)")
    p.add_argument("--count-latency", action="store_true",
                   help="dash.js throughput samples include the wait for the first byte")
    args = p.parse_args(argv)
    if args.max_wall_s <= 0:
        p.error("--max-wall-s must be > 0")
    if args.buffer_s is not None and args.buffer_s <= 0:
        p.error("--buffer-s must be > 0")
    if args.initial_kbps is not None and args.initial_kbps <= 0:
        p.error("--initial-kbps must be > 0")
    why = missing_requirement()
    if why:
        print(f"realplayer: {why}", file=sys.stderr)
        return 2
    rows, summary = play(args.control.rstrip("/"), args.viewer, args.title, args.max_wall_s,
                         Path(args.screenshot) if args.screenshot else None, args.abr, args.buffer_s,
                         args.initial_kbps, args.count_latency)
    with open(args.chunk_log, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CHUNK_FIELDS)
        w.writeheader()
        w.writerows(rows)
    with open(args.session_log, "w") as f:
        f.write(json.dumps(summary, sort_keys=True) + "\n")
    print(json.dumps({k: summary[k] for k in ("status", "startup_s", "mean_kbps", "segments",
                                              "rebuffer_s", "hash_failures", "servers")}))
    return 0 if summary["status"] == "ok" else SESSIONS_FAILED


if __name__ == "__main__":
    sys.exit(main())
