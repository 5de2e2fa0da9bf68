"""The one steering ranker, and the delivery-location format a ranking is served in.

`rank_candidates()` is pure (FAUCET style: state and `now` in, ranked locations out, no I/O).
Both steering policies call it: the controller (controller.steering.rank, served at GET /rank)
and the control plane's local fallback when the controller is unavailable
(appliances.steering_local.LocalSteering). What differs between them is input, not code:
- path metrics: the controller measures them on the plan (None: no path, a health miss); the
  fallback passes the deployment's declared `distance_hops` and `rtt_ms`, never None;
- load: the fallback has none and ranks with policy "nearest" (load 0, never overloaded);
- fail static: the controller passes `pushed_s`, the time of its last OCA push; the fallback
  passes None (heartbeats judged at `now`);
- need_objects is the same for both: the control plane computes it per session
  (len(ladder) * segments) and hands it to the controller (GET /rank?need=) and to the fallback;
- each caller keeps only the OCAs that serve the viewer, and dresses the result in its own
  reason dict.

Invariants of `rank_candidates()`:
- the origin is always present and assumed healthy; only health misses rank below it;
- sort key: (group, TIER_RANK, bgp_key, hops, [load,] rtt_ms, name), so the order is total and
  deterministic; bgp_key (`bgp_key`) is BGP's decision order on the route the OCA learned for
  the viewer (more specific prefix, higher local-pref, shorter AS path, lower origin, lower MED),
  all zeros without one (--routing static); `load` is in the key only for policy "load_aware"; no path sorts as
  NO_PATH_HOPS hops and infinite RTT;
- groups: G_OK usable; G_OVERLOADED (load_aware only: load > load_threshold); G_CONTENT_MISS
  (the OCA does not hold what the session needs, see `content_verdict`: it would fill first,
  still better than the origin); G_ORIGIN; G_HEALTH_MISS (no path, no heartbeat, heartbeat
  older than stale_after_s, or status != "ok"), kept as a last resort;
- fail static: a heartbeat's age is taken at `pushed_s` (not `now`) unless that is None or
  older than MONITOR_DEAD_S, so a stalled monitor does not make every OCA a health miss at once;
- content (`content_verdict`): `title=None` (anycast: unknown when a connection opens) is never
  a content miss, nor is an OCA that pulls through (`pulls_through`: its miss mode is `proxy`,
  the pull-through ablation, so it fetches what it lacks from the next tier); with both the OCA's `title_objects` and the session's `need_objects` known, the
  OCA misses iff it stores fewer than need_objects objects of the title (a session of N segments
  at any rung of an L-rung ladder needs L * N of them); otherwise, with `stored_titles` known, it
  misses iff it stores no object of the title at all; with neither, the content is unknown (not
  a miss). The count is of objects, not of the exact ones the session plays.
"""
from __future__ import annotations

import ipaddress
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from contracts.deployment import TIER_RANK

POLICIES = ("nearest", "load_aware")
# A heartbeat older than this is stale: about two probe timeouts in a row (controller.probe_timer's
# floor is 1.5 s), not one (one lost packet on a congested path to the OCA).
STALE_AFTER_S = 3.0
# No push of OCA state for this long: the monitor is dead, stop trusting what it last said.
# A shorter pause is a monitor stalled (a probe starved of CPU on a saturated machine): keep the
# last pushed state rather than turn every OCA into a health miss at once. (An OCA whose own
# probes keep timing out while pushes arrive still ages out: that is the OCA or its path.)
MONITOR_DEAD_S = 5.0
G_OK, G_OVERLOADED, G_CONTENT_MISS, G_ORIGIN, G_HEALTH_MISS = range(5)
NO_PATH_HOPS = 1 << 30
MAX_RETRIES = 5  # a location's `retries` (see Location)
RETRY_PAUSE_S = 0.5  # a player's pause before its first retry of a location; doubled per retry


def retry_pause_s(retry: int, first_s: float = RETRY_PAUSE_S) -> float:
    """Wall seconds a player waits before its `retry`-th retry (1-based) of one location:
    first_s, 2 x first_s, 4 x first_s, ... (exponential backoff: a path the network re-steers
    is tried again soon, a dead one is not hammered). Pure."""
    if retry < 1:
        raise ValueError("retries are counted from 1")
    return first_s * 2 ** (retry - 1)


def retries_to_cover(window_s: float, first_s: float = RETRY_PAUSE_S) -> int:
    """The fewest retries whose pauses (`retry_pause_s`) add up to at least `window_s`. Pure."""
    n, total = 0, 0.0
    while total < window_s:
        n += 1
        total += retry_pause_s(n, first_s)
    return n


ORIGIN_RANK = {"IGP": 0, "EGP": 1, "incomplete": 2}


@dataclass(frozen=True)
class LearnedRoute:
    """A route an OCA's BGP speaker learned from its router: the viewers it may serve."""
    prefix: str
    as_path_len: int
    local_pref: int = 100
    med: int = 0
    origin: str = "IGP"

    def to_json(self) -> dict:
        return {"prefix": self.prefix, "as_path_len": self.as_path_len, "local_pref": self.local_pref,
                "med": self.med, "origin": self.origin}


def routes_from_frr(show_bgp: dict) -> list[LearnedRoute]:
    """The best routes in FRR's `show bgp ipv4 unicast json`, by prefix."""
    out = []
    for prefix, paths in sorted(show_bgp.get("routes", {}).items()):
        for p in paths:
            if p.get("bestpath") and p.get("valid"):
                seg = p.get("path", "")
                out.append(LearnedRoute(prefix, len(seg.split()) if isinstance(seg, str) else 0,
                                        int(p.get("locPrf", 100)), int(p.get("metric", 0)),
                                        str(p.get("origin", "IGP"))))
    return out


def learned_routes_of(health: dict | None) -> tuple[LearnedRoute, ...] | None:
    """An OCA health JSON's "bgp_routes" (what its BGP speaker learned), or None when the OCA has
    no speaker (--routing static) or the field is malformed (then the declared prefixes apply)."""
    raw = health.get("bgp_routes") if isinstance(health, dict) else None
    if not isinstance(raw, list):
        return None
    try:
        out = tuple(LearnedRoute(str(ipaddress.ip_network(r["prefix"])), int(r["as_path_len"]),
                                 int(r["local_pref"]), int(r["med"]), str(r["origin"])) for r in raw)
    except (KeyError, TypeError, ValueError):
        return None
    return out if all(r.origin in ORIGIN_RANK for r in out) else None


def bgp_match(routes: Collection[LearnedRoute], ip: str) -> LearnedRoute | None:
    """The longest-prefix match of `ip` among `routes`, or None."""
    addr = ipaddress.ip_address(ip)
    hits = [r for r in routes if addr in ipaddress.ip_network(r.prefix)]
    return max(hits, key=lambda r: ipaddress.ip_network(r.prefix).prefixlen, default=None)


def bgp_serves(declared: bool, routes: Collection[LearnedRoute] | None, ip: str
               ) -> tuple[bool, LearnedRoute | None]:
    """Whether an OCA serves the viewer at `ip`, and the route it learned for it: with learned
    routes (even none) only they count; without (None) the declared answer `declared` does."""
    if routes is None:
        return declared, None
    route = bgp_match(routes, ip)
    return route is not None, route


def bgp_key(route: LearnedRoute | None) -> tuple:
    """BGP's decision order as a sort key (smaller is better); all zeros for None."""
    if route is None:
        return (0, 0, 0, 0, 0)
    return (-ipaddress.ip_network(route.prefix).prefixlen, -route.local_pref, route.as_path_len,
            ORIGIN_RANK[route.origin], route.med)


@dataclass(frozen=True)
class PathMetrics:
    hops: int
    rtt_ms: float


@dataclass(frozen=True)
class Candidate:
    """One OCA as the ranker sees it. path: metrics from the viewer, None for no path;
    heartbeat_s: when its last heartbeat arrived (clock of `now`), None if never; status: that
    heartbeat's status; stored_titles: None if unknown; pulls_through: a miss is fetched from
    upstream (never a content miss); ref: the caller's record, untouched; bgp: the route the OCA's
    BGP speaker learned for the viewer (None under static routing)."""
    name: str
    tier: str
    path: PathMetrics | None
    heartbeat_s: float | None
    status: object = "ok"
    load: float = 0.0
    stored_titles: Collection[str] | None = None
    title_objects: Mapping[str, int] | None = None
    pulls_through: bool = False
    ref: Any = field(default=None, compare=False)
    bgp: LearnedRoute | None = None  # the route its speaker learned for the viewer


@dataclass(frozen=True)
class Ranked:
    """One ranked location. health: "ok", "no_path", "no_heartbeat", "stale" or
    "status:<status>" ("ok" for the origin); age_s: the heartbeat's age as judged (None without
    one); candidate: None for the origin."""
    name: str
    tier: str
    group: int
    health: str
    age_s: float | None
    content_miss: bool
    overloaded: bool
    candidate: Candidate | None


def check_policy(policy: str, load_threshold: float) -> None:
    if policy not in POLICIES:
        raise ValueError(f"unknown steering policy {policy!r}; known: {', '.join(POLICIES)}")
    if not 0 <= load_threshold <= 1:
        raise ValueError(f"load_threshold must be in [0, 1], got {load_threshold}")


def health_of(c: Candidate, now: float, stale_after_s: float = STALE_AFTER_S,
              pushed_s: float | None = None) -> tuple[str, float | None]:
    """(verdict, heartbeat age as judged); see `Ranked.health`."""
    if c.path is None:
        return "no_path", None
    if c.heartbeat_s is None:
        return "no_heartbeat", None
    at = now if pushed_s is None or now - pushed_s > MONITOR_DEAD_S else min(now, pushed_s)
    age_s = at - c.heartbeat_s
    if age_s > stale_after_s:
        return "stale", age_s
    if c.status != "ok":
        return f"status:{c.status}", age_s
    return "ok", age_s


def title_objects_of(health: dict | None) -> Mapping[str, int] | None:
    """An OCA health JSON's "title_objects" as a read-only {title: stored objects}, or None
    (unknown) if health is None, the field is absent or malformed: not an object, a key not a
    string, or a count not an int >= 0 (one bad entry makes it all unknown, never partial)."""
    raw = health.get("title_objects") if isinstance(health, dict) else None
    if not isinstance(raw, dict):
        return None
    if not all(isinstance(t, str) and type(n) is int and n >= 0 for t, n in raw.items()):
        return None
    return MappingProxyType(dict(raw))


def check_need_objects(need_objects: int | None) -> None:
    """need_objects is None or an int >= 1 (ValueError otherwise)."""
    if need_objects is not None and (type(need_objects) is not int or need_objects < 1):
        raise ValueError(f"need_objects must be an integer >= 1, got {need_objects!r}")


def pulls_through_of(health: dict | None) -> bool:
    """Whether an OCA health JSON says the OCA pulls a miss through from upstream (miss_mode
    "proxy"); False when unknown."""
    return isinstance(health, dict) and health.get("miss_mode") == "proxy"


def content_verdict(c: Candidate, title: str | None, need_objects: int | None = None) -> str:
    """"hit", "miss", "pull" or "unknown" for the session's content at `c` (see module
    invariants; only "miss" ranks lower). title None: "unknown" (anycast, never a miss); an OCA
    that pulls through: "pull" (it serves any title, fetching what it lacks)."""
    if title is None:
        return "unknown"
    if c.pulls_through:
        return "pull"
    if c.title_objects is not None and need_objects is not None:
        return "miss" if c.title_objects.get(title, 0) < need_objects else "hit"
    if c.stored_titles is not None:
        return "hit" if title in c.stored_titles else "miss"
    return "unknown"


def rank_candidates(title: str | None, candidates: list[Candidate], origin_name: str, now: float,
                    *, policy: str = "nearest", load_threshold: float = 0.8,
                    stale_after_s: float = STALE_AFTER_S, pushed_s: float | None = None,
                    need_objects: int | None = None) -> list[Ranked]:
    """Candidates and the origin, best first (see module invariants). `candidates` are the OCAs
    that serve the viewer; `pushed_s`: when OCA state was last pushed (None: judge at `now`);
    `need_objects`: objects of the title the session needs (None: unknown, the stored_titles
    rule applies)."""
    check_policy(policy, load_threshold)
    check_need_objects(need_objects)
    keyed = []
    for c in candidates:
        health, age_s = health_of(c, now, stale_after_s, pushed_s)
        content_miss = content_verdict(c, title, need_objects) == "miss"
        overloaded = policy == "load_aware" and c.load > load_threshold
        group = (G_HEALTH_MISS if health != "ok" else G_OVERLOADED if overloaded
                 else G_CONTENT_MISS if content_miss else G_OK)
        keyed.append((_key(group, c.tier, c.path, c.load, c.name, policy, c.bgp),
                      Ranked(c.name, c.tier, group, health, age_s, content_miss, overloaded, c)))
    # the origin is alone in its group, so its path metrics could never change the order
    keyed.append((_key(G_ORIGIN, "origin", None, 0.0, origin_name, policy),
                  Ranked(origin_name, "origin", G_ORIGIN, "ok", None, False, False, None)))
    keyed.sort(key=lambda kv: kv[0])
    return [r for _, r in keyed]


def _key(group: int, tier: str, path: PathMetrics | None, load: float, name: str,
         policy: str, bgp: LearnedRoute | None = None) -> tuple:
    hops = path.hops if path else NO_PATH_HOPS
    rtt_ms = path.rtt_ms if path else float("inf")
    if policy == "load_aware":
        return (group, TIER_RANK[tier], bgp_key(bgp), hops, load, rtt_ms, name)
    return (group, TIER_RANK[tier], bgp_key(bgp), hops, rtt_ms, name)


@dataclass(frozen=True)
class Location:
    """One delivery location as served to the control plane: `base_url_root` is http://host:port
    (no path). `retries`: how often a player tries this location again after a failure before it
    falls back (an anycast address is re-steered by the network, so trying it again is
    meaningful; 0 to MAX_RETRIES)."""

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
        if not isinstance(root, str) or not root.startswith(("http://", "https://")):
            raise ValueError(f"location {name!r}: base_url_root must be http(s)://host:port")
        retries = d.get("retries", 0)
        if type(retries) is not int or not 0 <= retries <= MAX_RETRIES:
            raise ValueError(f"location {name!r}: retries must be an integer in 0..{MAX_RETRIES}")
        return cls(name=str(name), tier=tier, base_url_root=root.rstrip("/"),
                   reason=dict(d.get("reason") or {}), retries=retries)
