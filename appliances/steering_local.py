"""Steering: rank delivery locations for (viewer ip, title) behind one small interface.

`LocalSteering` is the control plane's fallback when the controller is unavailable: the one
ranker (contracts.steering.rank_candidates) fed with the deployment's declared distances;
`RemoteSteering` asks the controller's API (GET url/rank?viewer=IP&title=T[&need=N] ->
{"locations": [...]}). Both take `need_objects`: the objects of the title the session needs
(the control plane passes len(ladder) * segments; None: unknown), see
contracts.steering.content_verdict.

LocalSteering invariants (on top of the ranker's order):
- only OCAs whose served prefixes contain the viewer ip are candidates; the origin always is;
  an OCA whose heartbeat carries "bgp_routes" (its BGP speaker's, --routing bgp) serves exactly
  the viewers those routes match (contracts.steering.bgp_serves), not its deployment entry;
- path metrics are the deployment's `distance_hops` and `rtt_ms` (never "no path"), there is no
  load (policy "nearest"), and heartbeats are judged at `now` (no fail static);
- reason["group"] numbers the groups without the controller's overloaded band: 0 healthy and
  holds what the session needs (or its content is unknown); 1 content miss (still better than
  the origin, since the OCA pulls through and caches); 2 the origin (assumed healthy); 3 health
  miss (no heartbeat, heartbeat older than stale_after_s, or status != ok), kept as a last
  fallback, or dropped when drop_health_misses is set;
- reason["content"] is "unknown" for a health miss (its heartbeat is not trusted), else the
  ranker's `content_verdict`: "hit", "miss", "pull" (a pull-through OCA) or "unknown" (neither
  title_objects with a known need nor stored_titles); so "miss" exactly when reason["group"] is 1.
"""
from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import urlencode

from appliances.control_health import HealthRegistry, OcaHealth
from contracts.deployment import Deployment, OcaSpec
from contracts.steering import (G_CONTENT_MISS, G_HEALTH_MISS, G_OK, G_ORIGIN, STALE_AFTER_S,
                                Candidate, LearnedRoute, Location, PathMetrics, Ranked, bgp_serves,
                                content_verdict, learned_routes_of, pulls_through_of,
                                rank_candidates, title_objects_of)

# the controller's groups -> the fallback's reason["group"] (it has no overloaded band)
LOCAL_GROUP = {G_OK: 0, G_CONTENT_MISS: 1, G_ORIGIN: 2, G_HEALTH_MISS: 3}


class Steering(Protocol):
    def rank(self, viewer_ip: str, title: str, now: float,
             need_objects: int | None = None) -> list[Location]:
        """Ranked delivery locations, best first; never empty for a valid request.
        need_objects: objects of the title the session needs (None: unknown)."""


def candidate(oca: OcaSpec, entry: OcaHealth | None, bgp: LearnedRoute | None = None) -> Candidate:
    """The ranker's view of one deployed OCA and its last heartbeat (None: never heard of);
    bgp: the route it learned for the viewer."""
    health = entry.health if entry is not None else None
    stored = health.get("stored_titles") if health is not None else None
    return Candidate(oca.name, oca.tier, PathMetrics(oca.distance_hops, oca.rtt_ms),
                     heartbeat_s=None if entry is None else entry.received_unix,
                     status=None if health is None else health.get("status"),
                     stored_titles=stored if isinstance(stored, list) else None,
                     title_objects=title_objects_of(health),
                     pulls_through=pulls_through_of(health), ref=oca, bgp=bgp)


@dataclass
class LocalSteering:
    """Plan-distance policy over the deployment description and the health registry."""

    deployment: Deployment
    registry: HealthRegistry
    stale_after_s: float = STALE_AFTER_S
    drop_health_misses: bool = False

    def rank(self, viewer_ip: str, title: str, now: float,
             need_objects: int | None = None) -> list[Location]:
        candidates = []
        for oca in self.deployment.ocas:
            entry = self.registry.get(oca.name)
            yes, route = bgp_serves(oca.serves_ip(viewer_ip),
                                    learned_routes_of(entry.health if entry else None), viewer_ip)
            if yes:
                candidates.append(candidate(oca, entry, route))
        ranked = rank_candidates(title, candidates, self.deployment.origin.name, now,
                                 stale_after_s=self.stale_after_s, need_objects=need_objects)
        return [self._location(r, title, need_objects) for r in ranked
                if not (self.drop_health_misses and r.group == G_HEALTH_MISS)]

    def _location(self, r: Ranked, title: str, need_objects: int | None) -> Location:
        if r.candidate is None:
            origin = self.deployment.origin
            return Location(origin.name, "origin", origin.url,
                            {"policy": "plan-distance", "health": "assumed", "content": "hit",
                             "group": LOCAL_GROUP[G_ORIGIN]})
        oca: OcaSpec = r.candidate.ref
        content = ("unknown" if r.health != "ok"
                   else content_verdict(r.candidate, title, need_objects))
        reason = {"policy": "plan-distance", "health": r.health, "content": content,
                  "group": LOCAL_GROUP[r.group], "distance_hops": oca.distance_hops,
                  "rtt_ms": oca.rtt_ms}
        if r.candidate.bgp is not None:
            reason["bgp"] = r.candidate.bgp.to_json()
        return Location(oca.name, oca.tier, oca.url, reason)


@dataclass
class RemoteSteering:
    """Steering served by the controller's HTTP API; blocking (call it from a worker thread)."""

    url: str
    timeout_s: float = 2.0
    policy: str | None = None  # sent as &policy=; None leaves the controller's default
    blocking: bool = field(default=True, init=False)

    def rank(self, viewer_ip: str, title: str, now: float,
             need_objects: int | None = None) -> list[Location]:
        return self.rank_detail(viewer_ip, title, now, need_objects)[0]

    def rank_detail(self, viewer_ip: str, title: str, now: float, need_objects: int | None = None
                    ) -> tuple[list[Location], dict[str, str]]:
        """The ranked locations and the OCAs the controller left out, name -> why (a health
        miss: "stale_heartbeat:2.1s", "status:unreachable", "no_path", ...). need_objects, when
        known, goes to the controller as &need=."""
        query = urlencode({"viewer": viewer_ip, "title": title,
                           **({"policy": self.policy} if self.policy else {}),
                           **({"need": need_objects} if need_objects is not None else {})})
        full = f"{self.url.rstrip('/')}/rank?{query}"
        try:
            with urllib.request.urlopen(full, timeout=self.timeout_s) as resp:
                body = json.loads(resp.read())
        except (urllib.error.URLError, OSError, json.JSONDecodeError) as exc:
            raise SteeringUnavailable(f"remote steering {full}: {exc}") from exc
        if not isinstance(body, dict) or not isinstance(body.get("locations"), list):
            raise SteeringUnavailable(f"remote steering {full}: no 'locations' list")
        try:
            locations = [Location.from_json(d) for d in body["locations"]]
        except ValueError as exc:
            raise SteeringUnavailable(f"remote steering {full}: {exc}") from exc
        excluded = body.get("excluded")
        if not isinstance(excluded, list):
            return locations, {}
        return locations, {str(e.get("name")): str(e.get("why")) for e in excluded if isinstance(e, dict)}


class SteeringUnavailable(RuntimeError):
    """The steering service could not answer; callers fall back to local steering."""
