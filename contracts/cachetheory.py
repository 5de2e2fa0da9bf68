"""Cache theory shared by the `fill` scenario and `ocalab bench cache`: Che's approximation.

Che's approximation (Che, Tung, Wang 2002) gives the steady-state LRU hit ratio of a cache of
C equal-size items under the independent reference model (IRM: each request picks item i with
probability p_i, independently of every other request). It is accurate when there are many
items and C is not tiny; it says nothing about a short stream that never fills the cache.

Items of unequal size (files: a title at one rung): the same characteristic time T now fills
the cache's bytes, sum_i s_i (1 - exp(-p_i T)) = C_bytes (Fricker, Robert, Roberts 2012), and
the request hit ratio is still sum_i p_i (1 - exp(-p_i T)).

Invariants: pure, stdlib only (contracts/ imports nothing of the project); a popularity list
is normalised here, so weights need not sum to 1; results are in [0, 1].
"""
from __future__ import annotations

import math


def zipf_popularity(n_items: int, alpha: float) -> list[float]:
    """p_i ~ 1 / rank**alpha for ranks 1..n_items, normalised to sum 1 (most popular first)."""
    if n_items < 1:
        raise ValueError(f"n_items must be >= 1, got {n_items}")
    if alpha < 0:
        raise ValueError(f"alpha must be >= 0, got {alpha}")
    weights = [1.0 / rank ** alpha for rank in range(1, n_items + 1)]
    total = sum(weights)
    return [w / total for w in weights]


def che_hit_ratio(popularity: list[float], cache_items: float) -> float:
    """Che's approximation of the LRU hit ratio under IRM for equal-size items.

    Solves sum_i (1 - exp(-p_i T)) = C for the characteristic time T (bisection), returns
    sum_i p_i (1 - exp(-p_i T)). C >= number of items -> 1.0; C <= 0 -> 0.0."""
    return che_hit_ratio_sized(popularity, [1.0] * len(popularity), cache_items)


def che_hit_ratio_sized(popularity: list[float], sizes: list[float], cache_size: float) -> float:
    """Che's approximation for items of unequal size: T solves sum_i s_i (1 - exp(-p_i T)) =
    cache_size (in the unit of `sizes`); returns the request hit ratio sum_i p_i (1 - exp(-p_i T)).
    A cache that holds every requested item -> 1.0; cache_size <= 0 -> 0.0."""
    if len(sizes) != len(popularity):
        raise ValueError(f"{len(popularity)} popularities but {len(sizes)} sizes")
    total = sum(popularity)
    if total <= 0 or any(p < 0 for p in popularity):
        raise ValueError("popularity must be non-negative and not all zero")
    if any(s <= 0 for s in sizes):
        raise ValueError("sizes must be positive")
    items = [(x / total, s) for x, s in zip(popularity, sizes) if x > 0]
    if cache_size <= 0:
        return 0.0
    if cache_size >= sum(s for _, s in items):
        return 1.0

    def occupancy(t: float) -> float:
        return sum(s * (1 - math.exp(-pi * t)) for pi, s in items)
    lo, hi = 0.0, 1.0
    while occupancy(hi) < cache_size:
        hi *= 2
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if occupancy(mid) < cache_size else (lo, mid)
    t = (lo + hi) / 2
    return sum(pi * (1 - math.exp(-pi * t)) for pi, _ in items)
