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
  today's popularity itself: the prediction does not know the answer;
- an OCA of an `lru_tiers` tier (a pull-through cache, which has no plan) holds instead what the
  store's own LRU holds after yesterday's sessions in its regions (`lru_titles`), its objects'
  mtimes in recency order, so the store's startup index (oldest first) resumes that LRU order.
"""
from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path

from appliances.content import Catalog
from appliances.fillplan import (DEFAULT_HEADROOM, history_popularity, history_trace, oca_popularity,
                                 serves_region)
from appliances.history import read_history_csv, write_history_csv
from appliances.store import EvictionPolicy
from contracts.catalog import CatalogSpec
from contracts.deployment import parse_deployment
from harness.sizing import CapacityRule, capacity_bytes

# sessions per region and day, how far today's tastes drifted from the history's (log-normal
# sigma), days of history pooled, most recent days left out (1: the history a night ago)
HISTORY_DEFAULTS = {"sessions_per_region": 400, "drift": 0.3, "days": 1, "skip_days": 0}


def catalog_of(dep: dict) -> Catalog:
    return Catalog(CatalogSpec(**dep["catalog"]))


def spt_of(catalog: Catalog, segments_per_title: int | None) -> int:
    """Segments per title that plans cover: the first N (all when None)."""
    total = catalog.segment_count(catalog.titles()[0])
    return min(segments_per_title or total, total)


def write_history(dep: dict, path: Path, seed: int, sessions_per_region: int, drift: float,
                  skip_titles: tuple[str, ...] = (), days: int = 1, skip_days: int = 0) -> dict:
    """Draw the past days' sessions (appliances.fillplan.history_trace), save them as `path`
    (CSV region,title, oldest first); the per-region popularity the fill plans use.
    `skip_titles` did not exist yesterday: nobody watched them."""
    d, catalog = parse_deployment(dep), catalog_of(dep)
    trace = history_trace(d, catalog.popularity(), sessions_per_region=sessions_per_region,
                          drift=drift, seed=seed, days=days, skip_days=skip_days)
    trace = [(r, t) for r, t in trace if t not in skip_titles]
    write_history_csv(path, trace)
    return history_popularity(trace, catalog.titles())


def size_ocas(dep: dict, rules: dict[str, CapacityRule], segments_per_title: int | None,
              history: dict | None) -> dict:
    """`dep` with every OCA's capacity_mb set by its tier's rule (see harness.sizing)."""
    d, catalog = parse_deployment(dep), catalog_of(dep)
    title_bytes = _title_bytes(catalog, spt_of(catalog, segments_per_title))
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


def lru_titles(requests: Iterable[str], title_bytes: Mapping[str, int], capacity_bytes: int) -> list[str]:
    """The titles an LRU cache of `capacity_bytes` holds after `requests` (titles in time order),
    least recently used first: the store's own EvictionPolicy with one item per title of
    `title_bytes[title]` bytes (its planned segments at every rung). Pure."""
    lru = EvictionPolicy("lru")
    for title in requests:
        key = (title, 0, 0)
        if key in lru:
            lru.touch(key)
            continue
        victims = lru.victims(title_bytes[title], capacity_bytes)
        for v in victims or ():
            lru.remove(v)
        if victims is not None:
            lru.add(key, title_bytes[title])
    return [k[0] for k in lru.keys()]


def read_trace(dep: dict, path: Path) -> list[tuple[str, str]]:
    """Yesterday's (region, title) sessions as write_history saved them."""
    return read_history_csv(path, parse_deployment(dep), catalog_of(dep).titles())


def stage(dep: dict, segments_per_title: int | None, history: dict | None, stores: Path,
          objects_dir: Path, skip_titles: tuple[str, ...] = (),
          tiers: tuple[str, ...] = ("ixp", "embedded"), lru_tiers: tuple[str, ...] = (),
          trace: list[tuple[str, str]] | None = None) -> dict[str, dict]:
    """Write every OCA's plan into `stores/<name>/objects/...`, except `skip_titles` (released
    today: yesterday's fill cannot hold them), for the OCAs of `tiers`; an OCA of `lru_tiers`
    gets the LRU state of `trace` instead (see module invariants); name -> what was staged."""
    if lru_tiers and trace is None:
        raise ValueError("lru_tiers needs yesterday's trace")
    catalog, d = catalog_of(dep), parse_deployment(dep)
    n = spt_of(catalog, segments_per_title)
    made: dict[tuple, Path] = {}
    out = {}
    tier_of = {o["name"]: o["tier"] for o in dep["ocas"]}
    for name, plan in plans(dep, segments_per_title, history).items():
        if tier_of[name] not in tiers:
            continue
        if tier_of[name] in lru_tiers:
            spec = next(o for o in d.ocas if o.name == name)
            regions = {r.name for r in d.regions if serves_region(spec, r)}
            seen = [t for r, t in trace if r in regions and t not in skip_titles]
            titles = lru_titles(seen, _title_bytes(catalog, n), plan.capacity_bytes)
            keys = [(t, k, i) for t in titles for k in catalog.spec.ladder_kbps for i in range(n)]
        else:
            titles = [t for t in plan.titles if t not in skip_titles]
            keys = [k for k in plan.segments if k[0] not in skip_titles]
        ordered = tier_of[name] in lru_tiers
        for rank, key in enumerate(keys):
            src = made.get(key) or _materialise(catalog, key, objects_dir)
            made[key] = src
            dst = stores / name / "objects" / key[0] / str(key[1]) / src.name
            dst.parent.mkdir(parents=True, exist_ok=True)
            if ordered:  # its own inode: the mtime orders the store's LRU at startup
                shutil.copyfile(src, dst)
                os.utime(dst, ns=(rank, rank))
            else:
                os.link(src, dst)
        out[name] = {"state": "staged-lru" if ordered else "staged", "total": len(keys),
                     "filled": len(keys), "present": 0, "failed": 0, "no_room": 0,
                     "bytes": sum(made[k].stat().st_size for k in keys),
                     "titles": " ".join(titles), "capacity_bytes": plan.capacity_bytes}
    return out


def _title_bytes(catalog: Catalog, n: int) -> dict[str, int]:
    """title -> bytes of its first n segments at every rung."""
    return {t: catalog.title_bytes(t, n) for t in catalog.titles()}


def _materialise(catalog: Catalog, key: tuple, objects_dir: Path) -> Path:
    data = catalog.segment_bytes(*key)
    path = objects_dir / key[0] / str(key[1]) / f"{key[2]}.{hashlib.sha256(data).hexdigest()}"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path
