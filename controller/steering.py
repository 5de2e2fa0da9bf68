"""Steering as the controller ranks it: pushed OCA state + plan path metrics -> ranked locations.

`rank()` adapts the controller's inputs to the one pure ranker, contracts.steering.rank_candidates
(which states the order: groups, tiers, keys, fail static), and dresses each location in the
controller's reason. Invariants added here:
- candidates are the OCAs whose served prefixes contain the viewer address (served_prefixes
  None means "serves everyone"); an OCA with learned_routes (its BGP speaker's, --routing bgp)
  serves exactly the viewers those match (contracts.steering.bgp_serves), whatever it declared; an OCA missing from the path view has no path (a health miss);
- every location carries a reason: hops, rtt_ms, load, content_miss, health_miss, overloaded,
  group, policy and a short `why` (a stale heartbeat reads "stale_heartbeat:<age>s").
`network_view()` derives hops and RTT from the plan: hops as traceroute counts them
(`topologies.routes.l3_path`), RTT as twice the sum of one-way link delays along the path; a
target whose path crosses a link named in `down_links` is left out (no path: a health miss).
"""
from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field

from contracts.steering import (G_ORIGIN, STALE_AFTER_S, Candidate, LearnedRoute, PathMetrics,
                                Ranked, bgp_serves, check_policy, rank_candidates)
from topologies.plan import Plan, PlanError
from topologies.routes import l3_path, path_links


@dataclass(frozen=True)
class OcaState:
    """What the controller knows of one OCA. heartbeat_s is the time of the last heartbeat
    (same clock as `now`), None if never; stored_titles and title_objects (title -> stored
    objects) None mean unknown."""
    name: str
    tier: str
    address: str
    served_prefixes: tuple[str, ...] | None = None
    status: str = "ok"
    load: float = 0.0
    heartbeat_s: float | None = None
    stored_titles: frozenset[str] | None = None
    url: str | None = None
    title_objects: Mapping[str, int] | None = field(default=None, hash=False)
    pulls_through: bool = False  # miss mode proxy: fetches any title it lacks (never a content miss)
    learned_routes: tuple[LearnedRoute, ...] | None = None  # from its BGP speaker; None: static

    def __post_init__(self) -> None:
        if self.tier not in ("embedded", "ixp"):
            raise ValueError(f"OCA {self.name!r}: tier must be embedded or ixp, got {self.tier!r}")
        if isinstance(self.load, bool) or not isinstance(self.load, (int, float)) or not 0 <= self.load <= 1:
            raise ValueError(f"OCA {self.name!r}: load must be a number in [0, 1], got {self.load!r}")
        ipaddress.ip_address(self.address)  # raises ValueError naming the bad address

    def declares(self, viewer_ip: str) -> bool:
        if self.served_prefixes is None:
            return True
        ip = ipaddress.ip_address(viewer_ip)
        return any(ip in ipaddress.ip_network(p) for p in self.served_prefixes)

    def serves(self, viewer_ip: str) -> tuple[bool, LearnedRoute | None]:
        """Whether it serves the viewer, and the BGP route that says so (None under static)."""
        return bgp_serves(self.declares(viewer_ip), self.learned_routes, viewer_ip)


@dataclass(frozen=True)
class Origin:
    name: str
    address: str
    url: str | None = None


@dataclass(frozen=True)
class RankedLocation:
    name: str
    tier: str
    address: str
    url: str | None
    reason: dict

    def to_json(self) -> dict:
        """The shape contracts.steering.Location.from_json reads."""
        return {"name": self.name, "tier": self.tier, "address": self.address,
                "base_url_root": self.url or f"http://{self.address}", "reason": self.reason}


def rank(viewer_ip: str, title: str | None, ocas: list[OcaState], view: dict[str, PathMetrics],
         origin: Origin, now: float, policy: str = "nearest",
         load_threshold: float = 0.8, stale_after_s: float = STALE_AFTER_S,
         pushed_s: float | None = None, need_objects: int | None = None) -> list[RankedLocation]:
    """Ranked locations, best first (see module invariants). `view` maps OCA and origin names
    to path metrics from the viewer; a missing entry means no path (a health miss). `pushed_s`:
    when OCA state was last pushed (None: judge heartbeats at `now`); `need_objects`: objects
    of the title the session needs (None: unknown; see contracts.steering.content_verdict)."""
    check_policy(policy, load_threshold)
    ipaddress.ip_address(viewer_ip)
    served = [(o, o.serves(viewer_ip)) for o in ocas]
    candidates = [Candidate(o.name, o.tier, view.get(o.name), o.heartbeat_s, o.status, o.load,
                            o.stored_titles, o.title_objects, o.pulls_through, ref=o, bgp=route)
                  for o, (yes, route) in served if yes]
    ranked = rank_candidates(title, candidates, origin.name, now, policy=policy,
                             load_threshold=load_threshold, stale_after_s=stale_after_s,
                             pushed_s=pushed_s, need_objects=need_objects)
    return [_located(r, view, origin, policy) for r in ranked]


def _located(r: Ranked, view: dict[str, PathMetrics], origin: Origin, policy: str) -> RankedLocation:
    if r.candidate is None:
        return RankedLocation(origin.name, "origin", origin.address, origin.url,
                              _reason(view.get(origin.name), None, False, None, False, G_ORIGIN,
                                      policy, "origin"))
    c, oca = r.candidate, r.candidate.ref
    health = None if r.health == "ok" else (
        f"stale_heartbeat:{r.age_s:.1f}s" if r.health == "stale" else r.health)
    why = health or ("overloaded" if r.overloaded else "content_miss" if r.content_miss else "ok")
    reason = _reason(c.path, c.load, r.content_miss, health, r.overloaded, r.group, policy, why)
    if c.bgp is not None:
        reason["bgp"] = c.bgp.to_json()
    return RankedLocation(oca.name, oca.tier, oca.address, oca.url, reason)


def _reason(pm, load, content_miss, health, overloaded, group, policy, why) -> dict:
    return {"hops": pm.hops if pm else None, "rtt_ms": pm.rtt_ms if pm else None, "load": load,
            "content_miss": content_miss, "health_miss": health is not None, "overloaded": overloaded,
            "group": group, "policy": policy, "why": why}


# ---- network view from the plan --------------------------------------------------------

def network_view(plan: Plan, viewer_ip: str, targets: dict[str, str],
                 down_links: frozenset[str] | set[str] = frozenset()) -> dict[str, PathMetrics]:
    """Path metrics from the viewer owning `viewer_ip` to each target name -> address.
    Targets without a route, or whose path crosses a down link, are left out (rank() then
    treats them as health misses)."""
    src = plan.owner_of(viewer_ip)
    delays = {lk.name: lk.delay_ms for lk in plan.links}
    out = {}
    for name, addr in sorted(targets.items()):
        try:
            hops = len(l3_path(plan, src, addr))
            links = path_links(plan, src, addr)
        except PlanError:
            continue
        if down_links and not down_links.isdisjoint(links):
            continue
        out[name] = PathMetrics(hops=hops, rtt_ms=round(2 * sum(delays[n] for n in links), 3))
    return out


