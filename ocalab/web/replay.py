"""`ocalab web RUN_DIR`: the frames of a saved run, one per step, from its tables alone (no root).

Sources, named in each frame's `sources`:
- links: payload over plan paths: each chunk's bytes (chunks table) spread evenly over its
  download, on every plan link between the viewer host and the node that served it. The saved
  tables hold no per-second port counters, so `up` is None and wire overhead is not in it;
- OCAs: hit ratio from the access table (cache hits among the OCA's answers so far); fill state
  from the fill table of the arm; status and load are not saved (None);
- who serves whom, sessions: the chunks table; events: the events table (if the scenario writes
  one) and server changes seen in the chunks.
"""
from __future__ import annotations

import bisect
import json
import math
from pathlib import Path

from harness.rundir import table_path
from ocalab.web import frames as F
from scenarios.logs import read_rows
from topologies.plan import Plan, PlanError
from topologies.routes import path_links

MAX_FRAMES = 3600


class ReplayError(ValueError):
    """A folder that is no single run (missing, a --repeat series, no chunks table)."""


def resolve_run_dir(path: Path) -> Path:
    """The run folder to replay; a `--repeat` series is refused with its rep folders named."""
    if not (path / "manifest.json").exists():
        raise ReplayError(f"{path}: no manifest.json; not a run folder")
    if not table_path(path, "chunks").exists():
        reps = sorted(p.name for p in path.glob("rep*") if table_path(p, "chunks").exists())
        if reps:
            raise ReplayError(f"{path}: a --repeat series; replay one of: "
                              + ", ".join(str(path / r) for r in reps))
        raise ReplayError(f"{path}: no chunks table (chunks.csv); nothing played in this run")
    if not (path / "plan.json").exists():
        raise ReplayError(f"{path}: no plan.json")
    return path


def load(run_dir: Path) -> dict:
    """{"topology", "manifest": brief, "frames": [...]} of the run in `run_dir`."""
    run_dir = resolve_run_dir(run_dir)
    plan = Plan.from_json((run_dir / "plan.json").read_text())
    manifest = json.loads((run_dir / "manifest.json").read_text())
    chunks = sorted(read_rows(table_path(run_dir, "chunks")), key=lambda c: float(c["time"]))
    access = sorted(read_rows(table_path(run_dir, "access")), key=lambda a: float(a["ts"]))
    fills = read_rows(table_path(run_dir, "fill"))
    events = sorted(read_rows(table_path(run_dir, "events")), key=lambda e: float(e["t_unix"]))
    brief = {k: manifest.get(k) for k in ("scenario", "seed", "quick", "plan", "started", "ended")}
    return {"topology": F.topology(plan), "manifest": brief,
            "frames": build_frames(plan, chunks, access, fills, events)}


def chunk_node(c: dict) -> str:
    """The node that sent a chunk: its X-Ocalab-Node (`node`) when logged, else its location."""
    return c.get("node") or c["server"]


def build_frames(plan: Plan, chunks: list[dict], access: list[dict], fills: list[dict],
                 events: list[dict]) -> list[dict]:
    """One frame per step (1 s, longer for runs over MAX_FRAMES s) from the first chunk request
    to the last chunk. `chunks` and `access` sorted by time. Pure."""
    if not chunks:
        return []
    t0 = math.floor(min(float(c["request_unix"]) for c in chunks))
    t1 = math.ceil(float(chunks[-1]["time"]))
    step = max(1, math.ceil((t1 - t0) / MAX_FRAMES))
    times = list(range(t0 + step, t1 + step, step))
    rates = _link_rates(plan, chunks, t0, step, len(times))
    chunk_t = [float(c["time"]) for c in chunks]
    arms = _arm_spans(chunks)
    log = F.EventLog()
    ev_i = acc_i = 0
    hits: dict[str, list[int]] = {}
    totals = {lk.name: 0.0 for lk in plan.links}
    out = []
    for k, t in enumerate(times):
        for name in totals:
            totals[name] += rates[name][k] * step * 1e6 / 8
        links = {name: {"mbps": round(rates[name][k], 3), "tx_mbps": None, "rx_mbps": None,
                        "bytes": int(totals[name]), "up": None} for name in totals}
        while acc_i < len(access) and float(access[acc_i]["ts"]) <= t:
            a = access[acc_i]
            h = hits.setdefault((a.get("arm"), a["server"]), [0, 0])
            h[0] += a.get("cache") == "hit"
            h[1] += 1
            acc_i += 1
        arm = next((a for a, (lo, hi) in arms.items() if lo <= t <= hi + step), None)
        log.arm(t, arm)
        lo = bisect.bisect_right(chunk_t, t - F.RECENT_S)
        window = [{**c, "server": chunk_node(c)} for c in chunks[lo:bisect.bisect_right(chunk_t, t)]]
        serving, sessions = F.serving_and_sessions(window, t)
        while ev_i < len(events) and float(events[ev_i]["t_unix"]) <= t:
            e = events[ev_i]
            log.add(float(e["t_unix"]), "event", " ".join(str(e.get(k, "")) for k in ("arm", "event", "victim")))
            ev_i += 1
        log.observe(t, None, None, serving)
        out.append(F.frame(t, arm, links, _ocas(plan, hits, fills, arm), serving, sessions, log, SOURCES))
    return out


SOURCES = {"links": "payload over plan paths (chunks table); no per-second port counters saved",
           "ocas": "hit ratio: access table; fill: fill table; status and load: not saved",
           "sessions": "chunks table", "events": "events table and server changes in chunks"}


def _ocas(plan: Plan, hits: dict, fills: list[dict], arm: str | None) -> dict:
    """OCA panel entries: hits counted per (arm, server), as every arm starts its OCAs anew."""
    fill_state = {f["oca"]: f["state"] for f in fills if f.get("arm") == arm}
    return {n.name: {"status": None, "tier": n.tier, "load": None,
                     "hit_ratio": round(h[0] / h[1], 4) if (h := hits.get((arm, n.name))) else None,
                     "used_bytes": None, "capacity_bytes": None, "fill": fill_state.get(n.name),
                     "heartbeat_age_s": None}
            for n in plan.nodes_of(role="oca")}


def _arm_spans(chunks: list[dict]) -> dict[str, tuple[float, float]]:
    spans: dict[str, tuple[float, float]] = {}
    for c in chunks:
        lo, hi = spans.get(c.get("arm") or "", (math.inf, -math.inf))
        spans[c.get("arm") or ""] = (min(lo, float(c["request_unix"])), max(hi, float(c["time"])))
    return spans


def _link_rates(plan: Plan, chunks: list[dict], t0: int, step: int, n: int) -> dict[str, list[float]]:
    """link -> Mbit/s per step: each chunk's bytes spread evenly over [request_unix, time]."""
    rates = {lk.name: [0.0] * n for lk in plan.links}
    paths: dict[tuple[str, str], tuple[str, ...]] = {}
    for c in chunks:
        key = (c["host"], chunk_node(c))
        if key not in paths:
            try:
                paths[key] = path_links(plan, key[0], plan.primary_ip(key[1]))
            except (PlanError, KeyError, ValueError):
                paths[key] = ()  # a sender outside the plan (e.g. an anycast name): not drawn
        lo, hi = float(c["request_unix"]), max(float(c["time"]), float(c["request_unix"]) + 1e-3)
        mbits = float(c["bytes"]) * 8 / 1e6
        for k in range(max(0, int((lo - t0) // step)), min(n, int((hi - t0) // step) + 1)):
            a, b = t0 + k * step, t0 + (k + 1) * step
            share = max(0.0, min(hi, b) - max(lo, a)) / (hi - lo)
            for name in paths[key]:
                rates[name][k] += mbits * share / step
    return rates
