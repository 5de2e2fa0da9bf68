"""What the OCAs know before the serve clock starts: yesterday's requests, the capacities sized
from them, and (fill mode `staged`) the stores already filled with each OCA's fill plan.

Open Connect fills off-peak and serves at peak; serve experiments (placement, steering,
failover, flashcrowd) start from that steady state. Staging writes the objects a network fill
would write, without the network: the same catalog bytes under the same
`objects/<title>/<kbps>/<index>.<sha256>` names the OCA's store indexes at start (the fill
scenario measures the fill itself over the network).

Invariants:
- the plan staged is the control plane's own (`CacheControl.plan`, same deployment, catalog,
  history and segments per title), so a staged store equals a completed network fill;
- each object's bytes are generated once per call and hard-linked into every store that plans
  it; nothing is written outside `objects_dir` and the stores;
- the history is a seeded trace of yesterday's sessions (drifted from today's popularity), never
  today's popularity itself: the prediction does not know the answer.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

from appliances.content import Catalog
from appliances.fillplan import DEFAULT_HEADROOM, history_popularity, history_trace, oca_popularity
from appliances.history import write_history_csv
from contracts.catalog import CatalogSpec
from contracts.deployment import parse_deployment
from harness.sizing import CapacityRule, capacity_bytes

# yesterday's sessions per region and how far today's tastes drifted from them (log-normal sigma)
HISTORY_DEFAULTS = {"sessions_per_region": 400, "drift": 0.3}


def catalog_of(dep: dict) -> Catalog:
    return Catalog(CatalogSpec(**dep["catalog"]))


def spt_of(catalog: Catalog, segments_per_title: int | None) -> int:
    """Segments per title that plans cover: the first N (all when None)."""
    total = catalog.segment_count(catalog.titles()[0])
    return min(segments_per_title or total, total)


def write_history(dep: dict, path: Path, seed: int, sessions_per_region: int, drift: float,
                  skip_titles: tuple[str, ...] = ()) -> dict:
    """Draw yesterday's sessions, save them as `path` (CSV region,title); the per-region
    popularity the fill plans use. `skip_titles` did not exist yesterday: nobody watched them."""
    d, catalog = parse_deployment(dep), catalog_of(dep)
    trace = history_trace(d, catalog.popularity(), sessions_per_region=sessions_per_region,
                          drift=drift, seed=seed)
    trace = [(r, t) for r, t in trace if t not in skip_titles]
    write_history_csv(path, trace)
    return history_popularity(trace, catalog.titles())


def size_ocas(dep: dict, rules: dict[str, CapacityRule], segments_per_title: int | None,
              history: dict | None) -> dict:
    """`dep` with every OCA's capacity_mb set by its tier's rule (see harness.sizing)."""
    d, catalog = parse_deployment(dep), catalog_of(dep)
    n = spt_of(catalog, segments_per_title)
    title_bytes = {t: sum(catalog.segment_size(t, k, i) for k in catalog.spec.ladder_kbps
                          for i in range(n)) for t in catalog.titles()}
    ocas = []
    for raw, spec in zip(dep["ocas"], d.ocas):
        pop = oca_popularity(d, spec, catalog.popularity(), history=history)
        cap = capacity_bytes(rules[spec.tier], pop, title_bytes, DEFAULT_HEADROOM)
        ocas.append({**raw, "capacity_mb": cap / 2**20, "capacity_rule": str(rules[spec.tier])})
    return {**dep, "ocas": ocas}


def plans(dep: dict, segments_per_title: int | None, history: dict | None) -> dict:
    """name -> the FillPlan the control plane would push to that OCA."""
    from appliances.control_cache import CacheControl
    from appliances.control_health import HealthRegistry
    d, catalog = parse_deployment(dep), catalog_of(dep)
    cc = CacheControl(d, catalog, HealthRegistry(), segments_per_title=segments_per_title,
                      history=history)
    return {o.name: cc.plan(o, None) for o in d.ocas}


def stage(dep: dict, segments_per_title: int | None, history: dict | None, stores: Path,
          objects_dir: Path, skip_titles: tuple[str, ...] = (),
          tiers: tuple[str, ...] = ("ixp", "embedded")) -> dict[str, dict]:
    """Write every OCA's plan into `stores/<name>/objects/...`, except `skip_titles` (released
    today: yesterday's fill cannot hold them), for the OCAs of `tiers`; name -> what was staged."""
    catalog = catalog_of(dep)
    made: dict[tuple, Path] = {}
    out = {}
    tier_of = {o["name"]: o["tier"] for o in dep["ocas"]}
    for name, plan in plans(dep, segments_per_title, history).items():
        if tier_of[name] not in tiers:
            continue
        keys = [k for k in plan.segments if k[0] not in skip_titles]
        for key in keys:
            src = made.get(key) or _materialise(catalog, key, objects_dir)
            made[key] = src
            dst = stores / name / "objects" / key[0] / str(key[1]) / src.name
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.link(src, dst)
        out[name] = {"state": "staged", "total": len(keys), "filled": len(keys), "present": 0,
                     "failed": 0, "no_room": 0, "bytes": sum(made[k].stat().st_size for k in keys),
                     "titles": " ".join(t for t in plan.titles if t not in skip_titles),
                     "capacity_bytes": plan.capacity_bytes}
    return out


def _materialise(catalog: Catalog, key: tuple, objects_dir: Path) -> Path:
    data = catalog.segment_bytes(*key)
    path = objects_dir / key[0] / str(key[1]) / f"{key[2]}.{hashlib.sha256(data).hexdigest()}"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path
