"""OCA state pushed to the controller (`POST /ocas`), turned into steering inputs (pure).

A push is one full snapshot made by controller.probe in the control-plane host, which polls
every OCA's `GET /health` every PROBE_INTERVAL_S:
  {"origin": {"name": "origin", "url": "http://198.19.10.11:8080"},
   "ocas": [{"name", "tier", "url", "serves": [prefix, ...],
             "probe": {"ok": bool, "error": str | null, "rtt_ms": float | null,
                       "timeout_ms": float (optional: the timeout that probe had)},
             "health": {OCA /health JSON} | null}, ...]}
Invariants of `OcaRegistry.apply()`:
- a push replaces the set of OCAs (names absent from it are forgotten); it is validated whole
  before anything changes, and a bad one raises ValueError naming the field;
- `heartbeat_s` of an OCA is the receive time (`now`, controller clock) of the last push whose
  probe of it succeeded; a refused or failed probe sets status "unreachable" at once (the fast
  signal: a dead process refuses connections); a probe timeout (a busy OCA, a loaded machine)
  only after TIMEOUTS_TO_EXCLUDE in a row, and until then the previous state is kept; a
  "pending" probe (still in flight when the push left) is no news: the previous state stays
  and its heartbeat ages (an OCA never answered yet has status "pending");
  when pushes stop, heartbeats age and steering's staleness check excludes the OCAs;
- the summary's `changed` maps each OCA whose status differs from the previous push's to
  [old, new] (old None for an OCA new to the set), so the caller can log every transition;
- learned_routes is the health JSON's "bgp_routes" (contracts.steering.learned_routes_of: the
  prefixes the OCA's BGP speaker learned, which then replace "serves"), kept from the previous
  state while a probe fails;
- load is clamped to [0, 1]; stored_titles is None when the health JSON has no list;
  title_objects is None unless the health JSON has an object of title -> non-negative integer
  (anything else, even one bad entry, makes it unknown: None, never a partial count).
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

from contracts.steering import learned_routes_of, pulls_through_of, title_objects_of

from .steering import OcaState, Origin

PROBE_INTERVAL_S = 0.25
TIMEOUT_ERROR = "timeout"  # the probe's error text for a probe that timed out
PENDING_ERROR = "pending"  # ... for an OCA whose probe is still in flight: no news
TIMEOUTS_TO_EXCLUDE = 3


@dataclass
class _Entry:
    state: OcaState
    probe: dict
    health: dict | None
    updated_s: float
    timeouts: int = 0  # consecutive probe timeouts


def url_host(url: object, where: str) -> str:
    """The IPv4 host of an http(s)://host:port URL, or ValueError naming `where`."""
    if not isinstance(url, str):
        raise ValueError(f"{where}.url: expected a string, got {type(url).__name__}")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.port is None:
        raise ValueError(f"{where}.url: expected http(s)://host:port, got {url!r}")
    try:
        return str(ipaddress.ip_address(parts.hostname))
    except ValueError:
        raise ValueError(f"{where}.url: host {parts.hostname!r} is not an IP address") from None


def _oca(d: object, i: int, now: float, prev: _Entry | None) -> _Entry:
    where = f"ocas[{i}]"
    if not isinstance(d, dict):
        raise ValueError(f"{where}: expected an object")
    name, tier = d.get("name"), d.get("tier")
    if not isinstance(name, str) or not name:
        raise ValueError(f"{where}.name: expected a non-empty string")
    serves = d.get("serves")
    if serves is not None and (not isinstance(serves, list) or not all(isinstance(p, str) for p in serves)):
        raise ValueError(f"{where}.serves: expected a list of prefixes or null")
    for p in serves or ():
        try:
            ipaddress.ip_network(p)
        except ValueError:
            raise ValueError(f"{where}.serves: {p!r} is not a network") from None
    probe = d.get("probe")
    if not isinstance(probe, dict) or not isinstance(probe.get("ok"), bool):
        raise ValueError(f"{where}.probe: expected an object with a boolean 'ok'")
    health = d.get("health")
    if health is not None and not isinstance(health, dict):
        raise ValueError(f"{where}.health: expected an object or null")
    if probe.get("error") == PENDING_ERROR and prev is not None:
        url_host(d.get("url"), where)
        return prev  # no news: the probe is in flight; the heartbeat ages
    ok = probe["ok"] and health is not None
    timeouts = (prev.timeouts + 1 if prev else 1) if probe.get("error") == TIMEOUT_ERROR else 0
    if not ok and prev is not None and 0 < timeouts < TIMEOUTS_TO_EXCLUDE:
        return _Entry(prev.state, dict(probe), prev.health, prev.updated_s, timeouts)
    heartbeat = now if ok else (prev.state.heartbeat_s if prev else None)
    status = str(health.get("status", "unknown")) if ok else (
        "pending" if probe.get("error") == PENDING_ERROR else "unreachable")
    load = health.get("load", 0.0) if ok else 0.0
    load = min(max(float(load), 0.0), 1.0) if isinstance(load, (int, float)) and not isinstance(load, bool) else 0.0
    stored = health.get("stored_titles") if ok else None
    titles = frozenset(map(str, stored)) if isinstance(stored, list) else None
    try:
        state = OcaState(name, tier, url_host(d.get("url"), where),
                         tuple(serves) if serves is not None else None, status=status, load=load,
                         heartbeat_s=heartbeat, stored_titles=titles,
                         title_objects=title_objects_of(health) if ok else None, url=d["url"],
                         pulls_through=ok and pulls_through_of(health),
                         learned_routes=learned_routes_of(health) if ok else (
                             prev.state.learned_routes if prev else None))
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None
    return _Entry(state, dict(probe), health if ok else (prev.health if prev else None), now, timeouts)


class OcaRegistry:
    """The latest pushed snapshot. Not locked: the caller (ControllerState) holds its lock."""

    def __init__(self) -> None:
        self.entries: dict[str, _Entry] = {}
        self.origin: Origin | None = None
        self.pushes = 0
        self.last_push_s: float | None = None

    def apply(self, body: object, now: float) -> dict:
        """Validate and apply one push (see module invariants); returns a short summary."""
        if not isinstance(body, dict):
            raise ValueError("body must be a JSON object")
        o = body.get("origin")
        if not isinstance(o, dict) or not isinstance(o.get("name"), str):
            raise ValueError("origin: expected an object with a string 'name' and a 'url'")
        origin = Origin(o["name"], url_host(o.get("url"), "origin"), o["url"])
        raw = body.get("ocas")
        if not isinstance(raw, list):
            raise ValueError("ocas: expected a list")
        new = {}
        for i, d in enumerate(raw):
            e = _oca(d, i, now, self.entries.get(d.get("name") if isinstance(d, dict) else None))
            if e.state.name in new:
                raise ValueError(f"ocas[{i}].name: duplicate {e.state.name!r}")
            new[e.state.name] = e
        changed = {n: [self.entries[n].state.status if n in self.entries else None, e.state.status]
                   for n, e in sorted(new.items())
                   if n not in self.entries or self.entries[n].state.status != e.state.status}
        self.entries, self.origin = new, origin
        self.pushes += 1
        self.last_push_s = now
        return {"ok": True, "ocas": len(new), "changed": changed, "unreachable": sorted(
            n for n, e in new.items() if e.state.status == "unreachable")}

    def states(self) -> list[OcaState]:
        return [e.state for _, e in sorted(self.entries.items())]

    def view(self, now: float) -> dict:
        """JSON for GET /ocas."""
        return {"pushes": self.pushes,
                "last_push_age_s": None if self.last_push_s is None else round(now - self.last_push_s, 3),
                "origin": None if self.origin is None else {"name": self.origin.name, "url": self.origin.url},
                "ocas": [{"name": s.name, "tier": s.tier, "url": s.url, "address": s.address,
                          "serves": list(s.served_prefixes) if s.served_prefixes is not None else None,
                          "bgp_routes": None if s.learned_routes is None else [r.to_json() for r in s.learned_routes],
                          "status": s.status, "load": s.load,
                          "heartbeat_age_s": None if s.heartbeat_s is None else round(now - s.heartbeat_s, 3),
                          "stored_titles": None if s.stored_titles is None else len(s.stored_titles),
                          "probe": e.probe, "timeouts_in_row": e.timeouts, "health": health_brief(e.health)}
                         for s, e in ((e.state, e) for _, e in sorted(self.entries.items()))]}


def health_brief(health: dict | None) -> dict | None:
    """The figures of an OCA's last good /health that a viewer of the lab reads (store use,
    streams, hit and miss counters, fill state); None before any good probe."""
    if health is None:
        return None
    counters = health.get("counters") if isinstance(health.get("counters"), dict) else {}
    fill = health.get("fill") if isinstance(health.get("fill"), dict) else {}
    return {**{k: health.get(k) for k in ("used_bytes", "capacity_bytes", "active_streams", "egress_mbps")},
            **{k: counters.get(k, 0) for k in ("hits", "misses", "content_misses")},
            "fill": {k: fill.get(k) for k in ("state", "filled", "total")}}
