"""Viewer load generator: many ABR players in one asyncio process, each on its own TCP connections.

CLI:
  python -m appliances.player --control URL --viewers N (--titles t0001,t0002 | --workload zipf)
      [--seed S] [--abr bba|tput] [--segments N] --chunk-log FILE --session-log FILE
      [--bind-ip IP] [--account-prefix NAME] [--max-wall-s S] [--speed K] [--ramp-s S]
      [--max-buffer-s S] [--reprobe-segments N] [--reprobe-s S] [--manifest json|dash]
Each viewer has its own aiohttp ClientSession (keep-alive), logs one CSV row per chunk and one
JSON-lines session summary, which it also POSTs to <control>/telemetry. The run is bounded: it
ends when every session ends, or at --max-wall-s or SIGTERM/SIGINT (unfinished sessions are
then reported with status "timeout", and their summaries are still written and posted).
Exit status: 0 if every session finished ok, 4 (SESSIONS_FAILED) if some did not (their
summaries say why), 2 on bad arguments; anything else is a crash.
--speed K runs the media clock K times faster than wall time (see player_session: honest only
as "the same run over a K times slower network"; use 1 for experiments).
"""
from __future__ import annotations

import argparse
import asyncio
import csv
import json
import logging
import random
import signal
import socket
import ssl
import sys
import time
from typing import TextIO

import aiohttp

from appliances.abr import ALGORITHMS, make_abr
from appliances.conntiming import trace_config
from appliances.tls import resuming_client_context
from appliances.player_session import FETCH_ERRORS, SegmentError, SessionConfig, ViewerSession

log = logging.getLogger("ocalab.player")
CHUNK_FIELDS = ("time", "request_unix", "viewer", "title", "index", "kbps", "bytes", "download_ms",
                "conn", "connect_ms", "tls_ms", "ttfb_ms", "buffer_s", "rebuffer_s", "server", "tier", "fallback", "fallback_reason",
                "node")

MANIFESTS = ("json", "dash")
SESSIONS_FAILED = 4  # exit status: the run completed, some sessions did not finish ok


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m appliances.player", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--control", required=True, help="control plane base URL, http://host:port")
    p.add_argument("--viewers", type=int, required=True)
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--titles", help="comma-separated titles, assigned round-robin")
    which.add_argument("--workload", choices=("zipf",),
                       help="draw titles from the regional popularity the control plane gives")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--abr", choices=ALGORITHMS, default="bba")
    p.add_argument("--segments", type=int, default=None, help="play only the first N segments")
    p.add_argument("--manifest", choices=MANIFESTS, default="json",
                   help="json: the playback API's manifest; dash: the MPD with Content Steering "
                        "(needs a control plane with --media-dir)")
    p.add_argument("--chunk-log", required=True)
    p.add_argument("--session-log", required=True)
    p.add_argument("--bind-ip", default=None, help="source address of every connection")
    p.add_argument("--account-prefix", default="viewer")
    p.add_argument("--max-wall-s", type=float, default=3600.0)
    p.add_argument("--speed", type=float, default=1.0)
    p.add_argument("--ramp-s", type=float, default=0.0, help="spread session starts over S s")
    p.add_argument("--max-buffer-s", type=float, default=30.0)
    p.add_argument("--reprobe-segments", type=int, default=4)
    p.add_argument("--reprobe-s", type=float, default=10.0)
    p.add_argument("--ca-file", default=None, metavar="PATH",
                   help="CA certificate that https control plane, OCAs and origin must chain "
                        "to (their IP SAN is checked; default: the system's CAs)")
    p.add_argument("--verbose", action="store_true")
    return p


def _check(args: argparse.Namespace) -> None:
    if not 1 <= args.viewers <= 10_000:
        raise ValueError("--viewers must be in 1..10000")
    if args.segments is not None and args.segments < 1:
        raise ValueError("--segments must be >= 1")
    if not 0 < args.speed <= 100:
        raise ValueError("--speed must be in (0, 100]")
    if args.max_wall_s <= 0 or args.ramp_s < 0 or args.max_buffer_s < 1:
        raise ValueError("--max-wall-s must be > 0, --ramp-s >= 0, --max-buffer-s >= 1")
    if not args.control.startswith(("http://", "https://")):
        raise ValueError("--control must be an http:// or https:// URL")


def client_ssl(args: argparse.Namespace) -> ssl.SSLContext:
    """What https connections trust: --ca-file, else the system's CAs; the context resumes TLS
    sessions when a viewer reconnects and stamps when each handshake starts (conntiming)."""
    return resuming_client_context(args.ca_file)


def _connector(args: argparse.Namespace) -> aiohttp.TCPConnector:
    local = (args.bind_ip, 0) if args.bind_ip else None
    return aiohttp.TCPConnector(local_addr=local, family=socket.AF_INET if args.bind_ip else 0,
                                limit=8, keepalive_timeout=60,
                                ssl=getattr(args, "client_ssl", True))


async def pick_titles(args: argparse.Namespace) -> list[str]:
    if args.titles:
        titles = [t.strip() for t in args.titles.split(",") if t.strip()]
        if not titles:
            raise ValueError("--titles is empty")
        return [titles[i % len(titles)] for i in range(args.viewers)]
    async with aiohttp.ClientSession(connector=_connector(args)) as http:
        async with http.get(f"{args.control}/catalog") as r:
            r.raise_for_status()
            pop = (await r.json())["popularity"]
    names = sorted(pop)
    rng = random.Random(f"workload|{args.seed}")
    return rng.choices(names, weights=[pop[t] for t in names], k=args.viewers)


class Logs:
    """The chunk CSV and session JSON-lines writers (rows flushed as they come)."""

    def __init__(self, chunk_f: TextIO, session_f: TextIO) -> None:
        self.chunks = csv.DictWriter(chunk_f, fieldnames=CHUNK_FIELDS)
        self.chunks.writeheader()
        self.chunk_f, self.session_f = chunk_f, session_f

    def chunk(self, row: dict) -> None:
        self.chunks.writerow(row)
        self.chunk_f.flush()

    def session(self, summary: dict) -> None:
        self.session_f.write(json.dumps(summary, sort_keys=True) + "\n")
        self.session_f.flush()


async def _post_summary(http: aiohttp.ClientSession, control: str, summary: dict) -> bool:
    try:
        async with http.post(f"{control}/telemetry", json=summary,
                             timeout=aiohttp.ClientTimeout(total=5)) as r:
            return r.status == 200
    except FETCH_ERRORS as exc:
        log.warning("%s: telemetry post failed: %s", summary["viewer"], exc)
        return False


async def run_viewer(s: ViewerSession, args: argparse.Namespace, delay_s: float,
                     logs: Logs) -> dict:
    async with aiohttp.ClientSession(connector=_connector(args),
                                     trace_configs=[trace_config()]) as http:
        try:
            await asyncio.sleep(delay_s)
            await s.run(http)
        except (SegmentError, *FETCH_ERRORS, KeyError, ValueError) as exc:
            s.status, s.error = "failed", f"{type(exc).__name__}: {exc}"
            log.warning("%s: session failed: %s", s.viewer, s.error)
        except asyncio.CancelledError:
            s.status, s.error = "timeout", "stopped: --max-wall-s reached or SIGTERM"
        summary = s.summary(args.abr)
        summary["telemetry_posted"] = await _post_summary(http, args.control, summary)
        logs.session(summary)
        return summary


async def run(args: argparse.Namespace) -> list[dict]:
    titles = await pick_titles(args)
    cfg = SessionConfig(control_url=args.control.rstrip("/"), abr=make_abr(args.abr),
                        segments=args.segments, speed=args.speed, max_buffer_s=args.max_buffer_s,
                        reprobe_segments=args.reprobe_segments, reprobe_s=args.reprobe_s,
                        manifest=args.manifest)
    with open(args.chunk_log, "w", newline="") as cf, open(args.session_log, "w") as sf:
        logs = Logs(cf, sf)
        sessions = [ViewerSession(f"{args.account_prefix}-{i:04d}", titles[i], cfg, logs.chunk)
                    for i in range(args.viewers)]
        tasks = [asyncio.create_task(run_viewer(s, args, args.ramp_s * i / args.viewers, logs))
                 for i, s in enumerate(sessions)]
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):  # stop early, still writing summaries
            loop.add_signal_handler(sig, stop.set)
        stopper = asyncio.create_task(stop.wait())
        await asyncio.wait([asyncio.gather(*tasks, return_exceptions=True), stopper],
                           timeout=args.max_wall_s, return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        for t in tasks:
            t.cancel()  # no-op for finished sessions
        results = await asyncio.gather(*tasks, return_exceptions=True)
    bugs = [r for r in results if isinstance(r, BaseException)]
    if bugs:
        raise RuntimeError(f"{len(bugs)} viewer tasks crashed: {bugs[0]!r}") from bugs[0]
    return results


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        stream=sys.stderr, format="%(asctime)s player %(levelname)s %(message)s")
    try:
        _check(args)
        args.client_ssl = client_ssl(args)
    except (ValueError, OSError) as exc:
        print(f"player: error: {exc}", file=sys.stderr)
        return 2
    t0 = time.monotonic()
    try:
        results = asyncio.run(run(args))
    except (*FETCH_ERRORS, ValueError, KeyError) as exc:
        print(f"player: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    ok = sum(1 for r in results if r["status"] == "ok")
    print(json.dumps({"sessions": len(results), "ok": ok, "wall_s": round(time.monotonic() - t0, 2),
                      "fallback_chunks": sum(r["fallback_chunks"] for r in results),
                      "failed_attempts": sum(r["failed_attempts"] for r in results)}), flush=True)
    return 0 if ok == len(results) else SESSIONS_FAILED


if __name__ == "__main__":
    sys.exit(main())
