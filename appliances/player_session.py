"""One viewer's playback session: login, manifest, real-time buffer, ABR, verified fetches.

Invariants:
- Every segment is checked against the manifest's size and SHA-256; a mismatch is a failed
  attempt (-> fallback), never accepted into the buffer.
- Errors that trigger fallback: connection failure, timeout, non-200 status, short body,
  wrong hash. When every location failed, the session reloads steering (bounded) from the
  latest steering document's RELOAD-URI (a path on the control plane; it carries the session's
  segment count), or /steering/<title> if none (or no path) was given.
- A 404 with `X-Ocalab-Content-Miss: 1` is a content miss, not an error: the player goes to
  its next location at once (no retry pause) and skips that location (by pathway, also after a
  steering reload) for the rest of the session. It counts in `content_misses`, not in
  `failed_attempts`; a 404 without the header is an error like any other status.
- A chunk's `fallback_reason` is "" when the top location served it on the first try,
  "content_miss" when only content misses stood in the way, else "error".
- Media clock = wall clock * speed. Buffer, stalls and startup are in media seconds; the
  throughput the ABR sees is divided by speed, so a run at speed k is the same experiment as
  speed 1 over a network k times slower (bandwidth / k, latency * k). Use speed 1 for data.
  (Timeouts and the re-probe period reprobe_s stay in wall seconds.)
- A session ends when its last segment is buffered: the remaining playout cannot stall.
- A chunk row's conn/connect_ms/tls_ms/ttfb_ms keep connection set-up and the request apart
  (appliances.conntiming): ttfb_ms never includes a TCP connect or TLS handshake. The session
  summary carries the first media connection's (first_*) and the login's (control_*).
- A throughput sample is a chunk's bytes over its request on a ready connection (ttfb
  included, connect and handshake not), as a real player measures it: dash.js times requests
  on a warm connection and ExoPlayer starts its clock when the transfer opens.
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Callable

import aiohttp

from appliances.abr import Abr, AbrInput
from appliances.bodyread import read_digest
from appliances.conntiming import ConnTiming
from appliances.httpcore import CONTENT_MISS_HEADER, NODE_HEADER
from appliances.manifest_adapter import mpd_session, steering_server
from appliances.player_model import LocationCursor
from appliances.qoe import PlaybackBuffer, summarize
from contracts.steering import RETRY_PAUSE_S, retry_pause_s

log = logging.getLogger("ocalab.player")
MAX_ERRORS = 20
FETCH_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError, OSError)
# Control-plane calls (login, manifest): a connect timeout that outlasts two lost SYNs (TCP
# retries at 1 and 3 s), then CONTROL_TRIES attempts in all, after pauses of 1 and 2 s.
CONTROL_TIMEOUT = aiohttp.ClientTimeout(total=20, sock_connect=6)
CONTROL_TRIES = 3
CONTROL_PAUSE_S = 1.0


@dataclass(frozen=True)
class SessionConfig:
    control_url: str
    abr: Abr
    segments: int | None = None  # play only the first N segments
    speed: float = 1.0
    max_buffer_s: float = 30.0
    reprobe_segments: int = 4
    reprobe_s: float = 10.0
    retry_pause_s: float = RETRY_PAUSE_S  # wall seconds before the first retry of a location
    # (its `retries`); doubled for each further retry (contracts.steering.retry_pause_s)
    max_steering_reloads: int = 5
    connect_timeout_s: float = 3.0
    read_timeout_s: float = 5.0
    segment_timeout_s: float = 20.0
    manifest: str = "json"  # "json": GET /play; "dash": the MPD and its steering server


class SegmentError(Exception):
    """A fetched segment was refused (status, size or hash); the message says why."""


class ContentMiss(SegmentError):
    """The location answered that it lacks the object (404 + CONTENT_MISS_HEADER)."""


@dataclass
class Attempt:
    ok: bool
    location: dict
    error: str = ""
    size_bytes: int = 0
    ttfb_ms: float = 0.0  # request on a ready connection to the response headers
    conn: dict = field(default_factory=dict)  # conn, connect_ms, tls_ms (appliances.conntiming)
    download_ms: float = 0.0
    request_unix: float = 0.0  # wall time the request was sent
    node: str = ""  # X-Ocalab-Node of the response: the server that really sent the bytes
    content_miss: bool = False  # the location lacks the object (it answered, the path works)


@dataclass
class ViewerSession:
    """State of one viewer; `summary()` is valid at any point (also after cancellation)."""

    viewer: str
    title: str
    cfg: SessionConfig
    on_chunk: Callable[[dict], None]
    status: str = "pending"
    error: str = ""
    bitrates: list[int] = field(default_factory=list)
    tput_kbps: list[float] = field(default_factory=list)
    servers: dict[str, int] = field(default_factory=dict)
    startup_s: float | None = None
    bytes_total: int = 0
    failed_attempts: int = 0
    hash_failures: int = 0
    fallback_chunks: int = 0
    steering_reloads: int = 0
    control_retries: int = 0  # login/manifest calls tried again after no answer
    retry_rung_changes: int = 0  # attempts after a failed one at another rung (the ABR asked again)
    redirects: int = 0
    content_misses: int = 0  # 404s with CONTENT_MISS_HEADER: each location at most once
    _missed_pathways: set[str] = field(default_factory=set)  # skipped for the rest of the session
    errors: list[str] = field(default_factory=list)  # first MAX_ERRORS failed attempts
    _locations: list = field(default_factory=list)  # latest ranked list, to name redirect targets
    _reload_uri: str = ""  # the latest steering document's RELOAD-URI ("" : none given)
    first_location: str | None = None
    first_conn: dict = field(default_factory=dict)  # the first media connection's conntiming fields
    control_conn: dict = field(default_factory=dict)  # the login's (a new connection: its set-up)
    segment_s: float = 4.0
    started_unix: float = 0.0
    buffer: PlaybackBuffer | None = None
    _last_mono: float = 0.0
    _start_mono: float = 0.0
    _stall_mark: float = 0.0  # buffer.rebuffer_s when the previous chunk arrived
    _token: str = ""

    def _media_tick(self) -> None:
        now = time.monotonic()
        if self.buffer is not None:
            self.buffer.drain((now - self._last_mono) * self.cfg.speed)
        self._last_mono = now

    async def run(self, http: aiohttp.ClientSession) -> None:
        self.started_unix = time.time()
        self._start_mono = self._last_mono = time.monotonic()
        self.status = "running"
        manifest = await self._manifest(http)
        self.segment_s = float(manifest["segment_s"])
        self.buffer = PlaybackBuffer(start_threshold_s=self.segment_s)
        ladder = tuple(manifest["ladder_kbps"])
        locations = self._locations = manifest["steering"]["locations"]
        self._reload_uri = str(manifest["steering"].get("RELOAD-URI") or "")
        self.first_location = locations[0]["pathway"] if locations else None
        cursor = self._cursor(locations)
        for index in range(int(manifest["n_segments"])):
            await self._wait_for_room()
            locations, cursor = await self._fetch_with_fallback(
                http, locations, cursor, index, manifest["segments"], ladder)
        self.status = "ok"

    def _choose(self, ladder: tuple[int, ...]) -> int:
        """The ABR's rung for the next attempt, from the buffer level now."""
        self._media_tick()
        return self.cfg.abr.choose(AbrInput(
            buffer_s=self.buffer.level_s, ladder_kbps=ladder,
            throughput_kbps=tuple(self.tput_kbps[-10:]),
            last_kbps=self.bitrates[-1] if self.bitrates else None))

    def _cursor(self, locations: list) -> LocationCursor:
        if not locations:
            raise SegmentError("steering returned no locations")
        cursor = LocationCursor(len(locations), self.cfg.reprobe_segments, self.cfg.reprobe_s,
                                retries=tuple(int(loc.get("retries", 0)) for loc in locations))
        for i, loc in enumerate(locations):  # a steering reload may list them again
            if loc["pathway"] in self._missed_pathways:
                cursor.content_missed(i)
        return cursor

    async def _wait_for_room(self) -> None:
        self._media_tick()
        excess_s = self.buffer.level_s + self.segment_s - self.cfg.max_buffer_s
        if excess_s > 0:
            await asyncio.sleep(excess_s / self.cfg.speed)
            self._media_tick()

    async def _manifest(self, http: aiohttp.ClientSession) -> dict:
        """Login and playback manifest. Without an answer (a connection error or timeout: the
        control plane is across transit, which the no-OCA arms saturate) they are tried again
        up to CONTROL_TRIES times, as a real client does; an HTTP answer is final."""
        for attempt in range(1, CONTROL_TRIES + 1):
            try:
                return await self._manifest_once(http)
            except aiohttp.ClientResponseError:
                raise
            except FETCH_ERRORS as exc:
                if attempt == CONTROL_TRIES:
                    raise
                self.control_retries += 1
                log.info("%s: control plane call failed (%s: %s); trying again", self.viewer,
                         type(exc).__name__, exc)
                await asyncio.sleep(CONTROL_PAUSE_S * attempt)
        raise AssertionError("unreachable")

    async def _manifest_once(self, http: aiohttp.ClientSession) -> dict:
        base = self.cfg.control_url
        timing = ConnTiming()
        async with http.post(f"{base}/login", json={"account": self.viewer}, timeout=CONTROL_TIMEOUT,
                             trace_request_ctx=timing) as r:
            self.control_conn = timing.fields(time.monotonic())
            r.raise_for_status()
            self._token = (await r.json())["account_token"]
        params = {"segments": str(self.cfg.segments)} if self.cfg.segments else {}
        if self.cfg.manifest == "dash":
            return await self._dash_manifest(http, params)
        async with http.get(f"{base}/play/{self.title}", params=params,
                            headers=self._auth(), timeout=CONTROL_TIMEOUT) as r:
            if r.status != 200:
                raise SegmentError(f"playback API answered {r.status}: {(await r.text())[:200]}")
            return await r.json()

    async def _dash_manifest(self, http: aiohttp.ClientSession, params: dict) -> dict:
        """The MPD, then its Content Steering server before start (queryBeforeStart)."""
        async with http.get(f"{self.cfg.control_url}/dash/{self.title}.mpd", params=params,
                            headers=self._auth(), timeout=CONTROL_TIMEOUT) as r:
            if r.status != 200:
                raise SegmentError(f"MPD request answered {r.status}: {(await r.text())[:200]}")
            mpd = await r.text()
        url = steering_server(mpd)
        doc = None
        if url is not None:
            async with http.get(url, headers=self._auth(), timeout=CONTROL_TIMEOUT) as r:
                if r.status != 200:
                    raise SegmentError(f"steering server answered {r.status}")
                doc = await r.json()
        return mpd_session(mpd, doc)

    def _auth(self) -> dict:
        return {"Authorization": f"Bearer {self._token}"}

    async def _reload_steering(self, http: aiohttp.ClientSession) -> list:
        self.steering_reloads += 1
        if self.steering_reloads > self.cfg.max_steering_reloads:
            raise SegmentError("every location failed and steering reloads are used up")
        await asyncio.sleep(0.5 / self.cfg.speed * min(self.steering_reloads, 4))
        uri = self._reload_uri if self._reload_uri.startswith("/") else f"/steering/{self.title}"
        async with http.get(f"{self.cfg.control_url}{uri}", headers=self._auth()) as r:
            if r.status != 200:
                raise SegmentError(f"steering reload answered {r.status}")
            doc = await r.json()
        self._locations = doc["locations"]
        self._reload_uri = str(doc.get("RELOAD-URI") or self._reload_uri)
        return self._locations

    async def _fetch_with_fallback(self, http, locations, cursor, index, segments, ladder):
        """Segment `index` from the first location that delivers it. Every attempt asks the ABR
        again: a failed one (a cut transfer, a timeout) drained the buffer meanwhile, and a real
        player does not repeat a rung its buffer can no longer afford on a path it has not measured."""
        kinds, tried_kbps = set(), None  # why this chunk's attempts failed: content_miss, error
        while True:
            if cursor.exhausted:
                try:
                    locations = await self._reload_steering(http)
                except FETCH_ERRORS as exc:
                    log.warning("%s: steering reload failed: %s", self.viewer, exc)
                    continue
                cursor = self._cursor(locations)
            i = cursor.pick(time.monotonic())
            kbps = self._choose(ladder)
            if kinds and kbps != tried_kbps:
                self.retry_rung_changes += 1
            tried_kbps = kbps
            size, sha = segments[str(kbps)][index]
            att = await self._fetch(http, locations[i], kbps, index, size, sha)
            if att.ok:
                cursor.succeeded(i)
                self._accept(att, kbps, index, self._fallback_reason(kinds, cursor, i))
                return locations, cursor
            if att.content_miss:  # an answer, not a failure: the next location at once
                kinds.add("content_miss")
                self._content_miss(att.location, cursor, i, index)
                continue
            kinds.add("error")
            self._failed(att, index)
            cursor.failed(i, time.monotonic())
            if cursor.current == i and cursor.retried:  # a retry: give the network time to re-steer
                await asyncio.sleep(retry_pause_s(cursor.retried, self.cfg.retry_pause_s))

    def _failed(self, att: Attempt, index: int) -> None:
        self.failed_attempts += 1
        if len(self.errors) < MAX_ERRORS:
            self.errors.append(f"seg {index} {att.location['pathway']}: {att.error}")
        log.info("%s: %s seg %d from %s failed: %s", self.viewer, self.title, index,
                 att.location["pathway"], att.error)

    def _content_miss(self, loc: dict, cursor: LocationCursor, i: int, index: int) -> None:
        """Location i lacks the title's objects and the serve phase will not fill it: skip it for
        the rest of the session."""
        self.content_misses += 1
        self._missed_pathways.add(loc["pathway"])
        cursor.content_missed(i)
        log.info("%s: %s seg %d: content miss at %s", self.viewer, self.title, index,
                 loc["pathway"])

    @staticmethod
    def _fallback_reason(kinds: set[str], cursor: LocationCursor, i: int) -> str:
        """Why the chunk did not come from the top location on the first try ("" if it did)."""
        if i > 0:  # locations above i were skipped in earlier chunks too
            kinds = kinds | {"content_miss" if cursor.missed_above(i) else "error"}
        if not kinds:
            return ""
        return "content_miss" if kinds == {"content_miss"} else "error"

    async def _fetch(self, http, loc: dict, kbps: int, index: int, size: int, sha: str) -> Attempt:
        url = f"{loc['base_url']}{kbps}/{index}?{loc['query']}"
        timeout = aiohttp.ClientTimeout(total=self.cfg.segment_timeout_s,
                                        sock_connect=self.cfg.connect_timeout_s,
                                        sock_read=self.cfg.read_timeout_s)
        timing, t0_unix = ConnTiming(), time.time()
        t0 = timing.start
        try:
            async with http.get(url, timeout=timeout, trace_request_ctx=timing) as resp:
                conn = timing.fields(time.monotonic())
                if conn["conn"] != "reused" and not self.first_conn:
                    self.first_conn = {k: v for k, v in conn.items() if k != "ttfb_ms"}
                served_by = self._served_by(loc, resp)
                node = resp.headers.get(NODE_HEADER, "")
                if resp.status == 404 and resp.headers.get(CONTENT_MISS_HEADER) == "1":
                    raise ContentMiss("HTTP 404 content miss")
                if resp.status != 200:
                    raise SegmentError(f"HTTP {resp.status}")
                got_bytes, digest = await read_digest(resp, t0)
            if got_bytes != size:
                raise SegmentError(f"size {got_bytes} != manifest {size}")
            if digest != sha:
                self.hash_failures += 1
                raise SegmentError("SHA-256 mismatch")
        except (SegmentError, *FETCH_ERRORS) as exc:
            return Attempt(False, loc, error=f"{type(exc).__name__}: {exc}",
                           content_miss=isinstance(exc, ContentMiss))
        ttfb_ms = conn.pop("ttfb_ms")
        return Attempt(True, served_by, size_bytes=got_bytes, ttfb_ms=ttfb_ms, conn=conn,
                       download_ms=(time.monotonic() - t0) * 1000, request_unix=t0_unix, node=node)

    def _served_by(self, loc: dict, resp: aiohttp.ClientResponse) -> dict:
        """The location that actually sent the bytes (an OCA may redirect a miss upstream)."""
        if not resp.history:
            return loc
        self.redirects += 1
        root = f"{resp.url.scheme}://{resp.url.host}:{resp.url.port}"
        for cand in self._locations:
            if cand["base_url"].startswith(root + "/"):
                return cand
        return {"pathway": resp.url.host + f":{resp.url.port}", "tier": "unknown"}

    def _accept(self, att: Attempt, kbps: int, index: int, fallback_reason: str) -> None:
        fallback = bool(fallback_reason)
        self._media_tick()
        stall_s = self.buffer.rebuffer_s - self._stall_mark
        if self.buffer.add_segment(self.segment_s):
            self.startup_s = (time.monotonic() - self._start_mono) * self.cfg.speed
        self.bitrates.append(kbps)
        self.tput_kbps.append(att.size_bytes * 8 / max(request_ms(att), 1e-3) / self.cfg.speed)
        name = att.location["pathway"]
        self.servers[name] = self.servers.get(name, 0) + 1
        self.bytes_total += att.size_bytes
        self.fallback_chunks += int(fallback)
        self.on_chunk({
            "time": round(time.time(), 4), "request_unix": round(att.request_unix, 4),
            "viewer": self.viewer, "title": self.title,
            "index": index, "kbps": kbps, "bytes": att.size_bytes,
            "download_ms": round(att.download_ms, 3), **att.conn, "ttfb_ms": round(att.ttfb_ms, 3),
            "buffer_s": round(self.buffer.level_s, 4),
            "rebuffer_s": round(stall_s, 4),
            "server": name, "tier": att.location["tier"], "fallback": int(fallback),
            "fallback_reason": fallback_reason, "node": att.node})
        self._stall_mark = self.buffer.rebuffer_s

    def summary(self, abr_name: str) -> dict:
        buf = self.buffer or PlaybackBuffer(start_threshold_s=1.0)
        q = summarize(self.bitrates, self.segment_s, self.startup_s, buf.rebuffer_count,
                      buf.rebuffer_s)
        return {"viewer": self.viewer, "account": self.viewer, "title": self.title,
                "abr": abr_name, "status": self.status, "error": self.error, **q.to_dict(),
                "segments_verified": len(self.bitrates), "bytes": self.bytes_total,
                "failed_attempts": self.failed_attempts, "hash_failures": self.hash_failures,
                "fallback_chunks": self.fallback_chunks, "steering_reloads": self.steering_reloads,
                "control_retries": self.control_retries,
                "retry_rung_changes": self.retry_rung_changes,
                "redirects": self.redirects, "content_misses": self.content_misses,
                "errors": self.errors,
                "first_location": self.first_location, "servers": self.servers,
                **_prefixed("first_", self.first_conn), **_prefixed("control_", self.control_conn),
                "started_unix": self.started_unix, "ended_unix": time.time(),
                "speed": self.cfg.speed}


def request_ms(att: Attempt) -> float:
    """The attempt's time on a ready connection: download_ms less any connect and handshake."""
    setup_ms = sum(float(att.conn.get(k) or 0.0) for k in ("connect_ms", "tls_ms"))
    return att.download_ms - setup_ms


def _prefixed(prefix: str, conn: dict) -> dict:
    """conn, connect_ms, tls_ms of a conntiming row under `prefix` ("" values when none)."""
    return {f"{prefix}{k}": conn.get(k, "") for k in ("conn", "connect_ms", "tls_ms")}
