"""Pure player decisions besides ABR: which ranked location to use next (fallback / re-probe).

Invariants of LocationCursor over a ranked list of n locations (0 = best):
- `pick(now)` returns `current`, except when a re-probe is due: after a fallback, once
  `reprobe_segments` segments were fetched below the best location or `reprobe_s` seconds
  passed, it returns the top-ranked location not content-missed for one attempt.
- `failed(i, now)` on the current location moves current to the next location not
  content-missed (exhausted when >= n), unless
  the location has retries left (`retries[i]`, default 0): then current stays and one retry is
  used up. A failed re-probe leaves current where it was and restarts the re-probe clock.
- `succeeded(i)` with i < current moves current up to i (the better location recovered); any
  success gives the current location its retries back.
- `content_missed(i)`: location i lacks the content and the serve phase will not fill it, so
  `pick` never returns i again (no retries, no re-probe); current moves past every such
  location at once, and a re-probe goes to the best location not content-missed.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class LocationCursor:
    n_locations: int
    reprobe_segments: int = 4
    reprobe_s: float = 10.0
    retries: tuple[int, ...] = ()  # per location; missing entries are 0
    current: int = 0
    _since_segments: int = 0
    _since_unix: float = 0.0
    _retried: int = 0  # retries of `current` used since its last success
    _missed: set[int] = field(default_factory=set)  # content-missed locations: never picked again

    def __post_init__(self) -> None:
        if self.n_locations < 1:
            raise ValueError("a cursor needs at least one location")
        if self.reprobe_segments < 1 or self.reprobe_s <= 0:
            raise ValueError("reprobe_segments must be >= 1 and reprobe_s > 0")
        if len(self.retries) > self.n_locations or any(r < 0 for r in self.retries):
            raise ValueError("retries: at most one non-negative count per location")

    @property
    def retried(self) -> int:
        """Retries of `current` used since its last success (0: none)."""
        return self._retried

    @property
    def exhausted(self) -> bool:
        return self.current >= self.n_locations

    def _best(self) -> int:
        """The top-ranked location not content-missed (n_locations when there is none)."""
        return self._next_open(0)

    def _next_open(self, index: int) -> int:
        while index in self._missed:
            index += 1
        return index

    def missed_above(self, index: int) -> bool:
        """True when every location ranked above `index` was content-missed."""
        return all(j in self._missed for j in range(index))

    def reprobe_due(self, now: float) -> bool:
        return (self._best() < self.current < self.n_locations
                and (self._since_segments >= self.reprobe_segments
                     or now - self._since_unix >= self.reprobe_s))

    def pick(self, now: float) -> int:
        if self.exhausted:
            raise IndexError("every location failed; reload steering")
        return self._best() if self.reprobe_due(now) else self.current

    def failed(self, index: int, now: float) -> None:
        if index == self.current:
            allowed = self.retries[index] if index < len(self.retries) else 0
            if self._retried < allowed:
                self._retried += 1
            else:
                self.current, self._retried = self._next_open(self.current + 1), 0
        self._since_segments = 0
        self._since_unix = now

    def succeeded(self, index: int) -> None:
        if index < self.current:
            self.current = index
        self._retried = 0
        self._since_segments += 1

    def content_missed(self, index: int) -> None:
        self._missed.add(index)
        if index == self.current:  # the path works, the content is elsewhere: move on at once
            self.current, self._retried = self._next_open(index), 0
