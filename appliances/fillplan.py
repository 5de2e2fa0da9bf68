"""Fill planning: what each OCA pre-positions in the off-peak window, and from where. Pure.

Invariants:
- Regional popularity is the catalog's seeded Zipf popularity perturbed by a seeded log-normal
  factor per (region preference_seed, title), renormalised to sum 1: same seed, same result.
- An OCA's popularity is the mean of the popularities of the regions it serves (regions whose
  prefixes overlap the OCA's served prefixes); with no such region, the catalog popularity.
- Prediction from history (issue 11 item 5): regional popularity is the truth players draw from.
  `history_trace` samples "yesterday" from it with a seeded log-normal drift; a plan built with
  `history` uses only the add-one smoothed shares of that trace (`history_popularity`), never the
  truth. A region the OCA serves that has no history entry falls back to the base popularity.
- A plan takes whole titles (every rung, the first `segments_per_title` segments) in
  decreasing popularity (ties by title name), after the titles released today (`releases`, in
  their given order: pre-positioned before launch, as no history can rank them); a title that
  does not fit is skipped and smaller later titles may still fit. The planned bytes never exceed capacity_bytes * headroom.
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


def serves_region(oca: OcaSpec, region: RegionSpec) -> bool:
    """Whether the OCA serves any prefix of the region."""
    return any(a.version == b.version and a.overlaps(b)
               for a in oca.serves for b in region.prefixes)


History = Mapping[str, Mapping[str, float]]  # region name -> title -> predicted share


def oca_popularity(deployment: Deployment, oca: OcaSpec, base: Mapping[str, float],
                   history: History | None = None) -> dict[str, float]:
    """Mean popularity over the regions this OCA serves; base when it serves none.

    Without history a region's popularity is regional_popularity (the truth); with history it
    is history[region] (a prediction), or base for a region absent from history.
    """
    regions = [r for r in deployment.regions if serves_region(oca, r)]
    if not regions:
        return dict(base)
    if history is None:
        pops = [regional_popularity(base, r.preference_seed) for r in regions]
    else:
        pops = [_history_region(history, r.name, base) for r in regions]
    return {t: sum(p[t] for p in pops) / len(pops) for t in base}


def _history_region(history: History, region: str,
                    base: Mapping[str, float]) -> Mapping[str, float]:
    """history[region] checked to cover every base title; base when the region is absent."""
    shares = history.get(region)
    if shares is None:
        return base
    missing = base.keys() - shares.keys()
    if missing:
        raise ValueError(f"history[{region!r}] lacks {len(missing)} catalog titles, "
                         f"e.g. {min(missing)!r}")
    return shares


def _drifted(popularity: Mapping[str, float], drift: float, rng_seed: str) -> dict[str, float]:
    """popularity times exp(drift * N(0,1)) per title (sorted order, seeded), normalised to 1."""
    rng = random.Random(rng_seed)
    weights = {t: popularity[t] * math.exp(drift * rng.gauss(0.0, 1.0)) for t in sorted(popularity)}
    total = sum(weights.values())
    return {t: w / total for t, w in weights.items()}


def _check_history_args(deployment: Deployment, sessions_per_region: int, drift: float,
                        seed: int) -> None:
    """ValueError naming the field unless the history_trace arguments are usable."""
    if isinstance(sessions_per_region, bool) or not isinstance(sessions_per_region, int) \
            or sessions_per_region < 1:
        raise ValueError(f"sessions_per_region must be an integer >= 1, "
                         f"got {sessions_per_region!r}")
    if isinstance(drift, bool) or not isinstance(drift, (int, float)) \
            or not math.isfinite(drift) or drift < 0:
        raise ValueError(f"drift must be a finite number >= 0, got {drift!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    if not deployment.regions:
        raise ValueError("deployment.regions is empty: no region to draw a history for")


def history_trace(deployment: Deployment, base: Mapping[str, float], *,
                  sessions_per_region: int, drift: float,
                  seed: int, days: int = 1, skip_days: int = 0) -> list[tuple[str, str]]:
    """The sessions of `days` past days as (region name, title): the oldest day first, regions
    in name order within a day. Day 1 is yesterday; `skip_days` leaves out the most recent
    days (skip_days=1: the history as it was a night ago, the day before yesterday and older).

    Per region: its regional_popularity (truth) times a seeded drift exp(drift * N(0,1)) per
    title (rng "history-drift|{seed}|{region}", the same tastes every past day; drift 0 = none),
    renormalised; then `sessions_per_region` titles per day drawn with rng
    "history-sessions|{seed}|{region}" for day 1 and "...|{region}|d{day}" for an older day.
    Pooling several days smooths the prediction, as Open Connect's popularity does ("several
    days of history"), and makes two nights' plans differ by one day of sessions.
    Same arguments, same trace.
    """
    _check_history_args(deployment, sessions_per_region, drift, seed)
    for name, v in (("days", days), ("skip_days", skip_days)):
        if isinstance(v, bool) or not isinstance(v, int) or v < (1 if name == "days" else 0):
            raise ValueError(f"{name} must be an integer >= {1 if name == 'days' else 0}, got {v!r}")
    trace: list[tuple[str, str]] = []
    regions = sorted(deployment.regions, key=lambda r: r.name)
    pops = {r.name: _drifted(regional_popularity(base, r.preference_seed), drift,
                             f"history-drift|{seed}|{r.name}") for r in regions}
    for day in range(skip_days + days, skip_days, -1):
        for region in regions:
            pop = pops[region.name]
            titles = list(pop)
            day_tag = "" if day == 1 else f"|d{day}"
            rng = random.Random(f"history-sessions|{seed}|{region.name}{day_tag}")
            drawn = rng.choices(titles, weights=[pop[t] for t in titles], k=sessions_per_region)
            trace.extend((region.name, t) for t in drawn)
    return trace


def history_popularity(trace: Iterable[tuple[str, str]],
                       titles: Iterable[str]) -> dict[str, dict[str, float]]:
    """Per region in the trace: (count(title) + 1) / (sessions + n_titles) over all titles.

    Add-one smoothing: every catalog title gets a share > 0 and each region's shares sum to 1.
    A title in the trace that is not in `titles` is a ValueError.
    """
    names = list(dict.fromkeys(titles))
    if not names:
        raise ValueError("titles is empty")
    known = set(names)
    counts: dict[str, dict[str, int]] = {}
    for region, title in trace:
        if title not in known:
            raise ValueError(f"history title {title!r} (region {region!r}) is not in the catalog")
        per = counts.setdefault(region, {})
        per[title] = per.get(title, 0) + 1
    out = {}
    for region in sorted(counts):
        denom = sum(counts[region].values()) + len(names)
        out[region] = {t: (counts[region].get(t, 0) + 1) / denom for t in names}
    return out


def popularity_order(popularity: Mapping[str, float]) -> list[str]:
    """Titles by decreasing probability, ties broken by title name."""
    return sorted(popularity, key=lambda t: (-popularity[t], t))


HEAD_SHARE_TOLERANCE = 1e-9  # float sums: a prefix within this of `share` reaches it


def head_bytes(popularity: Mapping[str, float], title_bytes: Callable[[str], int],
               share: float) -> int:
    """Bytes of the shortest popularity_order prefix whose probability reaches `share`.

    Probabilities are taken relative to their total (so counts work too); a prefix reaches
    share when its sum >= share - HEAD_SHARE_TOLERANCE. share 1.0 takes every title of
    positive probability. Capacity = head_bytes / headroom is the caller's choice.
    """
    if not (isinstance(share, (int, float)) and 0 < share <= 1):
        raise ValueError(f"share must be in (0, 1], got {share!r}")
    if any(p < 0 for p in popularity.values()):
        raise ValueError("popularity has a negative probability")
    total = sum(popularity.values())
    if total <= 0:
        raise ValueError("popularity is empty or sums to zero")
    covered, used_bytes = 0.0, 0
    for t in popularity_order(popularity):
        if covered / total >= share - HEAD_SHARE_TOLERANCE:
            break
        covered += popularity[t]
        used_bytes += title_bytes(t)
    return used_bytes


def plan_coverage(plan_titles: Iterable[str], demand: Mapping[str, float]) -> float:
    """Share in [0, 1] of `demand` (title -> count or probability) whose title is planned."""
    if any(v < 0 for v in demand.values()):
        raise ValueError("demand has a negative value")
    total = sum(demand.values())
    if total <= 0:
        raise ValueError("demand is empty or sums to zero")
    return sum(demand.get(t, 0.0) for t in set(plan_titles)) / total


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
             capacity_bytes: int, headroom: float = DEFAULT_HEADROOM,
             history: History | None = None, releases: Sequence[str] = ()) -> FillPlan:
    """The fill plan of one OCA (see module invariants); `history` as in oca_popularity;
    `releases`: titles released today, planned first (ValueError if one is not a title)."""
    unknown = [t for t in releases if t not in base_popularity]
    if unknown:
        raise ValueError(f"releases: {unknown} not in the catalog")
    if capacity_bytes < 0:
        raise ValueError(f"capacity_bytes must be >= 0, got {capacity_bytes}")
    if segments_per_title < 1:
        raise ValueError(f"segments_per_title must be >= 1, got {segments_per_title}")
    if not 0 < headroom <= 1:
        raise ValueError(f"headroom must be in (0, 1], got {headroom}")

    def title_bytes(t: str) -> int:
        return sum(size_fn(t, k, i) for k in ladder_kbps for i in range(segments_per_title))

    ranked = popularity_order(oca_popularity(deployment, oca, base_popularity, history))
    order = list(dict.fromkeys(releases)) + [t for t in ranked if t not in releases]
    titles, used = select_titles(order, title_bytes, int(capacity_bytes * headroom))
    segments = tuple((t, k, i) for t in titles for k in ladder_kbps
                     for i in range(segments_per_title))
    return FillPlan(oca=oca.name, titles=tuple(titles), segments=segments, planned_bytes=used,
                    capacity_bytes=capacity_bytes, sources=tuple(fill_sources(deployment, oca)))
