"""Pure (sans-IO) core of the userspace link-emulation relay.

One `DelayLine` models one direction of an emulated link: constant delay plus
jitter, Bernoulli loss from a seeded RNG and an optional drop-tail queue limit
in packets.  It never reads a clock or touches a socket: callers pass `now_ns`
(e.g. `time.monotonic_ns()`) and frames (any object; `bytes` or an `int` length).

Invariants:
- FIFO: frames leave in arrival order.  A frame's due time is
  `max(arrival + delay + jitter_sample, previous due)` with the jittered delay
  clipped at 0, so due times never decrease.
- Loss is decided before the queue limit; a lost frame never occupies the queue.
- Run-time faults (`impair`): while down every pushed frame is dropped (dropped_down); else
  injected loss (its own RNG, so the plan's loss draws stay the same) comes after the plan's
  loss (dropped_injected). Extra delay applies to frames pushed afterwards; queued frames keep
  their due time (FIFO still holds: a shorter delay cannot overtake queued frames).
- `forwarded + dropped_loss + dropped_injected + dropped_down + dropped_queue + queued ==
  pushed` (frames and bytes).
"""

from __future__ import annotations

import math
import random
from collections import deque
from dataclasses import dataclass

JITTER_DISTS = ("uniform", "normal")
MAX_DELAY_MS = 60_000.0


@dataclass(frozen=True)
class LineParams:
    """Validated parameters of one direction of an emulated link."""

    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    loss_pct: float = 0.0
    queue_pkts: int | None = None
    jitter_dist: str = "uniform"

    def __post_init__(self) -> None:
        validate_params(self.delay_ms, self.jitter_ms, self.loss_pct,
                        self.queue_pkts, self.jitter_dist)


def _check_number(name: str, value: object, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if not math.isfinite(value) or not low <= value <= high:
        raise ValueError(f"{name} must be within [{low}, {high}], got {value!r}")
    return float(value)


def validate_params(delay_ms: float, jitter_ms: float, loss_pct: float,
                    queue_pkts: int | None, jitter_dist: str = "uniform") -> None:
    """Raise ValueError naming the first bad parameter."""
    _check_number("delay_ms", delay_ms, 0.0, MAX_DELAY_MS)
    _check_number("jitter_ms", jitter_ms, 0.0, MAX_DELAY_MS)
    _check_number("loss_pct", loss_pct, 0.0, 100.0)
    if queue_pkts is not None:
        if isinstance(queue_pkts, bool) or not isinstance(queue_pkts, int) or queue_pkts < 1:
            raise ValueError(f"queue_pkts must be a positive integer or None, got {queue_pkts!r}")
    if jitter_dist not in JITTER_DISTS:
        raise ValueError(f"jitter_dist must be one of {JITTER_DISTS}, got {jitter_dist!r}")


def _frame_len(frame: object) -> int:
    return frame if isinstance(frame, int) else len(frame)  # type: ignore[arg-type]


class DelayLine:
    """One direction of a delayed, lossy, FIFO link (see module docstring)."""

    __slots__ = ("params", "_delay_ns", "_jitter_ns", "_loss_p", "_limit", "_rng",
                 "_normal", "_queue", "_last_due_ns", "frames_in", "bytes_in",
                 "frames_out", "bytes_out", "frames_lost", "bytes_lost",
                 "frames_qdrop", "bytes_qdrop", "max_queue_pkts", "_inj_loss_p", "_inj_rng",
                 "_down", "frames_injected", "bytes_injected", "frames_down", "bytes_down")

    def __init__(self, params: LineParams, seed: int | str = 0) -> None:
        self.params = params
        self._delay_ns = round(params.delay_ms * 1e6)
        self._jitter_ns = round(params.jitter_ms * 1e6)
        self._loss_p = params.loss_pct / 100.0
        self._limit = params.queue_pkts
        self._rng = random.Random(str(seed))
        self._normal = params.jitter_dist == "normal"
        self._queue: deque = deque()  # (due_ns, frame), due_ns non-decreasing
        self._last_due_ns = -(1 << 62)
        self.frames_in = self.bytes_in = 0
        self.frames_out = self.bytes_out = 0
        self.frames_lost = self.bytes_lost = 0
        self.frames_qdrop = self.bytes_qdrop = 0
        self.max_queue_pkts = 0
        self._inj_loss_p = 0.0
        self._inj_rng = random.Random(f"{seed}:injected")
        self._down = False
        self.frames_injected = self.bytes_injected = 0
        self.frames_down = self.bytes_down = 0

    def __len__(self) -> int:
        return len(self._queue)

    def _due_ns(self, now_ns: int) -> int:
        delay_ns = self._delay_ns
        if self._jitter_ns:
            if self._normal:
                delay_ns += round(self._rng.gauss(0.0, self._jitter_ns))
            else:
                delay_ns += round(self._rng.uniform(-self._jitter_ns, self._jitter_ns))
            if delay_ns < 0:
                delay_ns = 0
        due_ns = now_ns + delay_ns
        if due_ns < self._last_due_ns:
            due_ns = self._last_due_ns
        self._last_due_ns = due_ns
        return due_ns

    def impair(self, extra_delay_ms: float, loss_pct: float, down: bool) -> None:
        """Set the run-time faults (replacing earlier ones; zeros and False clear them)."""
        _check_number("extra_delay_ms", extra_delay_ms, 0.0, MAX_DELAY_MS)
        _check_number("loss_pct", loss_pct, 0.0, 100.0)
        self._delay_ns = round((self.params.delay_ms + extra_delay_ms) * 1e6)
        self._inj_loss_p = loss_pct / 100.0
        self._down = bool(down)

    def push(self, frame: object, now_ns: int) -> bool:
        """Offer a frame that arrived at now_ns; False if dropped (down, loss or queue)."""
        size = _frame_len(frame)
        self.frames_in += 1
        self.bytes_in += size
        if self._down:
            self.frames_down += 1
            self.bytes_down += size
            return False
        if self._loss_p and self._rng.random() < self._loss_p:
            self.frames_lost += 1
            self.bytes_lost += size
            return False
        if self._inj_loss_p and self._inj_rng.random() < self._inj_loss_p:
            self.frames_injected += 1
            self.bytes_injected += size
            return False
        queue = self._queue
        if self._limit is not None and len(queue) >= self._limit:
            self.frames_qdrop += 1
            self.bytes_qdrop += size
            return False
        queue.append((self._due_ns(now_ns), frame))
        if len(queue) > self.max_queue_pkts:
            self.max_queue_pkts = len(queue)
        return True

    def push_many(self, frames: list, now_ns: int) -> None:
        """Offer several frames of the same arrival time (the relay's fast path)."""
        if self._loss_p or self._jitter_ns or self._limit is not None or self._inj_loss_p \
                or self._down:
            push = self.push
            for frame in frames:
                push(frame, now_ns)
            return
        due_ns = now_ns + self._delay_ns
        if due_ns < self._last_due_ns:
            due_ns = self._last_due_ns
        self._last_due_ns = due_ns
        append = self._queue.append
        nbytes = 0
        for frame in frames:
            append((due_ns, frame))
            nbytes += _frame_len(frame)
        self.frames_in += len(frames)
        self.bytes_in += nbytes
        if len(self._queue) > self.max_queue_pkts:
            self.max_queue_pkts = len(self._queue)

    def next_due_ns(self) -> int | None:
        """Due time of the oldest queued frame, or None when empty."""
        return self._queue[0][0] if self._queue else None

    def pop_due(self, now_ns: int) -> list:
        """Remove and return, in FIFO order, every frame due at or before now_ns."""
        queue = self._queue
        out: list = []
        if not queue or queue[0][0] > now_ns:
            return out
        popleft = queue.popleft
        append = out.append
        nbytes = 0
        while queue and queue[0][0] <= now_ns:
            frame = popleft()[1]
            append(frame)
            nbytes += _frame_len(frame)
        self.frames_out += len(out)
        self.bytes_out += nbytes
        return out

    def stats(self) -> dict:
        """Counters as a JSON-ready dict."""
        return {
            "frames_in": self.frames_in, "bytes_in": self.bytes_in,
            "frames_forwarded": self.frames_out, "bytes_forwarded": self.bytes_out,
            "frames_dropped_loss": self.frames_lost, "bytes_dropped_loss": self.bytes_lost,
            "frames_dropped_queue": self.frames_qdrop, "bytes_dropped_queue": self.bytes_qdrop,
            "frames_dropped_injected": self.frames_injected,
            "bytes_dropped_injected": self.bytes_injected,
            "frames_dropped_down": self.frames_down, "bytes_dropped_down": self.bytes_down,
            "frames_queued": len(self._queue), "max_queue_pkts": self.max_queue_pkts,
        }
