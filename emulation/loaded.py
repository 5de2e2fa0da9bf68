"""Loaded RTT: how far each link class's RTT is from the plan while traffic flows (pure).

The fidelity gate judges an idle network; a scenario's serve phase and a scale step load it.
During them every fidelity pair (emulation.fidelity.pairs) is pinged at a low rate, and each
link class is judged by the MEDIAN of its pairs' samples against the plan: a loaded network
may queue (that is the network), but the emulator's own contention (late relay or switch
wake-ups) moves the median, and this check is what catches it. Tolerance: max(LOADED_ABS_MS,
LOADED_REL x the pair's planned RTT) + 2 x the path's jitter (issue 16: max(1 ms, 5%)).

Samples are (unix_s, rtt_ms or None for a lost probe) from `ping -D -O` logs; a scenario's serve
phase is the union of its arm's session intervals (sessions.csv started_unix..ended_unix), so
the verdict is rebuilt from saved data alone.
"""
from __future__ import annotations

import bisect
import re

from contracts.stats import median

LOADED_ABS_MS, LOADED_REL = 1.0, 0.05

_LINE_RE = re.compile(r"^\[(\d+\.\d+)\] (?:\d+ bytes from .*?icmp_seq=(\d+) .*?time=([\d.]+) ms"
                      r"|no answer yet for icmp_seq=(\d+))")


def loaded_tolerance_ms(expected_rtt_ms: float, jitter_ms: float = 0.0) -> float:
    return max(LOADED_ABS_MS, LOADED_REL * expected_rtt_ms) + 2 * jitter_ms


def parse_ping_log(text: str) -> list[tuple[float, float | None]]:
    """(unix_s, rtt_ms) per probe of `ping -D -O` output, in probe order; rtt None for a probe
    that never got an answer. ping says "no answer yet" when it sends the next probe, so a late
    reply appears twice and counts once, as answered. Other lines (header, statistics, ICMP
    errors) are skipped."""
    answered: dict[int, tuple[float, float]] = {}
    unanswered: dict[int, float] = {}
    for line in text.splitlines():
        m = _LINE_RE.match(line)
        if m and m.group(2):
            answered[int(m.group(2))] = (float(m.group(1)), float(m.group(3)))
        elif m:
            unanswered.setdefault(int(m.group(4)), float(m.group(1)))
    out: dict[int, tuple[float, float | None]] = {**{q: (t, None) for q, t in unanswered.items()}, **answered}
    return [out[q] for q in sorted(out)]


def merge_windows(intervals: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The union of closed intervals as sorted, disjoint intervals (empty ones dropped)."""
    out: list[tuple[float, float]] = []
    for t0, t1 in sorted(i for i in intervals if i[1] >= i[0]):
        if out and t0 <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], t1))
        else:
            out.append((t0, t1))
    return out


def inside(t: float, windows: list[tuple[float, float]]) -> bool:
    """Whether t lies in one of `windows` (sorted and disjoint, as merge_windows returns)."""
    i = bisect.bisect_right(windows, (t, float("inf"))) - 1
    return i >= 0 and windows[i][0] <= t <= windows[i][1]


def rtt_by_class(rows: list[dict]) -> dict[str, dict]:
    """rows: one per measured pair {classes, expected_rtt_ms, jitter_ms, rtts_ms, lost}; per link
    class (the pair's classes joined by '+'): pairs, samples, lost probes, median and worst
    pair's error of the median RTT against the plan, and whether every pair is within its
    loaded tolerance (a pair with no answered probe is not)."""
    out: dict[str, dict] = {}
    for r in rows:
        cls = "+".join(sorted(set(r["classes"])))
        c = out.setdefault(cls, {"pairs": 0, "samples": 0, "errors_ms": [], "ok": True, "lost": 0})
        c["pairs"] += 1
        c["samples"] += len(r["rtts_ms"])
        c["lost"] += r.get("lost", 0)
        if not r["rtts_ms"]:
            c["ok"] = False
            continue
        err = median(r["rtts_ms"]) - r["expected_rtt_ms"]
        c["errors_ms"].append(err)
        c["ok"] &= abs(err) <= loaded_tolerance_ms(r["expected_rtt_ms"], r.get("jitter_ms", 0.0))
    for c in out.values():
        errs = c.pop("errors_ms")
        c["err_p50_ms"] = round(median(errs), 3) if errs else None
        c["err_max_ms"] = round(max(errs, key=abs), 3) if errs else None
    return out


def pair_rows_in(samples: list[dict], windows: list[tuple[float, float]]) -> list[dict]:
    """Per pair (src, dst_addr: two routers may pair on several segments), the rtt_by_class row
    of its samples inside `windows`. `samples`: {unix_s, src, dst, dst_addr, classes ('+'-joined),
    expected_rtt_ms, jitter_ms, rtt_ms (None: lost)}."""
    pairs: dict[tuple[str, str], dict] = {}
    for s in samples:
        if not inside(float(s["unix_s"]), windows):
            continue
        p = pairs.setdefault((s["src"], s["dst_addr"]), {
            "src": s["src"], "dst": s["dst"], "dst_addr": s["dst_addr"], "classes": str(s["classes"]).split("+"),
            "expected_rtt_ms": float(s["expected_rtt_ms"]), "jitter_ms": float(s["jitter_ms"] or 0.0),
            "rtts_ms": [], "lost": 0})
        if s["rtt_ms"] is None:
            p["lost"] += 1
        else:
            p["rtts_ms"].append(float(s["rtt_ms"]))
    return list(pairs.values())
