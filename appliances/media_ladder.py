"""Per-title ladder rule and ffmpeg-free helpers of the media build (pure, no I/O).

Invariants of `select_ladder(points)`:
- points are (kbps, quality_db) probes of one title; the result is a strictly increasing
  subset of their rates, never empty, always holding the lowest probe;
- a probe is kept only if it adds at least `min_gain_db` over the last kept rung, and no rung
  is added once the last kept one reached `enough_db` (more bits buy nothing visible);
- so a simple title (quality saturates early) gets fewer, lower rungs than a complex one.
`split_fragments(data)` splits a fragmented MP4 into (init, [fragment, ...]): init is every
top-level box before the first `moof`, each fragment one `moof` and the boxes up to the next.
"""
from __future__ import annotations

import re
import struct
from collections.abc import Sequence

MIN_GAIN_DB = 1.5  # a rung must add this much PSNR over the one below it
ENOUGH_DB = 42.0  # PSNR above which a title needs no higher rung


def select_ladder(points: Sequence[tuple[int, float]], min_gain_db: float = MIN_GAIN_DB,
                  enough_db: float = ENOUGH_DB) -> tuple[int, ...]:
    """The rates of the rungs worth keeping (see module docstring)."""
    if not points:
        raise ValueError("select_ladder needs at least one (kbps, quality_db) point")
    ordered = sorted((int(k), float(q)) for k, q in points)
    if len({k for k, _ in ordered}) != len(ordered):
        raise ValueError("probe rates must be distinct")
    if min_gain_db <= 0:
        raise ValueError("min_gain_db must be > 0")
    kept = [ordered[0]]
    for kbps, quality in ordered[1:]:
        if kept[-1][1] >= enough_db:
            break
        if quality - kept[-1][1] >= min_gain_db:
            kept.append((kbps, quality))
    return tuple(k for k, _ in kept)


_PSNR_RE = re.compile(r"PSNR .*?average:([0-9.]+|inf)")


def parse_psnr_db(stderr: str) -> float:
    """The average PSNR of ffmpeg's psnr filter summary line ('inf' -> 100 dB)."""
    m = _PSNR_RE.search(stderr)
    if m is None:
        raise ValueError("no PSNR summary in ffmpeg's output")
    return 100.0 if m.group(1) == "inf" else float(m.group(1))


def iter_boxes(data: bytes) -> list[tuple[str, int, int]]:
    """Top-level ISO BMFF boxes as (type, start, end); ValueError on a truncated box."""
    boxes, pos = [], 0
    while pos < len(data):
        if len(data) - pos < 8:
            raise ValueError(f"truncated box header at byte {pos}")
        size, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if size == 1:
            if len(data) - pos < 16:
                raise ValueError(f"truncated large box header at byte {pos}")
            size = struct.unpack(">Q", data[pos + 8:pos + 16])[0]
        elif size == 0:
            size = len(data) - pos
        if size < 8 or pos + size > len(data):
            raise ValueError(f"box {kind!r} at byte {pos} has bad size {size}")
        boxes.append((kind.decode("latin-1"), pos, pos + size))
        pos += size
    return boxes


def split_fragments(data: bytes) -> tuple[bytes, list[bytes]]:
    """(init, fragments) of a fragmented MP4; `mfra` (random access index) is dropped."""
    boxes = [b for b in iter_boxes(data) if b[0] != "mfra"]
    starts = [i for i, b in enumerate(boxes) if b[0] == "moof"]
    if not starts or not any(b[0] == "moov" for b in boxes[:starts[0]]):
        raise ValueError("not a fragmented MP4 (need moov before the first moof)")
    init = data[boxes[0][1]:boxes[starts[0]][1]]
    frags = []
    for n, first in enumerate(starts):
        last = starts[n + 1] - 1 if n + 1 < len(starts) else len(boxes) - 1
        frags.append(data[boxes[first][1]:boxes[last][2]])
    return init, frags


# VP9 levels (level, max luma picture size, max luma sample rate), from the VP9 spec annex A
_VP9_LEVELS = ((10, 36864, 829440), (11, 73728, 2764800), (20, 122880, 4608000),
               (21, 245760, 9216000), (30, 552960, 20736000), (31, 983040, 36864000),
               (40, 2228224, 83558400), (41, 2228224, 160432128))


def vp9_codec_string(width: int, height: int, fps: int) -> str:
    """RFC 6381 codecs value of 8-bit profile-0 VP9 at the lowest level that fits."""
    pic, rate = width * height, width * height * fps
    for level, max_pic, max_rate in _VP9_LEVELS:
        if pic <= max_pic and rate <= max_rate:
            return f"vp09.00.{level}.08"
    raise ValueError(f"{width}x{height}@{fps} is above VP9 level 4.1")
