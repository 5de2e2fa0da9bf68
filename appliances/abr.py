"""Adaptive bitrate (ABR) decisions: pure functions of the player's state, no IO.

Invariants:
- Every algorithm returns a rung of the given ladder (kbps), never anything else.
- `ladder_kbps` must be non-empty and strictly increasing.
- BBA (Huang et al., SIGCOMM 2014, "BBA-0"): below the reservoir pick the lowest rung,
  above reservoir + cushion (the upper reservoir) pick the highest, in between map the
  buffer linearly onto [lowest, highest] rate and pick the highest rung <= that rate.
- Throughput rule: harmonic mean of the last `window` throughput samples times a safety
  factor; pick the highest rung <= that estimate; no samples yet -> lowest rung.
- Fixed: always the highest rung <= `kbps` (default 1750), whatever the state. Not adaptive:
  it makes the requested objects a function of the seeded workload alone, so byte counts and
  hit ratios repeat exactly across runs (the reproducibility mode of `ocalab run --abr fixed`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, Sequence


@dataclass(frozen=True)
class AbrInput:
    """What the player knows when it picks the next segment's rung."""

    buffer_s: float
    ladder_kbps: tuple[int, ...]
    throughput_kbps: tuple[float, ...] = ()  # oldest first; one sample per downloaded segment
    last_kbps: int | None = None

    def __post_init__(self) -> None:
        ladder = tuple(int(k) for k in self.ladder_kbps)
        object.__setattr__(self, "ladder_kbps", ladder)
        if not ladder:
            raise ValueError("ladder_kbps must not be empty")
        if list(ladder) != sorted(set(ladder)):
            raise ValueError(f"ladder_kbps must be strictly increasing, got {ladder}")
        if self.buffer_s < 0:
            raise ValueError(f"buffer_s must be >= 0, got {self.buffer_s}")
        if any(t < 0 for t in self.throughput_kbps):
            raise ValueError("throughput samples must be >= 0")


class Abr(Protocol):
    name: str

    def choose(self, state: AbrInput) -> int:
        """Return the rung (kbps) for the next segment."""


def highest_at_most(ladder_kbps: Sequence[int], rate_kbps: float) -> int:
    """Highest rung <= rate_kbps, or the lowest rung if none is."""
    best = ladder_kbps[0]
    for k in ladder_kbps:
        if k <= rate_kbps:
            best = k
    return best


@dataclass(frozen=True)
class BBA:
    """Buffer-based ABR (BBA-0) with a reservoir and a linear cushion."""

    reservoir_s: float = 5.0
    cushion_s: float = 10.0
    name: str = field(default="bba", init=False)

    def __post_init__(self) -> None:
        if self.reservoir_s < 0 or self.cushion_s <= 0:
            raise ValueError(f"BBA needs reservoir_s >= 0 and cushion_s > 0, "
                             f"got {self.reservoir_s}, {self.cushion_s}")

    @property
    def upper_s(self) -> float:
        return self.reservoir_s + self.cushion_s

    def rate_map_kbps(self, buffer_s: float, ladder_kbps: Sequence[int]) -> float:
        """f(B): the target rate for buffer level B (piecewise linear, clamped)."""
        lo, hi = ladder_kbps[0], ladder_kbps[-1]
        if buffer_s <= self.reservoir_s:
            return float(lo)
        if buffer_s >= self.upper_s:
            return float(hi)
        frac = (buffer_s - self.reservoir_s) / self.cushion_s
        return lo + frac * (hi - lo)

    def choose(self, state: AbrInput) -> int:
        return highest_at_most(state.ladder_kbps,
                               self.rate_map_kbps(state.buffer_s, state.ladder_kbps))


def harmonic_mean(values: Sequence[float]) -> float:
    """Harmonic mean; 0 if any value is 0; raises on an empty sequence."""
    if not values:
        raise ValueError("harmonic mean of no values")
    if any(v <= 0 for v in values):
        return 0.0
    return len(values) / sum(1.0 / v for v in values)


@dataclass(frozen=True)
class ThroughputAbr:
    """Rate-based ABR: safety * harmonic mean of the last `window` samples."""

    window: int = 5
    safety: float = 0.9
    name: str = field(default="tput", init=False)

    def __post_init__(self) -> None:
        if self.window < 1 or not 0 < self.safety <= 1:
            raise ValueError(f"ThroughputAbr needs window >= 1 and 0 < safety <= 1, "
                             f"got {self.window}, {self.safety}")

    def estimate_kbps(self, samples: Sequence[float]) -> float | None:
        recent = list(samples)[-self.window:]
        if not recent:
            return None
        return self.safety * harmonic_mean(recent)

    def choose(self, state: AbrInput) -> int:
        est = self.estimate_kbps(state.throughput_kbps)
        if est is None:
            return state.ladder_kbps[0]
        return highest_at_most(state.ladder_kbps, est)


@dataclass(frozen=True)
class FixedAbr:
    """The highest rung <= kbps on every segment (no adaptation)."""

    kbps: float = 1750.0
    name: str = field(default="fixed", init=False)

    def choose(self, state: AbrInput) -> int:
        return highest_at_most(state.ladder_kbps, self.kbps)


ALGORITHMS = ("bba", "tput", "fixed")


def make_abr(name: str) -> Abr:
    """Build an ABR by name: 'bba' (reservoir 5 s, cushion 10 s), 'tput' (HM of 5) or 'fixed' (1750)."""
    if name == "bba":
        return BBA()
    if name == "tput":
        return ThroughputAbr()
    if name == "fixed":
        return FixedAbr()
    raise ValueError(f"unknown ABR {name!r}; choose one of {', '.join(ALGORITHMS)}")
