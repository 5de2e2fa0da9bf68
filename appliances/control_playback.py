"""Playback API: account tokens, manifests with ranked signed locations (Content Steering shape).

Endpoints (all JSON):
  POST /login {"account": NAME}            -> {"account", "account_token"}  (testbed: no password)
  GET  /catalog                            -> {"spec", "titles", "popularity"} (caller's region)
  GET  /play/<title>[?segments=N]          -> manifest (Authorization: Bearer <account_token>);
                                              N caps the segment list (first N segments)
  GET  /steering/<title>[?segments=N]      -> steering document only (the RELOAD-URI)
  GET  /rank?viewer=IP&title=T[&need=K]    -> {"locations": [...]} from the local policy (the
                                              same shape RemoteSteering expects)
Invariants:
- `segments` and `need` are integers >= 1 when given (400 otherwise); segments is capped at the
  title's segment count and defaults to all of them.
- A session of n segments may play any rung of the ladder, so steering ranks for it with
  need_objects = len(rungs_of(title)) * n (an OCA holding fewer objects of the title is a content
  miss), both at the controller (&need=) and in the local fallback; the steering document's
  RELOAD-URI carries `?segments=n`, so a reload ranks for the same session.
- Account tokens are `<account>.<hex HMAC>` with a key derived from the control key, so an
  account token can never be confused with a URL token.
- Every location of one manifest shares one URL token: path_prefix `/v/<title>/`, client
  prefix = the viewer's region prefix (or the viewer's /32), expiry now + token_ttl_s.
- A location entry is {"pathway", "tier", "base_url": root + "/v/<title>/", "query", "reason",
  "retries"} (retries: how often the player tries this location again before falling back);
  the player fetches base_url + f"{kbps}/{index}?" + query.
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import json
import logging
import re
import time
from dataclasses import dataclass
from typing import Callable, TextIO

from aiohttp import web

from appliances import tokens
from appliances.content import Catalog, ContentError
from appliances.control_tables import SegmentTables
from appliances.fillplan import regional_popularity
from appliances.steering_local import Steering, SteeringUnavailable
from contracts.deployment import Deployment
from contracts.steering import Location

log = logging.getLogger("ocalab.control")
ACCOUNT_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
STEERING_TTL_S = 60


def _account_key(key: bytes) -> bytes:
    return hmac.new(key, b"ocalab-account-tokens-v1", hashlib.sha256).digest()


def account_token(key: bytes, account: str) -> str:
    if not ACCOUNT_RE.match(account or ""):
        raise ValueError("account must be 1-64 characters of [A-Za-z0-9_.-]")
    mac = hmac.new(_account_key(key), account.encode(), hashlib.sha256).hexdigest()[:32]
    return f"{account}.{mac}"


def check_account_token(key: bytes, token: str) -> str | None:
    """The account name if the token is genuine, else None."""
    account, _, mac = (token or "").rpartition(".")
    if not ACCOUNT_RE.match(account):
        return None
    good = account_token(key, account).rpartition(".")[2]
    return account if hmac.compare_digest(good.encode(), mac.encode()) else None


def json_error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def steering_document(title: str, locations: list[Location], query: str,
                      ttl_s: int = STEERING_TTL_S, *, segments: int | None = None,
                      account_token: str | None = None) -> dict:
    """HLS/DASH Content Steering fields (PATHWAY-PRIORITY for HLS, SERVICE-LOCATION-PRIORITY
    for DASH: the same ranked names) plus our signed location entries. segments: the session's
    segment count, carried in the RELOAD-URI (None: left out, meaning all); account_token: put
    in the RELOAD-URI too, for players that cannot send an Authorization header."""
    params = ([] if segments is None else [f"segments={segments}"]) + \
        ([] if account_token is None else [f"account_token={account_token}"])
    reload_uri = f"/steering/{title}" + (f"?{'&'.join(params)}" if params else "")
    names = [loc.name for loc in locations]
    return {"VERSION": 1, "TTL": ttl_s, "RELOAD-URI": reload_uri,
            "PATHWAY-PRIORITY": names, "SERVICE-LOCATION-PRIORITY": list(names),
            "locations": [{"pathway": loc.name, "tier": loc.tier,
                           "base_url": f"{loc.base_url_root}/v/{title}/", "query": query,
                           "reason": loc.reason, "retries": loc.retries} for loc in locations]}


@dataclass
class PlaybackService:
    deployment: Deployment
    catalog: Catalog
    key: bytes
    steering: Steering
    fallback_steering: Steering
    token_ttl_s: int = 3600
    steering_log: TextIO | None = None
    clock: Callable[[], float] = time.time
    tables: SegmentTables | None = None
    steering_ttl_s: int = STEERING_TTL_S  # TTL of steering documents: how often players re-ask

    def __post_init__(self) -> None:
        if self.tables is None:
            self.tables = SegmentTables(self.catalog)

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/login", self.login), web.get("/catalog", self.catalog_info),
                web.get("/play/{title}", self.play), web.get("/steering/{title}", self.steer),
                web.get("/rank", self.rank)]

    async def rank(self, request: web.Request) -> web.Response:
        """The local policy behind the RemoteSteering HTTP shape (for comparison and tests)."""
        viewer, title = request.query.get("viewer", ""), request.query.get("title", "")
        try:
            ipaddress.ip_address(viewer)
            self.catalog.segment_count(title)
        except ValueError as exc:  # ContentError is a ValueError
            return json_error(400, f"need ?viewer=IP&title=T: {exc}")
        need = positive_int_query(request, "need")
        if isinstance(need, web.Response):
            return need
        locs = self.fallback_steering.rank(viewer, title, self.clock(), need)
        return web.json_response({"locations": [loc.to_json() for loc in locs]})

    async def login(self, request: web.Request) -> web.Response:
        body = await read_json_object(request)
        try:
            tok = account_token(self.key, str(body.get("account", "")))
        except ValueError as exc:
            return json_error(400, str(exc))
        return web.json_response({"account": body["account"], "account_token": tok})

    async def catalog_info(self, request: web.Request) -> web.Response:
        base = self.catalog.popularity()
        region = self.deployment.region_of_ip(viewer_ip(request))
        pop = regional_popularity(base, region.preference_seed) if region else base
        return web.json_response({"spec": json.loads(self.catalog.spec.to_json()),
                                  "region": region.name if region else None,
                                  "titles": self.catalog.titles(), "popularity": pop})

    def _authorize(self, request: web.Request) -> str | None:
        """The account of the request's token: `Authorization: Bearer T`, else `?account_token=T`
        (manifest and steering URLs that a browser player fetches without custom headers)."""
        auth = request.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            return check_account_token(self.key, auth[7:])
        return check_account_token(self.key, request.query.get("account_token", ""))

    @staticmethod
    def url_token(request: web.Request) -> str | None:
        """The `?account_token=` that authorized the request (None when a Bearer header did)."""
        if request.headers.get("Authorization", "").startswith("Bearer "):
            return None
        return request.query.get("account_token")

    def _title_or_error(self, request: web.Request) -> tuple[str, int] | web.Response:
        title = request.match_info["title"]
        try:
            total = self.catalog.segment_count(title)
        except ContentError:
            return json_error(404, "unknown title")
        return title, total

    def need_objects(self, title: str, n_segments: int) -> int:
        """Objects of a title a session of its first n_segments needs: every rung of each."""
        return len(self.catalog.rungs_of(title)) * n_segments

    async def _rank(self, ip: str, title: str, now: float,
                    need_objects: int) -> tuple[list[Location], dict[str, str]]:
        """Ranked locations and the OCAs steering left out (name -> why; known only from the
        controller's answer: the blocking steering is RemoteSteering). The controller and the
        local fallback rank with the same need_objects."""
        if getattr(self.steering, "blocking", False):
            try:
                return await asyncio.to_thread(self.steering.rank_detail, ip, title, now, need_objects)
            except SteeringUnavailable as exc:
                log.warning("steering unavailable, using local policy: %s", exc)
                locs = self.fallback_steering.rank(ip, title, now, need_objects)
                return [Location(l.name, l.tier, l.base_url_root,
                                 {**l.reason, "steering": "local-fallback"}, l.retries) for l in locs], {}
        return self.steering.rank(ip, title, now, need_objects), {}

    async def _document(self, request: web.Request, title: str, account: str,
                        n_segments: int) -> tuple[dict, int]:
        """The steering document for a session of the title's first n_segments."""
        now = self.clock()
        ip = viewer_ip(request)
        need = self.need_objects(title, n_segments)
        locations, excluded = await self._rank(ip, title, now, need)
        exp = int(now + self.token_ttl_s)
        cp = self.deployment.client_prefix(ip)
        query = tokens.sign(self.key, f"/v/{title}/", cp, exp)
        doc = steering_document(title, locations, query, self.steering_ttl_s, segments=n_segments,
                                account_token=self.url_token(request))
        if self.steering_log is not None:
            self.steering_log.write(json.dumps({
                "ts": now, "viewer": ip, "account": account, "title": title,
                "segments": n_segments, "need_objects": need,
                "ranked": doc["PATHWAY-PRIORITY"],
                "reasons": {l.name: l.reason for l in locations}, "excluded": excluded}) + "\n")
            self.steering_log.flush()
        return {**doc, "client_prefix": cp, "viewer_ip": ip}, exp

    def _account_and_title(self, request: web.Request) -> tuple[str, str, int] | web.Response:
        """(account, title, segments in the title), or the 401/4xx response to send instead."""
        account = self._authorize(request)
        if account is None:
            return json_error(401, "missing or invalid account token")
        found = self._title_or_error(request)
        return found if isinstance(found, web.Response) else (account, *found)

    async def play(self, request: web.Request) -> web.Response:
        found = self._account_and_title(request)
        if isinstance(found, web.Response):
            return found
        account, title, total = found
        n = session_segments(request, total)
        if isinstance(n, web.Response):
            return n
        table = await self.tables.get(title, n)
        doc, exp = await self._document(request, title, account, n)
        return web.json_response({"title": title, "account": account,
                                  "segment_s": self.catalog.spec.segment_s,
                                  "ladder_kbps": list(self.catalog.ladder_of(title)),
                                  "n_segments": n, "segments": table, "expires_unix": exp,
                                  "steering": doc})

    async def steer(self, request: web.Request) -> web.Response:
        found = self._account_and_title(request)
        if isinstance(found, web.Response):
            return found
        account, title, total = found
        n = session_segments(request, total)
        if isinstance(n, web.Response):
            return n
        doc, _ = await self._document(request, title, account, n)
        return web.json_response(doc)


def positive_int_query(request: web.Request, name: str) -> int | None | web.Response:
    """Query parameter `name` as an integer >= 1, None if absent, or the 400 to send instead."""
    raw = request.query.get(name)
    if raw is None:
        return None
    try:
        value = int(raw)
    except ValueError:
        return json_error(400, f"{name} must be an integer")
    return value if value >= 1 else json_error(400, f"{name} must be >= 1")


def session_segments(request: web.Request, total: int) -> int | web.Response:
    """The session's segment count: ?segments=N capped at the title's `total` ("the first N
    segments" of a shorter title: all of them), `total` when absent, or the 400 to send."""
    n = positive_int_query(request, "segments")
    if isinstance(n, web.Response):
        return n
    return total if n is None else min(n, total)


def viewer_ip(request: web.Request) -> str:
    ip = request.remote or ""
    return ip[7:] if ip.startswith("::ffff:") else ip


async def read_json_object(request: web.Request) -> dict:
    """The request body as a JSON object, or raise HTTPBadRequest with a JSON error."""
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise web.HTTPBadRequest(text=json.dumps({"error": "body is not valid JSON"}),
                                 content_type="application/json") from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text=json.dumps({"error": "body must be a JSON object"}),
                                 content_type="application/json")
    return body
