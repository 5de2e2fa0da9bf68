"""The JSON the web view draws, built from data alone (pure: no sockets, no files, no clock).

A *frame* is what the page shows at one instant:
  {"t": unix s, "arm": str|None,
   "links": {link: {"mbps", "tx_mbps", "rx_mbps", "bytes", "up"}} | None,
   "ocas": {name: {"status", "load", "hit_ratio", "used_bytes", "capacity_bytes", "fill"}} | None,
   "serving": {viewer host: {"server", "tier", "session"}},
   "sessions": [{"session", "host", "server", "kbps", "buffer_s", "t"}],
   "events": [{"t", "kind", "text"}],          # the newest FRAME_EVENTS, oldest first
   "sources": {panel: text naming where its numbers come from, or None: no source}}
A panel whose source is None has no numbers (the page says so); no figure is ever estimated.
"""
from __future__ import annotations

from typing import Iterable

EVENTS_KEPT = 200
FRAME_EVENTS = 50
RECENT_S = 5.0  # a viewer is "being served" by the server of its chunks of the last RECENT_S


def topology(plan) -> dict:
    """Nodes and edges of the plan for the graph: every node with its role, tier and domain;
    every link with its class and planned rate (bw_mbps)."""
    nodes = [{"id": n.name, "kind": n.kind, "role": n.role, "tier": n.tier, "domain": n.domain}
             for n in plan.nodes]
    edges = [{"id": lk.name, "source": lk.a.node, "target": lk.b.node, "cls": lk.cls,
              "bw_mbps": lk.bw_mbps} for lk in plan.links]
    return {"plan": plan.name, "nodes": nodes, "edges": edges}


def _round(v, digits: int):
    return None if v is None else round(v, digits)


def links_from_controller(rows: list[dict]) -> dict[str, dict]:
    """The controller's GET /links rows -> link panel entries (rates from its port counters)."""
    out = {}
    for r in rows:
        total = None if r.get("tx_bytes") is None else (r.get("tx_bytes") or 0) + (r.get("rx_bytes") or 0)
        out[r["name"]] = {**{k: _round(r.get(f), 3) for k, f in (("mbps", "rate_mbps"), ("tx_mbps", "tx_mbps"),
                                                                  ("rx_mbps", "rx_mbps"))},
                          "bytes": total, "up": r.get("up")}
    return out


def ocas_from_controller(view: dict) -> dict[str, dict]:
    """The controller's GET /ocas view -> OCA panel entries. hit_ratio is hits / (hits + misses)
    of the OCA's own counters since it started (None before its first request)."""
    out = {}
    for o in view.get("ocas", []):
        h = o.get("health") or {}
        served = (h.get("hits") or 0) + (h.get("misses") or 0)
        out[o["name"]] = {"status": o.get("status"), "tier": o.get("tier"), "load": o.get("load"),
                          "hit_ratio": round(h["hits"] / served, 4) if served else None,
                          "used_bytes": h.get("used_bytes"), "capacity_bytes": h.get("capacity_bytes"),
                          "fill": (h.get("fill") or {}).get("state"),
                          "heartbeat_age_s": o.get("heartbeat_age_s")}
    return out


def latest_chunks(chunks: Iterable[dict], now: float, window_s: float) -> dict[str, dict]:
    """session -> its newest chunk row whose `time` is in (now - window_s, now]."""
    out: dict[str, dict] = {}
    for c in chunks:
        t = float(c["time"])
        if now - window_s < t <= now and (c["viewer"] not in out or t >= float(out[c["viewer"]]["time"])):
            out[c["viewer"]] = c
    return out


def serving_and_sessions(chunks: Iterable[dict], now: float) -> tuple[dict, list[dict]]:
    """Who serves whom and each session's buffer and bitrate, from chunk rows (a player's chunk
    log with the `host` it ran in) of the last RECENT_S seconds."""
    newest = latest_chunks(chunks, now, RECENT_S)
    sessions = sorted(({"session": s, "host": c["host"], "server": c["server"], "tier": c.get("tier"),
                        "kbps": int(float(c["kbps"])), "buffer_s": round(float(c["buffer_s"]), 2),
                        "t": float(c["time"])} for s, c in newest.items()), key=lambda r: r["session"])
    serving: dict[str, dict] = {}
    for r in sessions:  # several sessions in one host: the newest chunk names the server
        if r["host"] not in serving or r["t"] >= serving[r["host"]]["t"]:
            serving[r["host"]] = {"server": r["server"], "tier": r["tier"], "session": r["session"], "t": r["t"]}
    return serving, sessions


class EventLog:
    """Turns successive states into events: OCA status and fill state changes, links going down
    or up, a viewer host moving to another server. Keeps the newest EVENTS_KEPT."""

    def __init__(self) -> None:
        self.events: list[dict] = []
        self._oca: dict[str, tuple] = {}
        self._up: dict[str, bool | None] = {}
        self._server: dict[str, str] = {}
        self._arm: str | None = None

    def add(self, t: float, kind: str, text: str) -> None:
        self.events.append({"t": round(t, 3), "kind": kind, "text": text})
        del self.events[:-EVENTS_KEPT]

    def arm(self, t: float, arm: str | None) -> None:
        """Note the arm playing; a new arm starts its viewers anew: no steering change across arms."""
        if arm is not None and arm != self._arm:
            self.add(t, "arm", f"arm {arm} plays")
            self._server.clear()
            self._arm = arm

    def observe(self, t: float, links: dict | None, ocas: dict | None, serving: dict) -> None:
        for name, o in sorted((ocas or {}).items()):
            old = self._oca.get(name)
            if old is not None and old[0] != o["status"]:
                self.add(t, "oca", f"{name}: {old[0]} -> {o['status']}")
            if old is not None and o["fill"] is not None and old[1] != o["fill"]:
                self.add(t, "fill", f"{name}: fill {old[1] or 'none'} -> {o['fill']}")
            self._oca[name] = (o["status"], o["fill"] if o["fill"] is not None else (old[1] if old else None))
        for name, lk in sorted((links or {}).items()):
            old = self._up.get(name)
            if old is not None and lk["up"] is not None and old != lk["up"]:
                self.add(t, "link", f"{name}: {'up' if lk['up'] else 'down'}")
            if lk["up"] is not None:
                self._up[name] = lk["up"]
        for host, s in sorted(serving.items()):
            old = self._server.get(host)
            if old is not None and old != s["server"]:
                self.add(t, "steering", f"{host}: {old} -> {s['server']}")
            self._server[host] = s["server"]


def frame(t: float, arm: str | None, links: dict | None, ocas: dict | None, serving: dict,
          sessions: list[dict], log: EventLog, sources: dict[str, str | None]) -> dict:
    return {"t": round(t, 3), "arm": arm, "links": links, "ocas": ocas, "serving": serving,
            "sessions": sessions, "events": log.events[-FRAME_EVENTS:], "sources": dict(sources)}
