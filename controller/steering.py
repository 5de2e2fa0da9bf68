"""Steering policy: rank delivery locations for (viewer, title). Pure: state and `now` passed in.

`rank()` invariants:
- candidates are the OCAs whose served prefixes contain the viewer address (served_prefixes
  None means "serves everyone"); the origin is always appended and is assumed healthy;
- sort key: (group, tier rank embedded < ixp < origin, hops, [load,] rtt_ms, name), so the
  order is total and deterministic; `load` is in the key only for policy "load_aware";
- groups: 0 usable; 1 overloaded (load_aware only: load > load_threshold); 2 content miss
  (stored_titles known and without the title: the OCA would have to fill first); 3 the origin;
  4 health miss (no heartbeat, heartbeat older than STALE_AFTER_S, status != "ok", or no path
  from the viewer), kept as a last resort;
- fail static: a heartbeat's age is taken at the last push of OCA state (`pushed_s`), not at
  `now`, so a stalled monitor (the probe starved of CPU) does not make every OCA a health miss
  at once; only when no push came for MONITOR_DEAD_S is the monitor dead and age taken at `now`;
- every location carries a reason: hops, rtt_ms, load, content_miss, health_miss, overloaded,
  group, policy and a short `why`.
`network_view()` derives hops and RTT from the plan: hops as traceroute counts them
(`topologies.routes.l3_path`), RTT as twice the sum of one-way link delays along the path; a
target whose path crosses a link named in `down_links` is left out (no path: a health miss).
`title=None` (anycast: the title is unknown when a connection opens) never counts as a content miss.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from topologies.plan import Plan, PlanError
from topologies.routes import l3_path, path_links

POLICIES = ("nearest", "load_aware")
TIER_RANK = {"embedded": 0, "ixp": 1, "origin": 2}
# A heartbeat older than this is stale: about two probe timeouts in a row (controller.probe_timer's
# floor is 1.5 s), not one (one lost packet on a congested path to the OCA).
STALE_AFTER_S = 3.0
# No push of OCA state for this long: the monitor is dead, stop trusting what it last said.
# A shorter pause is a monitor stalled (a probe starved of CPU on a saturated machine): keep the
# last pushed state rather than turn every OCA into a health miss at once. (An OCA whose own
# probes keep timing out while pushes arrive still ages out: that is the OCA or its path.)
MONITOR_DEAD_S = 5.0
G_OK, G_OVERLOADED, G_CONTENT_MISS, G_ORIGIN, G_HEALTH_MISS = range(5)


@dataclass(frozen=True)
class OcaState:
    """What the controller knows of one OCA. heartbeat_s is the time of the last heartbeat
    (same clock as `now`), None if never; stored_titles None means unknown."""
    name: str
    tier: str
    address: str
    served_prefixes: tuple[str, ...] | None = None
    status: str = "ok"
    load: float = 0.0
    heartbeat_s: float | None = None
    stored_titles: frozenset[str] | None = None
    url: str | None = None

    def __post_init__(self) -> None:
        if self.tier not in ("embedded", "ixp"):
            raise ValueError(f"OCA {self.name!r}: tier must be embedded or ixp, got {self.tier!r}")
        if isinstance(self.load, bool) or not isinstance(self.load, (int, float)) or not 0 <= self.load <= 1:
            raise ValueError(f"OCA {self.name!r}: load must be a number in [0, 1], got {self.load!r}")
        ipaddress.ip_address(self.address)  # raises ValueError naming the bad address

    def serves(self, viewer_ip: str) -> bool:
        if self.served_prefixes is None:
            return True
        ip = ipaddress.ip_address(viewer_ip)
        return any(ip in ipaddress.ip_network(p) for p in self.served_prefixes)


@dataclass(frozen=True)
class Origin:
    name: str
    address: str
    url: str | None = None


@dataclass(frozen=True)
class PathMetrics:
    hops: int
    rtt_ms: float


@dataclass(frozen=True)
class RankedLocation:
    name: str
    tier: str
    address: str
    url: str | None
    reason: dict

    def to_json(self) -> dict:
        """The shape appliances.steering_local.Location.from_json reads."""
        return {"name": self.name, "tier": self.tier, "address": self.address,
                "base_url_root": self.url or f"http://{self.address}", "reason": self.reason}


def _health(oca: OcaState, now: float, stale_after_s: float = STALE_AFTER_S,
            pushed_s: float | None = None) -> str | None:
    """None if healthy, else why not. The heartbeat's age is taken at the last push `pushed_s`
    (fail static) unless that is None or older than MONITOR_DEAD_S."""
    if oca.heartbeat_s is None:
        return "no_heartbeat"
    at = now if pushed_s is None or now - pushed_s > MONITOR_DEAD_S else min(now, pushed_s)
    if at - oca.heartbeat_s > stale_after_s:
        return f"stale_heartbeat:{at - oca.heartbeat_s:.1f}s"
    if oca.status != "ok":
        return f"status:{oca.status}"
    return None


def rank(viewer_ip: str, title: str | None, ocas: list[OcaState], view: dict[str, PathMetrics],
         origin: Origin, now: float, policy: str = "nearest",
         load_threshold: float = 0.8, stale_after_s: float = STALE_AFTER_S,
         pushed_s: float | None = None) -> list[RankedLocation]:
    """Ranked locations, best first (see module invariants). `view` maps OCA and origin names
    to path metrics from the viewer; a missing entry means no path (a health miss). `pushed_s`:
    when OCA state was last pushed (None: judge heartbeats at `now`)."""
    if policy not in POLICIES:
        raise ValueError(f"unknown steering policy {policy!r}; known: {', '.join(POLICIES)}")
    if not 0 <= load_threshold <= 1:
        raise ValueError(f"load_threshold must be in [0, 1], got {load_threshold}")
    ipaddress.ip_address(viewer_ip)
    keyed = []
    for oca in ocas:
        if not oca.serves(viewer_ip):
            continue
        pm = view.get(oca.name)
        health = _health(oca, now, stale_after_s, pushed_s) if pm is not None else "no_path"
        content_miss = title is not None and oca.stored_titles is not None \
            and title not in oca.stored_titles
        overloaded = policy == "load_aware" and oca.load > load_threshold
        group = (G_HEALTH_MISS if health else G_OVERLOADED if overloaded
                 else G_CONTENT_MISS if content_miss else G_OK)
        why = health or ("overloaded" if overloaded else "content_miss" if content_miss else "ok")
        keyed.append((_key(group, oca.tier, pm, oca.load, oca.name, policy),
                      RankedLocation(oca.name, oca.tier, oca.address, oca.url,
                                     _reason(pm, oca.load, content_miss, health, overloaded, group,
                                             policy, why))))
    pm = view.get(origin.name)
    keyed.append((_key(G_ORIGIN, "origin", pm, 0.0, origin.name, policy),
                  RankedLocation(origin.name, "origin", origin.address, origin.url,
                                 _reason(pm, None, False, None, False, G_ORIGIN, policy, "origin"))))
    keyed.sort(key=lambda kv: kv[0])
    return [loc for _, loc in keyed]


def _key(group, tier, pm: PathMetrics | None, load, name, policy) -> tuple:
    hops = pm.hops if pm else 1 << 30
    rtt = pm.rtt_ms if pm else float("inf")
    if policy == "load_aware":
        return (group, TIER_RANK[tier], hops, load, rtt, name)
    return (group, TIER_RANK[tier], hops, rtt, name)


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


