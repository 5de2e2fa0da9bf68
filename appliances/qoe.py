"""Session QoE metrics and the playback-buffer model: pure, no IO, no clocks.

Invariants:
- QoE_lin (Pensieve) = sum(bitrate_Mbps) - 4.3 * rebuffer_s - sum(|bitrate change| Mbps),
  summed over the segments played in order.
- rebuffer_s counts stalls *after* playback started; the wait before the first frame is
  startup_s and is reported separately (it is not a rebuffer).
- The buffer never goes negative; media time only drains it while playing.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

REBUFFER_PENALTY_PER_S = 4.3


@dataclass
class PlaybackBuffer:
    """Playback buffer in media seconds; `drain(dt)` models dt seconds of media time passing.

    Playback starts once `start_threshold_s` of media is buffered. A stall (rebuffer event)
    begins when the buffer empties while playing and ends when a segment arrives.
    """

    start_threshold_s: float
    level_s: float = 0.0
    playing: bool = False
    stalled: bool = False
    rebuffer_s: float = 0.0
    rebuffer_count: int = 0
    played_s: float = 0.0

    def __post_init__(self) -> None:
        if self.start_threshold_s <= 0:
            raise ValueError(f"start_threshold_s must be > 0, got {self.start_threshold_s}")

    def drain(self, dt_s: float) -> float:
        """Advance media time by dt_s; return the stall seconds added by this call."""
        if dt_s < 0:
            raise ValueError(f"dt_s must be >= 0, got {dt_s}")
        if not self.playing:
            return 0.0
        played = min(self.level_s, dt_s)
        self.level_s -= played
        self.played_s += played
        stall = dt_s - played
        if stall > 0:
            if not self.stalled:
                self.stalled = True
                self.rebuffer_count += 1
            self.rebuffer_s += stall
        return stall

    def add_segment(self, duration_s: float) -> bool:
        """Append a downloaded segment; return True if this call started playback."""
        if duration_s <= 0:
            raise ValueError(f"duration_s must be > 0, got {duration_s}")
        self.level_s += duration_s
        self.stalled = False
        if not self.playing and self.level_s >= self.start_threshold_s:
            self.playing = True
            return True
        return False


@dataclass(frozen=True)
class SessionQoe:
    startup_s: float | None
    segments: int
    rebuffer_count: int
    rebuffer_s: float
    mean_kbps: float
    switches: int
    qoe_lin: float
    rebuffer_ratio: float  # rebuffer_s / (played media seconds + rebuffer_s)

    def to_dict(self) -> dict:
        return {"startup_s": self.startup_s, "segments": self.segments,
                "rebuffer_count": self.rebuffer_count, "rebuffer_s": round(self.rebuffer_s, 4),
                "mean_kbps": round(self.mean_kbps, 2), "switches": self.switches,
                "qoe_lin": round(self.qoe_lin, 4), "rebuffer_ratio": round(self.rebuffer_ratio, 5)}


def qoe_lin(bitrates_kbps: Sequence[int], rebuffer_s: float) -> float:
    """Pensieve's linear QoE over a played sequence of bitrates."""
    if rebuffer_s < 0:
        raise ValueError(f"rebuffer_s must be >= 0, got {rebuffer_s}")
    mbps = [k / 1000.0 for k in bitrates_kbps]
    smooth = sum(abs(b - a) for a, b in zip(mbps, mbps[1:]))
    return sum(mbps) - REBUFFER_PENALTY_PER_S * rebuffer_s - smooth


def count_switches(bitrates_kbps: Sequence[int]) -> int:
    return sum(1 for a, b in zip(bitrates_kbps, bitrates_kbps[1:]) if a != b)


def summarize(bitrates_kbps: Sequence[int], segment_s: float, startup_s: float | None,
              rebuffer_count: int, rebuffer_s: float) -> SessionQoe:
    """Session metrics from the played bitrates and the buffer's stall accounting."""
    if segment_s <= 0:
        raise ValueError(f"segment_s must be > 0, got {segment_s}")
    if rebuffer_count < 0 or rebuffer_s < 0:
        raise ValueError("rebuffer count and seconds must be >= 0")
    n = len(bitrates_kbps)
    mean = sum(bitrates_kbps) / n if n else 0.0
    media_s = n * segment_s
    ratio = rebuffer_s / (media_s + rebuffer_s) if media_s + rebuffer_s > 0 else 0.0
    return SessionQoe(startup_s=startup_s, segments=n, rebuffer_count=rebuffer_count,
                      rebuffer_s=rebuffer_s, mean_kbps=mean,
                      switches=count_switches(bitrates_kbps),
                      qoe_lin=qoe_lin(bitrates_kbps, rebuffer_s), rebuffer_ratio=ratio)
