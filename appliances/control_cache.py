"""Cache-control (OCA heartbeats, fill plans and pushes) and telemetry endpoints.

Endpoints (JSON):
  POST /heartbeat {OCA health JSON with "name"}  -> {"ok": true, "known": bool}
  GET  /ocas                                     -> per-OCA latest health and its age
  GET  /fill/plan?oca=NAME[&segments_per_title=N] -> the plan that would be pushed
  POST /fill/push [{"ocas": [...], "segments_per_title": N}] -> per-OCA push result; without
       "ocas" a tiered push of every OCA (IXP tier first, waited for, then embedded) that also
       returns "tiers": per-tier timing
  POST /telemetry {session summary}               -> {"ok": true, "count": n}
  GET  /telemetry/count                           -> {"count": n}
Every POST <oca>/fill is signed with `command_key` (appliances.commands) when one is set.
Invariants: a push reports every OCA's outcome (HTTP status or error text), never hides one;
an OCA's capacity comes from the deployment (capacity_mb) or else its latest heartbeat.
Tiered push: tiers go in FILL_TIER_ORDER (IXP, then embedded), so an embedded OCA asks the IXP
OCAs (its 2nd-ranked fill source) only after they filled. All tiers share one fill window (its
end fixed when the push starts), so push fill never runs past the night whatever the tiering.
The next tier starts once every OCA of the tier that accepted its plan (202) is settled
(`fill_settled`) or the tier's deadline passed (window end + TIER_GRACE_S, or the caller's
bound if sooner; logged); a tier whose wait timed out still hands over: every OCA is pushed
and reported.
"""
from __future__ import annotations

import asyncio
import json
import logging
import ssl
import time
from dataclasses import dataclass
from typing import Callable, TextIO

import aiohttp
from aiohttp import web

from appliances import commands
from appliances.content import Catalog
from appliances.control_health import HealthRegistry
from appliances.control_playback import json_error, read_json_object, viewer_ip
from appliances.fillplan import FillPlan, plan_oca
from contracts.deployment import Deployment, OcaSpec

log = logging.getLogger("ocalab.control")

FILL_TIER_ORDER = ("ixp", "embedded")  # fill from the origin side inwards
FILL_FINAL_STATES = ("done", "window_closed")
TIER_POLL_S = 0.5
TIER_GRACE_S = 5.0  # after a tier's window end: its in-flight objects finish
MAX_POLL_ERRORS = 3  # consecutive failed status polls after which an OCA is given up on


def fill_tiers(ocas: list[OcaSpec]) -> list[tuple[str, list[OcaSpec]]]:
    """Group OCAs into push tiers: FILL_TIER_ORDER first, any other tier after (by name);
    the given order is kept inside a tier; empty tiers are dropped. Every OCA is in one tier."""
    names = list(FILL_TIER_ORDER) + sorted({o.tier for o in ocas} - set(FILL_TIER_ORDER))
    groups = [(t, [o for o in ocas if o.tier == t]) for t in names]
    return [(t, g) for t, g in groups if g]


def fill_settled(plan_id: int, status: dict | None, poll_errors: int) -> bool:
    """Whether an OCA that accepted plan `plan_id` needs no more waiting: its /fill/status
    shows that plan (or a newer one) in a final state, a newer plan replaced it, or its
    status could not be read MAX_POLL_ERRORS times in a row."""
    if poll_errors >= MAX_POLL_ERRORS:
        return True
    if not isinstance(status, dict) or not isinstance(status.get("plan_id"), int):
        return False
    return status["plan_id"] > plan_id or (status["plan_id"] == plan_id
                                           and status.get("state") in FILL_FINAL_STATES)


def tier_waits(results: dict) -> dict[str, int]:
    """OCA name -> accepted plan_id, for the pushed OCAs worth waiting for (202 + plan_id)."""
    return {name: r["plan_id"] for name, r in results.items()
            if r.get("status") == 202 and isinstance(r.get("plan_id"), int)}


def tier_deadline_s(now_s: float, window_left_s: float, bound_s: float | None) -> float:
    """When to stop waiting for a tier (same clock as now_s): the window end plus
    TIER_GRACE_S (objects in flight at the window end finish), or bound_s if sooner."""
    wait_s = max(0.0, window_left_s) + TIER_GRACE_S
    return now_s + (wait_s if bound_s is None else min(wait_s, bound_s))


@dataclass
class CacheControl:
    deployment: Deployment
    catalog: Catalog
    registry: HealthRegistry
    fill_window_s: float = 12 * 3600.0
    fill_rate_mbps: float = 100.0
    segments_per_title: int | None = None  # None: whole titles
    clock: Callable[[], float] = time.time
    # region -> title -> predicted share (fillplan.history_popularity); None: plan from the
    # regional popularity players draw from (the truth)
    history: dict[str, dict[str, float]] | None = None
    push_started_unix: float | None = None  # when push_when_ready began (midnight of a fill run)
    releases: tuple[str, ...] = ()  # titles released today: first in every plan (fillplan.plan_oca)
    command_key: bytes | None = None  # signs every POST <oca>/fill (appliances.commands)
    client_ssl: ssl.SSLContext | bool = True  # https OCAs: the lab CA's context (True: system CAs)

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/heartbeat", self.heartbeat), web.get("/ocas", self.ocas),
                web.get("/fill/plan", self.fill_plan), web.post("/fill/push", self.fill_push)]

    async def heartbeat(self, request: web.Request) -> web.Response:
        body = await read_json_object(request)
        name = body.get("name")
        if not isinstance(name, str) or not name:
            return json_error(400, "heartbeat needs a non-empty string 'name'")
        known = any(o.name == name for o in self.deployment.ocas)
        self.registry.update(name, body, self.clock())
        return web.json_response({"ok": True, "known": known})

    async def ocas(self, request: web.Request) -> web.Response:
        now = self.clock()
        snap = self.registry.snapshot()
        out = []
        for o in self.deployment.ocas:
            e = snap.get(o.name)
            out.append({"name": o.name, "tier": o.tier, "url": o.url,
                        "age_s": None if e is None else round(e.age_s(now), 3),
                        "health": None if e is None else e.health})
        return web.json_response({"ocas": out})

    def capacity_bytes(self, oca: OcaSpec) -> int | None:
        if oca.capacity_bytes is not None:
            return oca.capacity_bytes
        e = self.registry.get(oca.name)
        cap = e.health.get("capacity_bytes") if e else None
        return int(cap) if isinstance(cap, (int, float)) and cap >= 0 else None

    def plan(self, oca: OcaSpec, segments_per_title: int | None) -> FillPlan:
        """The OCA's fill plan, from `history` when set (else the truth); LookupError when
        its capacity is unknown."""
        cap = self.capacity_bytes(oca)
        if cap is None:
            raise LookupError(f"capacity of {oca.name} unknown: no capacity_mb in the "
                              f"deployment and no heartbeat yet")
        total = self.catalog.segment_count(self.catalog.titles()[0])  # same for every title
        n = min(segments_per_title or self.segments_per_title or total, total)
        return plan_oca(self.deployment, oca, self.catalog.popularity(),
                        self.catalog.spec.ladder_kbps, n, self.catalog.segment_size, cap,
                        history=self.history, releases=self.releases)

    def _body(self, oca: OcaSpec, plan: FillPlan) -> dict:
        rate = oca.fill_rate_mbps if oca.fill_rate_mbps is not None else self.fill_rate_mbps
        return plan.request_body(rate_mbps=rate, window_end_unix=self.clock() + self.fill_window_s)

    def _select(self, names) -> list[OcaSpec]:
        if names is None:
            return list(self.deployment.ocas)
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ValueError("'ocas' must be a list of OCA names")
        return [self.deployment.oca(n) for n in names]

    async def fill_plan(self, request: web.Request) -> web.Response:
        try:
            oca = self.deployment.oca(request.query.get("oca", ""))
            spt = _opt_int(request.query.get("segments_per_title"))
            plan = await asyncio.to_thread(self.plan, oca, spt)
        except KeyError as exc:
            return json_error(404, str(exc.args[0]))
        except (LookupError, ValueError) as exc:
            return json_error(409 if isinstance(exc, LookupError) else 400, str(exc))
        return web.json_response({"oca": oca.name, "titles": list(plan.titles),
                                  "planned_bytes": plan.planned_bytes,
                                  "capacity_bytes": plan.capacity_bytes,
                                  "body": self._body(oca, plan)})

    async def fill_push(self, request: web.Request) -> web.Response:
        body = await read_json_object(request) if request.can_read_body else {}
        try:
            ocas = self._select(body.get("ocas"))
            spt = _opt_int(body.get("segments_per_title"))
        except KeyError as exc:
            return json_error(404, str(exc.args[0]))
        except ValueError as exc:
            return json_error(400, str(exc))
        out: dict = {}
        if body.get("ocas") is None:
            results, out["tiers"] = await self.push_tiered(ocas, spt)
        else:
            results = await self.push(ocas, spt)
        ok = all(r.get("status") == 202 for r in results.values())
        return web.json_response({"ok": ok, "results": results, **out},
                                 status=200 if ok else 502)

    async def push(self, ocas: list[OcaSpec], segments_per_title: int | None = None) -> dict:
        """Plan and POST <oca>/fill for each OCA concurrently; one result dict per OCA."""
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10),
                                         connector=aiohttp.TCPConnector(ssl=self.client_ssl)
                                         ) as session:
            return await self._push_all(session, ocas, segments_per_title)

    async def _push_all(self, session: aiohttp.ClientSession, ocas: list[OcaSpec],
                        segments_per_title: int | None, window_end_unix: float | None = None
                        ) -> dict:
        outcomes = await asyncio.gather(*(self._push_one(session, o, segments_per_title,
                                                         window_end_unix) for o in ocas))
        return dict(zip((o.name for o in ocas), outcomes))

    async def push_tiered(self, ocas: list[OcaSpec], segments_per_title: int | None = None,
                          tier_wait_s: float | None = None, poll_s: float = TIER_POLL_S
                          ) -> tuple[dict, list[dict]]:
        """Push tier after tier (`fill_tiers`), waiting for each tier's fills to settle before
        the next; returns (one result per OCA, one timing record per tier). Every tier gets
        the same window end; the last tier is not waited for. tier_wait_s bounds each wait
        (default: until the window end)."""
        results: dict = {}
        timings: list[dict] = []
        tiers = fill_tiers(ocas)
        window_end_unix = self.clock() + self.fill_window_s
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10),
                                         connector=aiohttp.TCPConnector(ssl=self.client_ssl)
                                         ) as session:
            for n, (tier, members) in enumerate(tiers):
                t0 = time.monotonic()
                pushed = await self._push_all(session, members, segments_per_title,
                                              window_end_unix)
                results.update(pushed)
                rec = {"tier": tier, "ocas": [o.name for o in members],
                       "push_s": round(time.monotonic() - t0, 3)}
                if n + 1 < len(tiers):
                    deadline = tier_deadline_s(t0, window_end_unix - self.clock(), tier_wait_s)
                    waits = tier_waits(pushed)
                    rec["timed_out"] = await self._await_tier(session, members, waits,
                                                              deadline, poll_s)
                rec["elapsed_s"] = round(time.monotonic() - t0, 3)
                timings.append(rec)
                log.warning("fill push tier %s: %s", tier, json.dumps(rec))
        return results, timings

    async def _await_tier(self, session: aiohttp.ClientSession, members: list[OcaSpec],
                          waits: dict[str, int], deadline_s: float, poll_s: float) -> list[str]:
        """Poll /fill/status of the OCAs in `waits` until all are settled or the monotonic
        deadline passes; returns the names still unsettled (logged), [] when all settled."""
        urls = {o.name: o.url for o in members}
        errors = dict.fromkeys(waits, 0)
        pending = sorted(waits)
        while pending and time.monotonic() < deadline_s:
            await asyncio.sleep(poll_s)
            polled = await asyncio.gather(*(self._fill_status(session, urls[n]) for n in pending))
            for name, status in zip(pending, polled):
                errors[name] = 0 if status is not None else errors[name] + 1
            pending = [n for n, s in zip(pending, polled)
                       if not fill_settled(waits[n], s, errors[n])]
        if pending:
            log.warning("fill push: tier wait timed out, pushing the next tier while %s still "
                        "fill", ", ".join(pending))
        return pending

    @staticmethod
    async def _fill_status(session: aiohttp.ClientSession, url: str) -> dict | None:
        """GET <oca>/fill/status as a dict; None when it cannot be read."""
        try:
            async with session.get(f"{url}/fill/status") as resp:
                body = await resp.json(content_type=None) if resp.status == 200 else None
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError):
            return None
        return body if isinstance(body, dict) else None

    async def _push_one(self, session: aiohttp.ClientSession, oca: OcaSpec,
                        segments_per_title: int | None, window_end_unix: float | None = None
                        ) -> dict:
        """Plan one OCA and POST its plan (window end: window_end_unix, else now + window);
        the result holds the HTTP status and plan_id, or the error text."""
        try:
            plan = await asyncio.to_thread(self.plan, oca, segments_per_title)
        except LookupError as exc:
            return {"error": str(exc)}
        body = self._body(oca, plan)
        if window_end_unix is not None:
            body["window_end_unix"] = window_end_unix
        summary = {"titles": len(plan.titles), "segments": len(plan.segments),
                   "planned_bytes": plan.planned_bytes, "sources": list(plan.sources),
                   "window_end_unix": body["window_end_unix"]}
        try:
            data, headers = self.command(f"{oca.url}/fill", body)
            async with session.post(f"{oca.url}/fill", data=data, headers=headers) as resp:
                text = await resp.text()
                summary["status"] = resp.status
                if resp.status != 202:
                    summary["error"] = text[:300]
                else:
                    summary["plan_id"] = _plan_id(text)
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            summary["error"] = f"{type(exc).__name__}: {exc}"
        return summary

    def command(self, url: str, body: dict) -> tuple[bytes, dict[str, str]]:
        """The JSON bytes and headers of a POST command to `url`, signed when command_key is
        set (an OCA started without a key refuses unsigned commands unless told otherwise)."""
        data = json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        if self.command_key is not None:
            headers.update(commands.sign(self.command_key, "POST", commands.target_of(url), data,
                                         self.clock()))
        return data, headers

    async def push_when_ready(self, wait_s: float, tier_wait_s: float | None = None) -> dict:
        """Wait (bounded by wait_s) until every OCA's capacity is known, then push tiered
        (`push_tiered`); log and return {"results": per OCA, "tiers": per-tier timing}."""
        self.push_started_unix = self.clock()
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline and any(self.capacity_bytes(o) is None
                                                  for o in self.deployment.ocas):
            await asyncio.sleep(0.5)
        results, tiers = await self.push_tiered(list(self.deployment.ocas),
                                                tier_wait_s=tier_wait_s)
        log.warning("fill push: %s", json.dumps(results))
        return {"results": results, "tiers": tiers}


def _plan_id(text: str) -> int | None:
    """plan_id of an OCA's 202 answer to POST /fill; None if absent or unreadable."""
    try:
        body = json.loads(text)
    except ValueError:
        return None
    pid = body.get("plan_id") if isinstance(body, dict) else None
    return pid if isinstance(pid, int) and not isinstance(pid, bool) else None


def _opt_int(value) -> int | None:
    if value is None:
        return None
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"expected an integer, got {value!r}") from None
    if n < 1:
        raise ValueError(f"expected an integer >= 1, got {n}")
    return n


@dataclass
class Telemetry:
    """Session summaries from viewers, appended as JSON lines (one per POST)."""

    sink: TextIO | None = None
    count: int = 0
    clock: Callable[[], float] = time.time

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/telemetry", self.post), web.get("/telemetry/count", self.get_count)]

    async def post(self, request: web.Request) -> web.Response:
        body = await read_json_object(request)
        record = {"received_unix": self.clock(), "viewer_ip": viewer_ip(request), **body}
        if self.sink is not None:
            self.sink.write(json.dumps(record, sort_keys=True) + "\n")
            self.sink.flush()
        self.count += 1
        return web.json_response({"ok": True, "count": self.count})

    async def get_count(self, request: web.Request) -> web.Response:
        return web.json_response({"count": self.count})
