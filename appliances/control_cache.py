"""Cache-control (OCA heartbeats, fill plans and pushes) and telemetry endpoints.

Endpoints (JSON):
  POST /heartbeat {OCA health JSON with "name"}  -> {"ok": true, "known": bool}
  GET  /ocas                                     -> per-OCA latest health and its age
  GET  /fill/plan?oca=NAME[&segments_per_title=N] -> the plan that would be pushed
  POST /fill/push [{"ocas": [...], "segments_per_title": N}] -> per-OCA push result
  POST /telemetry {session summary}               -> {"ok": true, "count": n}
  GET  /telemetry/count                           -> {"count": n}
Invariants: a push reports every OCA's outcome (HTTP status or error text), never hides one;
an OCA's capacity comes from the deployment (capacity_mb) or else its latest heartbeat.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from typing import Callable, TextIO

import aiohttp
from aiohttp import web

from appliances.content import Catalog
from appliances.control_health import HealthRegistry
from appliances.control_playback import json_error, read_json_object, viewer_ip
from appliances.fillplan import FillPlan, plan_oca
from contracts.deployment import Deployment, OcaSpec

log = logging.getLogger("ocalab.control")


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
                        history=self.history)

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
        results = await self.push(ocas, spt)
        ok = all(r.get("status") == 202 for r in results.values())
        return web.json_response({"ok": ok, "results": results}, status=200 if ok else 502)

    async def push(self, ocas: list[OcaSpec], segments_per_title: int | None = None) -> dict:
        """Plan and POST <oca>/fill for each OCA concurrently; one result dict per OCA."""
        timeout = aiohttp.ClientTimeout(total=10)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            outcomes = await asyncio.gather(*(self._push_one(session, o, segments_per_title)
                                              for o in ocas))
        return dict(zip((o.name for o in ocas), outcomes))

    async def _push_one(self, session: aiohttp.ClientSession, oca: OcaSpec,
                        segments_per_title: int | None) -> dict:
        try:
            plan = await asyncio.to_thread(self.plan, oca, segments_per_title)
        except LookupError as exc:
            return {"error": str(exc)}
        summary = {"titles": len(plan.titles), "segments": len(plan.segments),
                   "planned_bytes": plan.planned_bytes, "sources": list(plan.sources)}
        try:
            async with session.post(f"{oca.url}/fill", json=self._body(oca, plan)) as resp:
                text = await resp.text()
                summary["status"] = resp.status
                if resp.status != 202:
                    summary["error"] = text[:300]
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            summary["error"] = f"{type(exc).__name__}: {exc}"
        return summary

    async def push_when_ready(self, wait_s: float) -> dict:
        """Wait (bounded) until every OCA's capacity is known, then push; log the outcome."""
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline and any(self.capacity_bytes(o) is None
                                                  for o in self.deployment.ocas):
            await asyncio.sleep(0.5)
        results = await self.push(list(self.deployment.ocas))
        log.warning("fill push: %s", json.dumps(results))
        return results


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
