"""Fill planning: what each OCA pre-positions in the off-peak window, and from where. Pure.

Invariants:
- Regional popularity is the catalog's seeded Zipf popularity perturbed by a seeded log-normal
  factor per (region preference_seed, title), renormalised to sum 1: same seed, same result.
- An OCA's popularity is the mean of the popularities of the regions it serves (regions whose
  prefixes overlap the OCA's served prefixes); with no such region, the catalog popularity.
- A plan takes whole titles (every rung, the first `segments_per_title` segments) in
  decreasing popularity (ties by title name); a title that does not fit is skipped and smaller
  later titles may still fit. The planned bytes never exceed capacity_bytes * headroom.
- Fill sources are ranked peer (other OCAs of the same site, by name) -> tier (IXP OCAs of
  other sites, by name) -> origin.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping, Sequence

from contracts.deployment import Deployment, OcaSpec, RegionSpec

PREFERENCE_SIGMA = 0.7
DEFAULT_HEADROOM = 0.95

SizeFn = Callable[[str, int, int], int]


def regional_popularity(base: Mapping[str, float], preference_seed: int,
                        sigma: float = PREFERENCE_SIGMA) -> dict[str, float]:
    """Base popularity times exp(sigma * N(0,1)) per title (seeded), normalised to 1."""
    if not base:
        raise ValueError("base popularity is empty")
    if sigma < 0:
        raise ValueError(f"sigma must be >= 0, got {sigma}")
    rng = random.Random(f"region-preference|{preference_seed}")
    weights = {t: base[t] * math.exp(sigma * rng.gauss(0.0, 1.0)) for t in sorted(base)}
    total = sum(weights.values())
    if total <= 0:
        raise ValueError("base popularity sums to zero")
    return {t: w / total for t, w in weights.items()}


def _overlaps(oca: OcaSpec, region: RegionSpec) -> bool:
    return any(a.version == b.version and a.overlaps(b)
               for a in oca.serves for b in region.prefixes)


def oca_popularity(deployment: Deployment, oca: OcaSpec,
                   base: Mapping[str, float]) -> dict[str, float]:
    """Mean regional popularity over the regions this OCA serves."""
    regions = [r for r in deployment.regions if _overlaps(oca, r)]
    if not regions:
        return dict(base)
    pops = [regional_popularity(base, r.preference_seed) for r in regions]
    return {t: sum(p[t] for p in pops) / len(pops) for t in base}


def popularity_order(popularity: Mapping[str, float]) -> list[str]:
    """Titles by decreasing probability, ties broken by title name."""
    return sorted(popularity, key=lambda t: (-popularity[t], t))


@dataclass(frozen=True)
class FillPlan:
    oca: str
    titles: tuple[str, ...]
    segments: tuple[tuple[str, int, int], ...]
    planned_bytes: int
    capacity_bytes: int
    sources: tuple[str, ...]

    def request_body(self, rate_mbps: float, window_end_unix: float) -> dict:
        """JSON body of POST <oca>/fill (the appliance contract)."""
        return {"segments": [list(s) for s in self.segments], "sources": list(self.sources),
                "rate_mbps": rate_mbps, "window_end_unix": window_end_unix}


def select_titles(order: Iterable[str], title_bytes: Callable[[str], int],
                  budget_bytes: int) -> tuple[list[str], int]:
    """Greedy by popularity: take each title that still fits; return (titles, bytes)."""
    chosen, used = [], 0
    for t in order:
        b = title_bytes(t)
        if used + b <= budget_bytes:
            chosen.append(t)
            used += b
    return chosen, used


def fill_sources(deployment: Deployment, oca: OcaSpec) -> list[str]:
    """Ranked fill sources: same-site peers, then IXP OCAs of other sites, then origin."""
    others = [o for o in deployment.ocas if o.name != oca.name]
    peers = sorted((o for o in others if o.site == oca.site), key=lambda o: o.name)
    tier = sorted((o for o in others if o.site != oca.site and o.tier == "ixp"),
                  key=lambda o: o.name)
    return [o.url for o in peers] + [o.url for o in tier] + [deployment.origin.url]


def plan_oca(deployment: Deployment, oca: OcaSpec, base_popularity: Mapping[str, float],
             ladder_kbps: Sequence[int], segments_per_title: int, size_fn: SizeFn,
             capacity_bytes: int, headroom: float = DEFAULT_HEADROOM) -> FillPlan:
    """The fill plan of one OCA (see module invariants)."""
    if capacity_bytes < 0:
        raise ValueError(f"capacity_bytes must be >= 0, got {capacity_bytes}")
    if segments_per_title < 1:
        raise ValueError(f"segments_per_title must be >= 1, got {segments_per_title}")
    if not 0 < headroom <= 1:
        raise ValueError(f"headroom must be in (0, 1], got {headroom}")

    def title_bytes(t: str) -> int:
        return sum(size_fn(t, k, i) for k in ladder_kbps for i in range(segments_per_title))

    order = popularity_order(oca_popularity(deployment, oca, base_popularity))
    titles, used = select_titles(order, title_bytes, int(capacity_bytes * headroom))
    segments = tuple((t, k, i) for t in titles for k in ladder_kbps
                     for i in range(segments_per_title))
    return FillPlan(oca=oca.name, titles=tuple(titles), segments=segments, planned_bytes=used,
                    capacity_bytes=capacity_bytes, sources=tuple(fill_sources(deployment, oca)))
