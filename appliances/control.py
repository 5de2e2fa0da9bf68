"""Control plane service (cloud region): playback API + steering, cache-control, telemetry.

CLI:
  python -m appliances.control --listen HOST:PORT --deployment FILE --token-key FILE
      [--command-key FILE] [--steering URL] [--telemetry-log FILE] [--steering-log FILE] [--token-ttl-s N]
      [--push-fill] [--fill-wait-s S] [--fill-window-s S] [--fill-rate-mbps R]
      [--fill-segments-per-title N] [--history FILE] [--release TITLE ...] [--drop-health-misses]
      [--warm-titles N] [--media-dir DIR] [--steering-ttl-s S] [--tls-cert PATH --tls-key PATH] [--ca-file PATH]
--media-dir DIR: serve a real-media build (appliances.media_encode): per-title ladders, and the
DASH/HLS manifests of appliances.control_manifests.
--tls-cert/--tls-key: serve TLS 1.3 only (default plain HTTP); --ca-file: the CA that https OCAs
(fill pushes) and the origin (catalog check) must chain to.
--command-key FILE: hex key file shared with the OCAs' --command-key; every fill push is signed
with it (appliances.commands). Without it pushes go unsigned, which OCAs refuse unless started
with --unsigned-commands.
--release TITLE (repeatable): a title released today; fill plans put it first (a catalog title).
--history FILE: yesterday's sessions, CSV `region,title` (appliances/history.py); fill plans are
then built from their add-one smoothed per-region shares instead of the popularity players draw
from. A bad file exits 2 with one `control: error: FILE:LINE: ...` line before serving.
Prints `READY host:port` (the bound port, also for port 0) once listening; exits 0 on
SIGTERM/SIGINT. Every error answer is JSON {"error": ...} with a 4xx/5xx status; a handler bug
is logged with its traceback on stderr and answered 500 without one.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import ssl
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass
from typing import TextIO

import aiohttp
from aiohttp import web

from appliances import tokens
from appliances.content import Catalog, CatalogSpec
from appliances.control_cache import CacheControl, Telemetry
from appliances.control_health import HealthRegistry
from appliances.control_manifests import ManifestService
from appliances.control_playback import STEERING_TTL_S, PlaybackService, json_error
from appliances.fillplan import history_popularity
from appliances.history import read_history_csv
from appliances.media import MediaCatalog, add_media_arg
from appliances.steering_local import LocalSteering, RemoteSteering, Steering
from appliances.tls import add_server_args, client_context, server_context_from_args
from contracts.deployment import Deployment, DeploymentError, load_deployment
from contracts.steering import POLICIES as STEERING_POLICIES

log = logging.getLogger("ocalab.control")


@web.middleware
async def json_errors(request: web.Request, handler):
    """Turn aiohttp HTTP errors and unexpected exceptions into JSON error bodies."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.content_type == "application/json" or exc.status < 400:
            raise
        return json_error(exc.status, exc.reason)
    except asyncio.CancelledError:
        raise
    except Exception:  # a bug: log it loudly, answer without a traceback
        log.exception("unhandled error in %s %s", request.method, request.path)
        return json_error(500, "internal error")


@dataclass
class ControlPlane:
    app: web.Application
    playback: PlaybackService
    cache: CacheControl
    telemetry: Telemetry
    registry: HealthRegistry
    catalog_check: str = "pending"  # origin /catalog vs deployment: ok|mismatch|unreachable

    async def health(self, request: web.Request) -> web.Response:
        tables = self.playback.tables
        return web.json_response({"name": "control", "status": "ok",
                                  "catalog_check": self.catalog_check,
                                  "telemetry_sessions": self.telemetry.count,
                                  "ocas_heard": sorted(self.registry.snapshot()),
                                  "warm": {"titles_done": tables.warmed_titles,
                                           "titles_target": tables.warm_target},
                                  "fill_push_unix": self.cache.push_started_unix})


async def allow_any_origin(request: web.Request, response: web.StreamResponse) -> None:
    """Manifests and steering documents are read by players in web pages (dash.js, hls.js)
    served from another origin: allow it, as the OCAs do (httpcore.CORS_HEADERS)."""
    response.headers.setdefault("Access-Control-Allow-Origin", "*")


def build_control(deployment: Deployment, key: bytes, steering_url: str | None = None,
                  telemetry_sink: TextIO | None = None, steering_log: TextIO | None = None,
                  token_ttl_s: int = 3600, drop_health_misses: bool = False,
                  fill_window_s: float = 12 * 3600.0, fill_rate_mbps: float = 100.0,
                  fill_segments_per_title: int | None = None,
                  steering_policy: str | None = None,
                  history: dict[str, dict[str, float]] | None = None,
                  releases: tuple[str, ...] = (),
                  command_key: bytes | None = None,
                  client_ssl: ssl.SSLContext | bool = True,
                  catalog: Catalog | None = None,
                  steering_ttl_s: int = STEERING_TTL_S) -> ControlPlane:
    """Wire the three services into one aiohttp application. `steering_policy` is sent to the
    controller with every rank query (None: the controller's default); `history` (region ->
    title -> share, see load_history) makes fill plans predicted, None keeps the truth.
    `catalog`: the media catalog to serve (None: the deployment's synthetic one)."""
    catalog = catalog or Catalog(deployment.catalog)
    registry = HealthRegistry()
    local = LocalSteering(deployment, registry, drop_health_misses=drop_health_misses)
    steering: Steering = RemoteSteering(steering_url, policy=steering_policy) if steering_url else local
    playback = PlaybackService(deployment, catalog, key, steering, local,
                               token_ttl_s=token_ttl_s, steering_log=steering_log,
                               steering_ttl_s=steering_ttl_s)
    cache = CacheControl(deployment, catalog, registry, fill_window_s=fill_window_s,
                         fill_rate_mbps=fill_rate_mbps,
                         segments_per_title=fill_segments_per_title, history=history,
                         releases=releases, command_key=command_key, client_ssl=client_ssl)
    telemetry = Telemetry(sink=telemetry_sink)
    app = web.Application(middlewares=[json_errors], client_max_size=4 * 1024 * 1024)
    app.on_response_prepare.append(allow_any_origin)
    app.add_routes(playback.routes() + ManifestService(playback).routes() + cache.routes()
                   + telemetry.routes())
    cp = ControlPlane(app, playback, cache, telemetry, registry)
    app.add_routes([web.get("/health", cp.health)])
    return cp


async def check_origin_catalog(cp: ControlPlane, origin_url: str, wait_s: float = 30.0,
                               client_ssl: ssl.SSLContext | bool = True) -> str:
    """Compare the origin's GET /catalog with the deployment's catalog (bounded retries).

    A mismatch means every segment fails the players' SHA-256 check, so it is logged loudly.
    """
    want = cp.playback.catalog.spec
    deadline = time.monotonic() + wait_s
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3),
                                     connector=aiohttp.TCPConnector(ssl=client_ssl)) as http:
        while True:
            try:
                async with http.get(f"{origin_url}/catalog") as r:
                    got = CatalogSpec.from_json(await r.json())
                break
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError) as exc:
                if time.monotonic() > deadline:
                    log.warning("origin catalog check: %s unreachable (%s)", origin_url, exc)
                    cp.catalog_check = "unreachable"
                    return cp.catalog_check
                await asyncio.sleep(1.0)
    cp.catalog_check = "ok" if got == want else "mismatch"
    if got != want:
        log.error("CATALOG MISMATCH: deployment %s but origin %s serves %s; every segment "
                  "will fail verification", want.to_json(), origin_url, got.to_json())
    return cp.catalog_check


def load_history(path: str, deployment: Deployment) -> dict[str, dict[str, float]]:
    """Per-region predicted shares from a history CSV; ValueError naming file:line if bad."""
    titles = Catalog(deployment.catalog).titles()
    trace = read_history_csv(path, deployment, titles)
    history = history_popularity(trace, titles)
    absent = sorted({r.name for r in deployment.regions} - history.keys())
    log.warning("fill history: %d sessions from %s, regions %s%s", len(trace), path,
                sorted(history), f" (no history, base popularity: {absent})" if absent else "")
    return history


def parse_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    return host, int(port)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m appliances.control", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--listen", type=parse_listen, required=True, help="HOST:PORT")
    p.add_argument("--deployment", required=True, help="deployment JSON file")
    p.add_argument("--token-key", required=True, help="hex key file shared with the OCAs")
    p.add_argument("--command-key", default=None,
                   help="hex key file the OCAs verify commands with: fill pushes are signed")
    p.add_argument("--steering", help="controller steering API base URL (else local policy)")
    p.add_argument("--steering-policy", choices=STEERING_POLICIES, default=None,
                   help="with --steering: the controller's ranking policy (default: the controller's own)")
    p.add_argument("--telemetry-log", help="append session summaries here (JSON lines)")
    p.add_argument("--steering-log", help="append steering decisions here (JSON lines)")
    p.add_argument("--token-ttl-s", type=int, default=3600)
    p.add_argument("--steering-ttl-s", type=int, default=STEERING_TTL_S,
                   help="TTL of Content Steering documents (players re-ask this often)")
    p.add_argument("--drop-health-misses", action="store_true",
                   help="leave unhealthy OCAs out of manifests instead of ranking them last")
    p.add_argument("--push-fill", action="store_true", help="push fill plans once the manifests are warm (midnight of a fill run)")
    p.add_argument("--fill-wait-s", type=float, default=30.0,
                   help="with --push-fill: how long to wait for OCA capacities (heartbeats)")
    p.add_argument("--fill-window-s", type=float, default=12 * 3600.0)
    p.add_argument("--fill-rate-mbps", type=float, default=100.0)
    p.add_argument("--fill-segments-per-title", type=int, default=None)
    p.add_argument("--release", metavar="TITLE", action="append", default=[],
                   help="a title released today: first in every fill plan (repeatable)")
    p.add_argument("--history", metavar="FILE", default=None,
                   help="CSV region,title of yesterday's sessions: plan fills from it "
                        "(predicted popularity) instead of the players' own distribution")
    p.add_argument("--warm-titles", type=int, default=20,
                   help="precompute manifests (sizes, SHA-256) of the N most popular titles "
                        "in the background at start, so cold manifests do not skew startup")
    add_media_arg(p)
    add_server_args(p)
    p.add_argument("--ca-file", default=None, metavar="PATH",
                   help="CA certificate that https OCAs and the origin must chain to "
                        "(fill pushes, catalog check; default: the system's CAs)")
    return p


async def serve(args: argparse.Namespace, stack: ExitStack) -> int:
    if args.push_fill and args.media_dir:  # fill plans assume one ladder for every title
        raise ValueError("--push-fill does not support --media-dir (per-title ladders) yet")
    if args.steering_policy and not args.steering:
        raise ValueError("--steering-policy needs --steering (the local policy has no variants)")
    deployment = load_deployment(args.deployment)
    key = tokens.load_key(args.token_key)
    cmd_key = tokens.load_key(args.command_key) if args.command_key else None
    history = load_history(args.history, deployment) if args.history else None
    unknown = sorted(set(args.release) - set(Catalog(deployment.catalog).titles()))
    if unknown:
        raise ValueError(f"--release: {', '.join(unknown)} not in the catalog")
    if args.token_ttl_s < 1 or args.warm_titles < 0 or args.steering_ttl_s < 1:
        raise ValueError("--token-ttl-s and --steering-ttl-s must be >= 1, --warm-titles >= 0")
    server_ssl = server_context_from_args(args)  # None: plain HTTP
    client_ssl = client_context(args.ca_file) if args.ca_file else True
    tsink = stack.enter_context(open(args.telemetry_log, "a")) if args.telemetry_log else None
    ssink = stack.enter_context(open(args.steering_log, "a")) if args.steering_log else None
    cp = build_control(deployment, key, args.steering, tsink, ssink, args.token_ttl_s,
                       args.drop_health_misses, args.fill_window_s, args.fill_rate_mbps,
                       args.fill_segments_per_title, args.steering_policy, history,
                       tuple(dict.fromkeys(args.release)), cmd_key, client_ssl,
                       MediaCatalog(args.media_dir, deployment.catalog.zipf_alpha)
                       if args.media_dir else None, args.steering_ttl_s)
    runner = web.AppRunner(cp.app, access_log=None, handle_signals=False)
    await runner.setup()
    host, port = args.listen
    site = web.TCPSite(runner, host, port, ssl_context=server_ssl)
    await site.start()
    bound = runner.addresses[0][1] if runner.addresses else port
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"READY {host}:{bound}", flush=True)  # only now: a SIGTERM after READY is clean
    warm_task = asyncio.create_task(asyncio.to_thread(cp.playback.tables.warm, args.warm_titles))
    check_task = asyncio.create_task(check_origin_catalog(cp, deployment.origin.url,
                                                          client_ssl=client_ssl))
    fill_task = None
    if args.push_fill:
        fill_task = asyncio.create_task(push_after_warm(warm_task, cp.cache, args.fill_wait_s))
    await stop.wait()
    cp.playback.tables.stop()
    for task in (fill_task, check_task):
        if task is not None and not task.done():
            task.cancel()
    await runner.cleanup()
    await warm_task
    return 0


async def push_after_warm(warm_task: asyncio.Task, cache: CacheControl, wait_s: float) -> dict:
    """The fill push, once the manifests are warm. A production control plane computed them long
    before midnight; here the hashing takes one of the machine's two cores for seconds, and a
    fill window sharing the CPU with it carried a fraction of its plan. Pushes even if the warm
    failed (its error surfaces where serve() awaits it)."""
    await asyncio.wait([warm_task])
    return await cache.push_when_ready(wait_s)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s control %(levelname)s %(message)s")
    try:
        with ExitStack() as stack:
            return asyncio.run(serve(args, stack))
    except (DeploymentError, ValueError, OSError) as exc:
        print(f"control: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
