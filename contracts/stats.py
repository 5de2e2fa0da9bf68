"""The project's one definition of summary statistics over plain lists of numbers.

Percentiles interpolate linearly between the closest ranks, as numpy's and pandas' default
(`method="linear"`) does, so `quantile(xs, 0.5)` equals `statistics.median(xs)` and equals a
pandas `Series.quantile(0.5)` over the same values. Pure; raises ValueError on an empty list
instead of inventing a value.
"""
from __future__ import annotations

import math
import statistics
from typing import Iterable


def quantile(values: Iterable[float], q: float) -> float:
    """The q-quantile (0 <= q <= 1) of `values`, linear between closest ranks."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("quantile of an empty list")
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile: q must be within [0, 1], got {q}")
    pos = q * (len(ordered) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def percentile(values: Iterable[float], pct: float) -> float:
    """`quantile` with pct in [0, 100]."""
    return quantile(values, pct / 100.0)


def median(values: Iterable[float]) -> float:
    """`quantile(values, 0.5)`, computed as the mean of the middle two for an even count so that
    it equals `statistics.median` and pandas bit for bit (rounding ties depend on it)."""
    ordered = sorted(values)
    n = len(ordered)
    if n and n % 2 == 0:
        return (ordered[n // 2 - 1] + ordered[n // 2]) / 2
    return quantile(ordered, 0.5)


def mean(values: Iterable[float]) -> float:
    xs = list(values)
    if not xs:
        raise ValueError("mean of an empty list")
    return statistics.fmean(xs)
