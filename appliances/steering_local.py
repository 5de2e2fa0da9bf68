"""Steering: rank delivery locations for (viewer ip, title) behind one small interface.

`LocalSteering` is the plan-distance policy used until the controller's steering API exists;
`RemoteSteering` asks that API (GET url/rank?viewer=IP&title=T -> {"locations": [...]}).

LocalSteering invariants:
- Only OCAs whose served prefixes contain the viewer ip are candidates; the origin always is.
- Sort key: (group, tier rank embedded < ixp < origin, distance_hops, rtt_ms, name), so
  ties are broken by name and the order is deterministic. Groups:
  0 healthy and holds the title (or its content is unknown: no stored_titles list);
  1 content miss (fresh heartbeat whose stored_titles lacks the title): still better than the
    origin, since the OCA pulls through and caches;
  2 the origin (always present, the last resort that is assumed healthy);
  3 health miss (no heartbeat, heartbeat older than stale_after_s, or status != ok), kept as
    a last fallback, or dropped when drop_health_misses is set.
"""
from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import urlencode

from appliances.control_deployment import TIER_RANK, Deployment, HealthRegistry

STALE_AFTER_S = 3.0
MAX_RETRIES = 5  # a location's `retries` (see Location)


@dataclass(frozen=True)
class Location:
    """One delivery location: `base_url_root` is http://host:port (no path). `retries`: how often
    a player tries this location again after a failure before it falls back (an anycast address
    is re-steered by the network, so trying it again is meaningful; 0 to MAX_RETRIES)."""

    name: str
    tier: str
    base_url_root: str
    reason: dict = field(default_factory=dict, compare=False, hash=False)
    retries: int = 0

    def to_json(self) -> dict:
        return {"name": self.name, "tier": self.tier, "base_url_root": self.base_url_root,
                "reason": self.reason, "retries": self.retries}

    @classmethod
    def from_json(cls, d: dict) -> "Location":
        try:
            name, tier, root = d["name"], d["tier"], d["base_url_root"]
        except (KeyError, TypeError) as exc:
            raise ValueError(f"location needs name, tier, base_url_root: {exc}") from None
        if tier not in TIER_RANK:
            raise ValueError(f"location {name!r}: unknown tier {tier!r}")
        if not isinstance(root, str) or not root.startswith("http://"):
            raise ValueError(f"location {name!r}: base_url_root must be http://host:port")
        retries = d.get("retries", 0)
        if type(retries) is not int or not 0 <= retries <= MAX_RETRIES:
            raise ValueError(f"location {name!r}: retries must be an integer in 0..{MAX_RETRIES}")
        return cls(name=str(name), tier=tier, base_url_root=root.rstrip("/"),
                   reason=dict(d.get("reason") or {}), retries=retries)


class Steering(Protocol):
    def rank(self, viewer_ip: str, title: str, now: float) -> list[Location]:
        """Ranked delivery locations, best first; never empty for a valid request."""


def _health_verdict(entry, now: float, stale_after_s: float) -> str:
    if entry is None:
        return "no_heartbeat"
    if entry.age_s(now) > stale_after_s:
        return "stale"
    status = entry.health.get("status")
    return "ok" if status == "ok" else f"status:{status}"


def _content_verdict(entry, title: str) -> str:
    stored = entry.health.get("stored_titles") if entry is not None else None
    if not isinstance(stored, list):
        return "unknown"
    return "hit" if title in stored else "miss"


@dataclass
class LocalSteering:
    """Plan-distance policy over the deployment description and the health registry."""

    deployment: Deployment
    registry: HealthRegistry
    stale_after_s: float = STALE_AFTER_S
    drop_health_misses: bool = False

    def rank(self, viewer_ip: str, title: str, now: float) -> list[Location]:
        keyed: list[tuple[tuple, Location]] = []
        for oca in self.deployment.ocas:
            if not oca.serves_ip(viewer_ip):
                continue
            entry = self.registry.get(oca.name)
            health = _health_verdict(entry, now, self.stale_after_s)
            content = _content_verdict(entry, title) if health == "ok" else "unknown"
            group = 3 if health != "ok" else (1 if content == "miss" else 0)
            if group == 3 and self.drop_health_misses:
                continue
            key = (group, TIER_RANK[oca.tier], oca.distance_hops, oca.rtt_ms, oca.name)
            reason = {"policy": "plan-distance", "health": health, "content": content,
                      "group": group, "distance_hops": oca.distance_hops,
                      "rtt_ms": oca.rtt_ms}
            keyed.append((key, Location(oca.name, oca.tier, oca.url, reason)))
        origin = self.deployment.origin
        keyed.append(((2, TIER_RANK["origin"], 1 << 30, float("inf"), origin.name),
                      Location(origin.name, "origin", origin.url,
                               {"policy": "plan-distance", "health": "assumed", "content": "hit",
                                "group": 2})))
        keyed.sort(key=lambda kv: kv[0])
        return [loc for _, loc in keyed]


@dataclass
class RemoteSteering:
    """Steering served by the controller's HTTP API; blocking (call it from a worker thread)."""

    url: str
    timeout_s: float = 2.0
    policy: str | None = None  # sent as &policy=; None leaves the controller's default
    blocking: bool = field(default=True, init=False)

    def rank(self, viewer_ip: str, title: str, now: float) -> list[Location]:
        return self.rank_detail(viewer_ip, title, now)[0]

    def rank_detail(self, viewer_ip: str, title: str, now: float) -> tuple[list[Location], dict[str, str]]:
        """The ranked locations and the OCAs the controller left out, name -> why (a health
        miss: "stale_heartbeat:2.1s", "status:unreachable", "no_path", ...)."""
        query = urlencode({"viewer": viewer_ip, "title": title, **({"policy": self.policy} if self.policy else {})})
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
