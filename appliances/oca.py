"""Open Connect Appliance: a bounded segment cache serving `/v/<title>/<kbps>/<index>`.

`python -m appliances.oca --listen HOST:PORT --upstream URL --store DIR --capacity-mb N ...`
prints `READY host:port` and exits cleanly on SIGTERM.
Endpoints: GET/HEAD segments (RFC 9110 ranges and conditionals), `GET /health`,
`POST /fill` (fill plan, 202), `GET /fill/status`.
Commands: `POST /fill` is the one request that changes an OCA's state. With --command-key it
must carry the control plane's HMAC signature (appliances.commands: method, target, body,
timestamp within +-30 s, nonce never seen in that window); unsigned, malformed, forged,
expired and replayed commands get 403 (503 + Retry-After if the nonce memory is full), counted
in /health counters `commands_refused_<reason>` and noted in the access log
(`note: command_<reason>`), before the body is parsed. Without --command-key every command is
refused (`disabled`) unless --unsigned-commands is given (stand-alone use). The testbed
(harness.services) always gives the OCAs and the control plane the same key file.
GET /health, GET /fill/status (and GET /fill) are read-only and need no signature.
Invariants:
- Request order: token (403 bad / 410 expired, only with --token-key) -> catalog path (404)
  -> admission (appliances.admission, fair per client IP by default: 503 + Retry-After at the
  stream or egress limit, or to a client over its fair share while others' shares are
  reserved; a health miss; counters overloaded_503 and overloaded_503_<reason>)
  -> store hit (sendfile from disk or the memory hot set) or miss.
- Miss `redirect`: 302 to upstream + same path + same query (cache "miss").
  Miss `proxy`: one coalesced pull per object from upstream, verified against the catalog
  size (and SHA-256), stored atomically, counted as a fill (cache "fill" for the request that
  started the pull, "coalesced" for requests that joined it in flight). A plain GET is served
  cut-through while the pull runs (appliances.inflight: the last bytes wait for verification,
  a failed pull cuts the response short); ranges, conditionals and HEAD wait for the object.
  Miss `content_miss` (Open Connect's serve path): 404 with `X-Ocalab-Content-Miss: 1` (cache
  "content_miss", counter content_misses); the upstream is never contacted, the player tries
  its next location. Every store miss also counts in counters["misses"].
- A fill request from another OCA (header `X-Ocalab-Fill: 1`) never pulls through: a miss is
  404 (cache "miss") and the filler tries its next source. So a source's store holds only its
  own plan and what its viewers asked for, whatever the order in which peers fill.
- Health publishes `stored_titles` and `title_objects` ({title: stored objects}), both from the
  store's index at the time of the call.
- Only complete, verified objects are stored and served from the store (see store.py); a
  cut-through response completes only if its pull verified.
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import hashlib
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from appliances import ranges, tokens
from appliances.commands import CommandResult, CommandVerifier
from appliances.admission import (  # noqa: F401 (EgressMeter re-exported)
    ADMISSION_POLICIES, Admission, EgressMeter, Limits)
from appliances.content import Catalog, CatalogSpec, ContentError
from appliances.media import add_media_arg, catalog_from_args
from appliances.httpcore import CONTENT_MISS_HEADER, Request
from appliances.inflight import Inflight
from appliances.oca_fill import (DEFAULT_FILL_PARALLEL, FILL_HEADER, FillSourceError, Filler,
                                 check_fill_parallel, parse_fill_plan)
from appliances.oca_http import Response, json_response, parse_listen, \
    serve_from_args, text_response
from appliances.oca_bgp import BgpReader
from appliances.store import EVICTION_POLICIES, Key, Store, StoreError, etag_for
from appliances.tls import add_server_args, client_context, server_context_from_args

MISS_MODES = ("redirect", "proxy", "content_miss")
PULL_CHUNK_BYTES = 64 * 1024  # upstream read size of a pull-through (cut-through granularity)


def load_of(active_streams: int, max_streams: int | None, egress_mbps: float,
            egress_limit_mbps: float | None) -> float:
    """Load in [0, inf): the larger of stream and egress utilisation (0 without limits)."""
    parts = [0.0]
    if max_streams:
        parts.append(active_streams / max_streams)
    if egress_limit_mbps:
        parts.append(egress_mbps / egress_limit_mbps)
    return max(parts)


@dataclass
class OcaConfig:
    name: str
    upstream: str
    store_dir: Path
    capacity_bytes: int
    mem_bytes: int = 64 * 2**20
    miss: str = "redirect"
    eviction: str = "lru"
    egress_mbps: float | None = None
    max_streams: int | None = None
    token_key: bytes | None = None
    cache_control: str | None = None
    heartbeat_s: float = 1.0
    verify_sha: bool = True
    egress_window_s: float = 1.0
    fill_parallel: int = DEFAULT_FILL_PARALLEL  # fill objects in flight at once
    admission: str = "fair"  # appliances.admission policy under load: fair | first-come
    command_key: bytes | None = None  # verifies signed commands (appliances.commands)
    unsigned_commands: bool = False  # without command_key: accept unsigned commands (else none)
    ca_file: str | None = None  # https upstreams, fill sources, cache control: trust only this CA
    bgp_vty: str | None = None  # vty folder of its BGP speaker (--routing bgp): health's bgp_routes

    def __post_init__(self) -> None:
        check_fill_parallel(self.fill_parallel)
        if self.miss not in MISS_MODES:
            raise ValueError(f"miss must be one of {MISS_MODES}, got {self.miss!r}")
        if self.eviction not in EVICTION_POLICIES:
            raise ValueError(f"eviction must be one of {EVICTION_POLICIES}")
        if not self.upstream.startswith(("http://", "https://")):
            raise ValueError(f"upstream must be an http(s) URL, got {self.upstream!r}")
        self.upstream = self.upstream.rstrip("/")
        if self.heartbeat_s <= 0:
            raise ValueError("heartbeat_s must be > 0")
        if self.egress_window_s <= 0:
            raise ValueError("egress_window_s must be > 0")


class Oca:
    def __init__(self, cfg: OcaConfig, catalog: Catalog, fill_log=None) -> None:
        self.cfg, self.catalog = cfg, catalog
        self.store = Store(cfg.store_dir, cfg.capacity_bytes, cfg.mem_bytes, cfg.eviction,
                           expected_size=self._expected_size)
        self.admission = Admission(Limits(cfg.max_streams, cfg.egress_mbps), cfg.admission,
                                   cfg.egress_window_s)
        self.meter = self.admission.meter  # total egress (health, load)
        self.counters = collections.Counter()
        self.draining = False
        self._inflight: dict[Key, Inflight] = {}
        self._session: aiohttp.ClientSession | None = None
        self.filler = Filler(self.store, catalog, self.session, self._sign_query, fill_log,
                             cfg.verify_sha, cfg.fill_parallel)
        self._hb_task: asyncio.Task | None = None
        self.bgp = BgpReader(cfg.bgp_vty) if cfg.bgp_vty else None
        self.commands = CommandVerifier(cfg.command_key) if cfg.command_key is not None else None

    @property
    def active_streams(self) -> int:
        return self.admission.active_streams

    def _expected_size(self, key: Key) -> int | None:
        try:
            return self.catalog.segment_size(*key)
        except ContentError:
            return None

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            ssl_ctx = client_context(self.cfg.ca_file) if self.cfg.ca_file else True
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=64, ssl=ssl_ctx), auto_decompress=False)
        return self._session

    def _sign_query(self, path: str) -> str | None:
        """Own token for upstream/peer pulls (any client prefix, 5 minutes)."""
        if self.cfg.token_key is None:
            return None
        title = path.split("/")[2]
        return tokens.sign(self.cfg.token_key, f"/v/{title}/", "0.0.0.0/0", int(time.time()) + 300)

    # --- health ----------------------------------------------------------------
    def health(self) -> dict:
        now = time.monotonic()
        egress = self.meter.mbps(now)
        load = load_of(self.active_streams, self.cfg.max_streams, egress, self.cfg.egress_mbps)
        status = "draining" if self.draining else ("overloaded" if load >= 1.0 else "ok")
        keys = self.store.keys()
        return {"name": self.cfg.name, "status": status, "load": round(min(load, 1.0), 4),
                "egress_mbps": round(egress, 3), "active_streams": self.active_streams,
                "stored_titles": self.store.titles(), "capacity_bytes": self.store.capacity_bytes,
                "title_objects": dict(sorted(collections.Counter(k[0] for k in keys).items())),
                "used_bytes": self.store.used_bytes, "stored_objects": len(keys),
                "miss_mode": self.cfg.miss, "eviction": self.cfg.eviction,
                "max_streams": self.cfg.max_streams, "egress_limit_mbps": self.cfg.egress_mbps,
                "admission": self.cfg.admission, "recent_clients": self.admission.clients(now),
                "commands": self._command_mode(),
                "counters": dict(self.counters), "fill": {
                    k: v for k, v in self.filler.status.to_dict().items() if k != "recent"},
                **({"bgp_routes": self.bgp.routes_json()} if self.bgp else {}),
                "ts": time.time()}

    # --- request handling ------------------------------------------------------
    async def handle(self, req: Request, client: str) -> Response:
        if req.path == "/health":
            return json_response(200, self.health())
        if req.path == "/fill":
            return self._handle_fill(req)
        if req.path == "/fill/status":
            return json_response(200, self.filler.status.to_dict())
        if not req.path.startswith("/v/"):
            return text_response(404)
        if req.method not in ("GET", "HEAD"):
            return text_response(405, headers=[("Allow", "GET, HEAD")])
        if self.cfg.token_key is not None:
            verdict = tokens.verify(self.cfg.token_key, req.path, client, req.query, time.time())
            if verdict is tokens.TokenResult.FORBIDDEN:
                self.counters["forbidden"] += 1
                return text_response(403, "bad or missing token")
            if verdict is tokens.TokenResult.EXPIRED:
                self.counters["expired"] += 1
                return text_response(410, "token expired")
        try:
            key = self.catalog.parse_path(req.path)
        except ContentError:
            return text_response(404, "no such segment")
        verdict = self.admission.decide(client, self.catalog.segment_size(*key), time.monotonic())
        if verdict != "ok":  # a health miss: the player tries its next location
            self.counters["overloaded_503"] += 1
            self.counters[f"overloaded_503_{verdict}"] += 1
            return text_response(503, verdict.replace("_", " "), [("Retry-After", "1")])
        obj = self.store.lookup(key)
        if obj is not None:
            data = self.store.hot_bytes(obj)
            try:
                f = None if data is not None else open(obj.path, "rb")
            except FileNotFoundError:  # deleted behind our back: forget it, treat as a miss
                print(f"{self.cfg.name}: stored file vanished: {obj.path}", file=sys.stderr)
                self.store.remove(key)
            else:
                self.counters["hits"] += 1
                return self._object_response(req, client, obj.size_bytes, obj.etag, data, f,
                                             "hit")
        self.counters["misses"] += 1
        if req.headers.get(FILL_HEADER.lower()) == "1":
            return text_response(404, "not stored here (fill requests do not pull through)", cache="miss")
        if self.cfg.miss == "content_miss":  # serve phase never fills: the player goes on
            self.counters["content_misses"] += 1
            return text_response(404, "content miss: not stored here",
                                 [(CONTENT_MISS_HEADER, "1")], cache="content_miss")
        if self.cfg.miss == "redirect":
            loc = self.cfg.upstream + req.path + (f"?{req.query}" if req.query else "")
            return text_response(302, "see upstream", [("Location", loc)], cache="miss")
        return await self._proxy(req, client, key)

    def _object_response(self, req: Request, client: str, size: int, etag: str, data, f,
                         cache: str):
        d = ranges.evaluate(req.method, req.headers, size, etag)
        sent = d.content_length if d.send_body and req.method == "GET" else 0
        self.admission.started(client, sent, time.monotonic())
        return Response(d.status, list(d.headers), decision=d, data=data, file=f, cache=cache,
                        on_done=lambda: self.admission.finished(client))

    async def _proxy(self, req: Request, client: str, key: Key) -> Response:
        inflight = self._inflight.get(key)
        cache = "coalesced" if inflight is not None else "fill"
        if inflight is None:
            inflight = self._inflight[key] = Inflight(self.catalog.segment_size(*key))
            inflight.task = asyncio.create_task(self._pull_through(key, req.query, inflight))
            inflight.task.add_done_callback(lambda _t: self._inflight.pop(key, None))
        if self.cfg.verify_sha:  # the ETag is known before the bytes: cut-through when plain GET
            etag = etag_for(self.catalog.segment_sha256(*key))
            d = ranges.evaluate(req.method, req.headers, inflight.size_bytes, etag)
            if req.method == "GET" and d.status == 200 and d.send_body:
                return self._stream_response(client, d, inflight, cache)
        result = await asyncio.shield(inflight.task)  # ranges, conditionals, HEAD: whole object
        if result is None:
            return text_response(502, "upstream fetch failed")
        data, etag = result
        return self._object_response(req, client, len(data), etag, data, None, cache)

    def _stream_response(self, client: str, d, inflight: Inflight, cache: str) -> Response:
        self.admission.started(client, d.content_length, time.monotonic())
        return Response(200, list(d.headers), stream=inflight.chunks(), stream_length=inflight.size_bytes,
                        cache=cache, on_done=lambda: self.admission.finished(client))

    async def _pull_through(self, key: Key, client_query: str,
                            inflight: Inflight) -> tuple[bytes, str] | None:
        """Fetch (into `inflight`, read by cut-through responses as it grows), verify and store
        one object; None (reported on stderr) on failure."""
        path = f"/v/{key[0]}/{key[1]}/{key[2]}"
        query = self._sign_query(path) or client_query
        url = self.cfg.upstream + path + (f"?{query}" if query else "")
        want = inflight.size_bytes
        timeout = aiohttp.ClientTimeout(total=60, sock_connect=5)
        try:
            async with self.session().get(url, allow_redirects=False, timeout=timeout) as r:
                if r.status != 200:
                    raise FillSourceError(f"upstream status {r.status}")
                async for part in r.content.iter_chunked(PULL_CHUNK_BYTES):
                    if len(inflight.buf) + len(part) > want:
                        raise FillSourceError(f"upstream sent more than the catalog's {want} bytes")
                    inflight.append(part)
            data = bytes(inflight.buf)
            if len(data) != want:
                raise FillSourceError(f"upstream sent {len(data)} bytes, catalog says {want}")
            sha = self.catalog.segment_sha256(*key) if self.cfg.verify_sha else None
            obj = self.store.put(key, data, pinned=False, expected_sha256=sha)
        except (aiohttp.ClientError, asyncio.TimeoutError, FillSourceError, StoreError,
                OSError) as exc:
            print(f"{self.cfg.name}: upstream pull of {path} failed: {type(exc).__name__}: {exc}",
                  file=sys.stderr, flush=True)
            self.counters["upstream_errors"] += 1  # failed pulls (every waiter got 502 or a cut)
            inflight.finish(ok=False)
            return None
        inflight.finish(ok=True)
        self.counters["fills"] += 1
        self.counters["fill_bytes"] += len(data)
        if obj is None:  # not admitted (everything pinned): serve once without storing
            return data, etag_for(hashlib.sha256(data).hexdigest())
        return data, obj.etag

    def _command_mode(self) -> str:
        """How commands are checked: `signed` (--command-key), `unsigned` or `disabled`."""
        if self.commands is not None:
            return "signed"
        return "unsigned" if self.cfg.unsigned_commands else "disabled"

    def _refuse_command(self, req: Request) -> Response | None:
        """None if the command may run; else its refusal (403; 503 + Retry-After when the
        nonce memory is full), counted in counters["commands_refused_<verdict>"] and noted in
        the access log."""
        if self.commands is not None:
            target = req.path + (f"?{req.query}" if req.query else "")
            verdict = self.commands.verify(req.method, target, req.body, req.headers,
                                           time.time())
            if verdict is CommandResult.OK:
                return None
            reason = verdict.value
        elif self.cfg.unsigned_commands:
            return None
        else:
            reason = "disabled"
        self.counters[f"commands_refused_{reason}"] += 1
        if reason == "busy":
            return text_response(503, "too many commands in the replay window",
                                 [("Retry-After", "1")], note="command_busy")
        return text_response(403, f"command refused: {reason}", note=f"command_{reason}")

    def _handle_fill(self, req: Request) -> Response:
        if req.method == "GET":
            return json_response(200, self.filler.status.to_dict())
        if req.method != "POST":
            return text_response(405, headers=[("Allow", "POST")])
        refusal = self._refuse_command(req)
        if refusal is not None:
            return refusal
        try:
            plan = parse_fill_plan(json.loads(req.body.decode("utf-8")), self.catalog)
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
            return text_response(400, "fill plan is not valid JSON (or nested too deeply)")
        except ValueError as exc:
            return text_response(400, f"bad fill plan: {exc}")
        plan_id = self.filler.submit(plan)
        self.counters["commands_accepted"] += 1
        return json_response(202, {"accepted": len(plan.segments), "plan_id": plan_id})

    # --- lifecycle ---------------------------------------------------------------
    async def start(self) -> None:
        if self.cfg.cache_control:
            self._hb_task = asyncio.create_task(self._heartbeat())
        if self.bgp:
            await self.bgp.start()

    async def stop(self) -> None:
        self.draining = True
        if self.bgp:
            await self.bgp.stop()
        if self._hb_task is not None:
            self._hb_task.cancel()
            await asyncio.gather(self._hb_task, return_exceptions=True)
        await self.filler.close()
        if self._session is not None:
            await self._session.close()

    async def _heartbeat(self) -> None:
        url = self.cfg.cache_control.rstrip("/") + "/heartbeat"
        failing = False
        while True:
            try:
                async with self.session().post(url, json=self.health(),
                                               timeout=aiohttp.ClientTimeout(total=2)) as r:
                    await r.read()
                    ok = r.status < 300
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
                ok = False
                if not failing:
                    print(f"{self.cfg.name}: heartbeat to {url} failed: {type(exc).__name__}",
                          file=sys.stderr, flush=True)
            if ok and failing:
                print(f"{self.cfg.name}: heartbeat to {url} recovered", file=sys.stderr, flush=True)
            failing = not ok
            await asyncio.sleep(self.cfg.heartbeat_s)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m appliances.oca", description=__doc__)
    p.add_argument("--listen", required=True, help="HOST:PORT (port 0 = free port)")
    p.add_argument("--upstream", required=True, help="base URL of the next location / origin")
    p.add_argument("--store", required=True, help="store directory")
    p.add_argument("--capacity-mb", type=float, required=True, help="disk capacity in MiB")
    p.add_argument("--name", default="oca")
    p.add_argument("--miss", choices=MISS_MODES, default="redirect")
    p.add_argument("--eviction", choices=EVICTION_POLICIES, default="lru")
    p.add_argument("--egress-mbps", type=float, default=None)
    p.add_argument("--egress-window-s", type=float, default=1.0,
                   help="sliding window of the egress rate estimate")
    p.add_argument("--max-streams", type=int, default=None)
    p.add_argument("--admission", choices=ADMISSION_POLICIES, default="fair",
                   help="who is refused under load: fair (per client IP shares of streams and "
                        "egress, see appliances/admission.py) or first-come (the old baseline)")
    p.add_argument("--token-key", default=None, help="hex key file; enables token checks")
    p.add_argument("--command-key", default=None,
                   help="hex key file (the control plane's): commands (POST /fill) must carry "
                        "its HMAC signature, see appliances/commands.py; refusals are 403")
    p.add_argument("--unsigned-commands", action="store_true",
                   help="without --command-key, accept unsigned commands (stand-alone use "
                        "only); by default an OCA without a command key refuses every command")
    p.add_argument("--cache-control", default=None, help="base URL for heartbeats")
    p.add_argument("--heartbeat-s", type=float, default=1.0)
    p.add_argument("--access-log", default=None, help="JSON-lines access log file")
    p.add_argument("--fill-log", default=None,
                   help="JSON-lines fill log (default STORE/fill-log.jsonl)")
    p.add_argument("--mem-mb", type=float, default=64.0, help="memory hot set size in MiB")
    p.add_argument("--header-timeout-s", type=float, default=10.0)
    p.add_argument("--idle-timeout-s", type=float, default=60.0)
    p.add_argument("--max-conns", type=int, default=512)
    p.add_argument("--sendfile-threads", type=int, default=2,
                   help="worker threads running non-blocking os.sendfile, so kernel copies "
                        "use several cores (0: asyncio loop.sendfile in the event loop)")
    p.add_argument("--no-verify-sha", action="store_true", help="skip SHA-256 checks of fills")
    p.add_argument("--fill-parallel", type=int, default=DEFAULT_FILL_PARALLEL, metavar="K",
                   help="fill objects in flight at once (1..32; the fill rate cap is shared)")
    add_server_args(p)
    p.add_argument("--ca-file", default=None, metavar="PATH",
                   help="CA certificate that https upstreams, fill sources and the cache "
                        "control must chain to (default: the system's CAs)")
    p.add_argument("--bgp-vty", default=None, metavar="DIR",
                   help="vty socket folder of this OCA's BGP speaker; /health then reports the "
                        "routes it learned as bgp_routes (the viewers it serves)")
    CatalogSpec.add_cli_args(p)
    add_media_arg(p)
    return p


def config_from_args(args: argparse.Namespace) -> OcaConfig:
    if args.capacity_mb <= 0 or args.mem_mb < 0:
        raise ValueError("--capacity-mb must be > 0 and --mem-mb >= 0")
    if not 0 <= args.sendfile_threads <= 64:
        raise ValueError("--sendfile-threads must be in 0..64")
    for name in ("max_streams", "egress_mbps", "max_conns"):
        v = getattr(args, name)
        if v is not None and v <= 0:
            raise ValueError(f"--{name.replace('_', '-')} must be > 0")
    key = tokens.load_key(args.token_key) if args.token_key else None
    if args.command_key and args.unsigned_commands:
        raise ValueError("--unsigned-commands contradicts --command-key")
    cmd_key = tokens.load_key(args.command_key) if args.command_key else None
    return OcaConfig(name=args.name, upstream=args.upstream, store_dir=Path(args.store),
                     capacity_bytes=int(args.capacity_mb * 2**20),
                     mem_bytes=int(args.mem_mb * 2**20), miss=args.miss, eviction=args.eviction,
                     egress_mbps=args.egress_mbps, max_streams=args.max_streams, token_key=key,
                     cache_control=args.cache_control, heartbeat_s=args.heartbeat_s,
                     verify_sha=not args.no_verify_sha, egress_window_s=args.egress_window_s,
                     fill_parallel=check_fill_parallel(args.fill_parallel),
                     admission=args.admission, command_key=cmd_key,
                     unsigned_commands=args.unsigned_commands, ca_file=args.ca_file,
                     bgp_vty=args.bgp_vty)


async def amain(args: argparse.Namespace, cfg: OcaConfig, catalog: Catalog) -> None:
    cfg.store_dir.mkdir(parents=True, exist_ok=True)
    fill_log = open(args.fill_log or cfg.store_dir / "fill-log.jsonl", "a", encoding="utf-8")
    try:
        oca = Oca(cfg, catalog, fill_log)
        await serve_from_args(args, oca.handle, cfg.name, oca.start, oca.stop,
                              sendfile_threads=args.sendfile_threads)
    finally:
        fill_log.close()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        parse_listen(args.listen)
        cfg = config_from_args(args)
        server_context_from_args(args)  # bad TLS flags or files fail here, before serving
        catalog = catalog_from_args(args)
    except (ValueError, OSError) as exc:
        print(f"oca: {exc}", file=sys.stderr)
        return 2
    asyncio.run(amain(args, cfg, catalog))
    return 0


if __name__ == "__main__":
    sys.exit(main())
