"""Progress of long commands on a terminal: what runs now, for how long, and about how long is left.

One live line on stderr (rich), refreshed every second: `placement --quick · arm ixp · 1:23
elapsed · about 2:10 left`. The estimate is the wall time of the last successful interactive run
of the same command and size on this machine (DURATIONS, a small JSON file; none the first time).
When stderr is not a terminal (CI, pipes, logs) nothing is drawn and nothing changes: the
commands' own lines stay the record. Phases are announced by `phase(text)`, which scenarios call
where they already print their arm.
"""
from __future__ import annotations

import json
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

DURATIONS = Path(os.environ.get("XDG_CACHE_HOME", str(Path.home() / ".cache"))) / "ocalab" / "durations.json"

_state: dict = {"live": None, "title": "", "phase": "", "t0": 0.0, "estimate_s": None}


def clock(seconds: float) -> str:
    """m:ss (or h:mm:ss) of a non-negative duration (pure)."""
    s = int(max(0.0, seconds))
    h, m = divmod(s // 60, 60)
    return f"{h}:{m:02d}:{s % 60:02d}" if h else f"{m}:{s % 60:02d}"


def status_line(title: str, phase: str, elapsed_s: float, estimate_s: float | None) -> str:
    """The live line (pure): title, phase, elapsed and what the last run says is left."""
    parts = [p for p in (title, phase) if p] + [f"{clock(elapsed_s)} elapsed"]
    if estimate_s is None:
        parts.append("no estimate yet")
    elif elapsed_s <= estimate_s:
        parts.append(f"about {clock(estimate_s - elapsed_s)} left")
    else:
        parts.append(f"{clock(elapsed_s - estimate_s)} longer than last time")
    return " · ".join(parts)


def last_duration_s(key: str, path: Path | None = None) -> float | None:
    path = path or DURATIONS
    try:
        value = json.loads(path.read_text()).get(key)
    except (OSError, ValueError, AttributeError):
        return None  # no history yet, or a file this version cannot read: no estimate
    return float(value) if isinstance(value, (int, float)) else None


def record_duration(key: str, seconds: float, path: Path | None = None) -> None:
    """Remember a successful run's wall time for the next estimate (best effort: a read-only
    home must not fail a run, so an OSError is reported and dropped)."""
    path = path or DURATIONS
    try:
        old = json.loads(path.read_text()) if path.exists() else {}
        if not isinstance(old, dict):
            old = {}
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({**old, key: round(seconds, 1)}, indent=1, sort_keys=True))
    except (OSError, ValueError) as exc:
        print(f"ocalab: could not record the run's duration in {path}: {exc}", file=sys.stderr)


def _render():
    from rich.text import Text
    s = _state
    return Text(status_line(s["title"], s["phase"], time.monotonic() - s["t0"], s["estimate_s"]), style="dim")


@contextmanager
def tracking(title: str, key: str, enabled: bool | None = None) -> Iterator[None]:
    """Draw the live line while the body runs (only on a terminal, or when `enabled`); then
    record the wall time under `key` if the body returned normally."""
    enabled = sys.stderr.isatty() if enabled is None else enabled
    _state.update(title=title, phase="", t0=time.monotonic(), estimate_s=last_duration_s(key))
    live = None
    if enabled:
        from rich.console import Console
        from rich.live import Live
        live = Live(get_renderable=_render, console=Console(stderr=True), refresh_per_second=1, transient=True)
        live.start()
    _state["live"] = live
    try:
        yield
        if enabled:  # only interactive runs learn: tests and CI leave no file behind
            record_duration(key, time.monotonic() - _state["t0"])
    finally:
        if live is not None:
            live.stop()
        _state["live"] = None


def phase(text: str) -> None:
    """What runs now (shown on the live line; a no-op when nothing is drawn)."""
    _state["phase"] = text
