"""Steering as the controller serves it: pushed OCA state + plan paths + link state -> rankings
(GET /rank) and anycast connection rules. Pure of OpenFlow and sockets; time and the set of
down links are passed in.

Invariants:
- `rank_json` lists usable locations only (best first, origin last among them) in the shape
  contracts.steering.Location.from_json reads; health misses (no path, a down link on
  the path, an unreachable or stale OCA) are listed under "excluded" with their reason;
- before the first OCA push there is no origin to offer: rank_json raises LookupError;
- path metrics per (viewer, target) come from the plan once and are cached; link state is
  applied on every call, so a link going down changes the very next ranking.
"""
from __future__ import annotations

import collections
import logging
import threading

from contracts.steering import G_HEALTH_MISS, STALE_AFTER_S, PathMetrics, retries_to_cover
from topologies.plan import PlanError
from topologies.routes import path_links

from . import anycast as ac
from .ocas import PROBE_INTERVAL_S, OcaRegistry
from .steering import OcaState, Origin, network_view, rank

LOG = logging.getLogger("ocalab.controller.steering")
RECENT_CONNS = 200
# A player tries the anycast address this often again after a failure (pauses doubling from
# RETRY_PAUSE_S) before it falls back to the origin. The retries outlast the longest time this
# controller may still steer a new connection to a dead OCA: a refused probe removes it within a
# probe round and a push, a probe that times out (a loaded path) only once its heartbeat is
# STALE_AFTER_S old. With 2 retries (1 s) a failover test saw the detection take longer on a
# busy machine; every viewer fell back to the origin across transit, and the transit load then
# slowed the probes further.
ANYCAST_RETRIES = retries_to_cover(STALE_AFTER_S + PROBE_INTERVAL_S)


class SteeringView:
    def __init__(self, plan, anycast_ip: str | None, stale_after_s: float = STALE_AFTER_S) -> None:
        self.plan, self.anycast_ip, self.stale_after_s = plan, anycast_ip, stale_after_s
        self.ocas = OcaRegistry()  # guarded by the caller's (ControllerState) lock
        self._lock = threading.Lock()
        self._paths: dict[tuple[str, str], tuple[PathMetrics | None, frozenset[str]]] = {}
        self._conns: collections.deque = collections.deque(maxlen=RECENT_CONNS)
        self._counts: collections.Counter = collections.Counter()

    def snapshot(self) -> tuple[tuple[OcaState, ...], Origin | None, float | None]:
        """Immutable copy of the OCA inputs and the time of their last push (call with the
        caller's lock held)."""
        return tuple(self.ocas.states()), self.ocas.origin, self.ocas.last_push_s

    def count(self, key: str) -> None:
        with self._lock:
            self._counts[key] += 1

    def _path(self, viewer_ip: str, addr: str) -> tuple[PathMetrics | None, frozenset[str]]:
        key = (viewer_ip, addr)
        with self._lock:
            hit = self._paths.get(key)
        if hit is not None:
            return hit
        src = self.plan.owner_of(viewer_ip)  # PlanError for an unknown viewer
        try:
            pm = network_view(self.plan, viewer_ip, {"t": addr}).get("t")
            links = frozenset(path_links(self.plan, src, addr)) if pm else frozenset()
        except PlanError:
            pm, links = None, frozenset()
        with self._lock:
            self._paths[key] = (pm, links)
        return pm, links

    def ranked(self, viewer_ip: str, title: str | None, now: float, down: frozenset[str],
               snap, policy: str = "nearest", need_objects: int | None = None):
        states, origin, pushed_s = snap
        self.plan.owner_of(viewer_ip)  # PlanError for an address no plan node owns
        if origin is None:
            raise LookupError("no OCA state pushed to POST /ocas yet (is controller.probe running?)")
        view = {}
        for name, addr in [(s.name, s.address) for s in states] + [(origin.name, origin.address)]:
            pm, links = self._path(viewer_ip, addr)
            if pm is not None and down.isdisjoint(links):
                view[name] = pm
        return rank(viewer_ip, title, list(states), view, origin, now, policy,
                    stale_after_s=self.stale_after_s, pushed_s=pushed_s, need_objects=need_objects)

    def rank_json(self, viewer_ip: str, title: str | None, now: float, down: frozenset[str],
                  snap, policy: str = "nearest", need_objects: int | None = None) -> dict:
        """GET /rank's body; `need_objects`: objects of the title the session needs (None:
        unknown), echoed as "need_objects"."""
        ranked = self.ranked(viewer_ip, title, now, down, snap, policy, need_objects)
        usable = [r for r in ranked if r.reason["group"] != G_HEALTH_MISS]
        excluded = [{"name": r.name, "tier": r.tier, "why": r.reason["why"]}
                    for r in ranked if r.reason["group"] == G_HEALTH_MISS]
        return {"viewer": viewer_ip, "title": title, "policy": policy, "now_unix": now,
                "need_objects": need_objects,
                "down_links": sorted(down), "locations": [r.to_json() for r in usable],
                "excluded": excluded}

    def anycast_rank_json(self, viewer_ip: str, title: str | None, now: float, down: frozenset[str],
                          snap) -> dict:
        """The manifest shape for SDN anycast mode: the anycast address first (tier of the location
        a new connection would be steered to now, `retries`: a player tries it again after a
        failure, because the network re-steers the new connection), then the origin as the
        player's fallback."""
        if self.anycast_ip is None:
            raise LookupError("anycast is disabled (--anycast-ip none)")
        ranked = self.ranked(viewer_ip, None, now, down, snap)  # as the switch sees a SYN: no title
        now_choice = ac.choose(ranked)
        origin = next(r for r in ranked if r.tier == "origin")
        anycast = {"name": "anycast", "tier": now_choice.tier, "address": self.anycast_ip,
                   "base_url_root": f"http://{self.anycast_ip}:{ac.SERVICE_PORT}",
                   "retries": ANYCAST_RETRIES,
                   "reason": {"policy": "sdn-anycast", "why": "per-connection steering at the ISP switch",
                              "now_choice": now_choice.name}}
        return {"viewer": viewer_ip, "title": title, "policy": "sdn-anycast", "now_unix": now,
                "down_links": sorted(down), "locations": [anycast, origin.to_json()], "excluded": []}

    def anycast_rules(self, switch: str, conn: ac.Conn, now: float, down: frozenset[str], snap,
                      specs) -> tuple[ac.RuleSpec, ac.RuleSpec] | None:
        """Rules for a new anycast connection, or None (logged, counted) if it cannot be steered."""
        try:
            loc = ac.choose(self.ranked(conn.viewer_ip, None, now, down, snap))
            rules = ac.conn_rules(self.plan, specs, switch, conn, loc.address)
        except (PlanError, LookupError, ValueError) as e:
            LOG.warning("anycast: cannot steer %s:%d on %s: %s", conn.viewer_ip, conn.viewer_port, switch, e)
            self.count("unsteerable")
            return None
        LOG.info("anycast: %s:%d on %s -> %s (%s)", conn.viewer_ip, conn.viewer_port, switch,
                 loc.name, loc.reason.get("why"))
        with self._lock:
            self._counts[f"to:{loc.name}"] += 1
            self._conns.append({"t_unix": now, "switch": switch, "viewer": conn.viewer_ip,
                                "viewer_port": conn.viewer_port, "location": loc.name,
                                "address": loc.address, "why": loc.reason.get("why")})
        return rules

    def anycast_view(self) -> dict:
        with self._lock:
            return {"address": self.anycast_ip, "port": ac.SERVICE_PORT, "counts": dict(self._counts),
                    "recent": list(self._conns)}
