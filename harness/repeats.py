"""Spread over repeats (`ocalab run X --repeat N`) and the same-seed reproducibility check.

A series folder holds rep1..repN, each a complete run folder with summary.csv. The series'
summary.csv has the columns of one run's summary, each figure the median over the repeats
(`medians`); its spread.csv has one row per (key..., metric): n, mean, sd, min, max of numeric
figures, and for the scenario's seed-stable figures `stable`=1 and `identical`=1 when every
repeat gave the same value. Pure: reads and writes files only, needs no root.
"""
from __future__ import annotations

import csv
import math
import statistics
from pathlib import Path

from harness.rundir import write_csv


def _num(v) -> float | None:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(x) else x


def spread(summaries: list[list[dict]], key: tuple[str, ...], stable: tuple[str, ...]) -> list[dict]:
    """Rows of (key..., metric, n, mean, sd, min, max, stable, identical, values).

    `summaries` holds one summary (a list of rows) per repeat. A metric is `identical` when every
    repeat has the row and all values are equal as text (as written in summary.csv)."""
    n_rep = len(summaries)
    keys, cols = _keys_and_columns(summaries, key)
    out = []
    for k in keys:
        found = _rows_of(summaries, key, k)
        for col in cols:
            vals = [None if r is None else r.get(col) for r in found]
            text = ["" if v is None else str(v) for v in vals]
            nums = [x for x in (_num(v) for v in vals) if x is not None]
            row = {**dict(zip(key, k)), "metric": col, "n": len(nums)}
            if nums:
                row.update(mean=round(statistics.fmean(nums), 4),
                           sd=round(statistics.stdev(nums), 4) if len(nums) > 1 else 0.0,
                           min=min(nums), max=max(nums))
            else:
                row.update(mean="", sd="", min="", max="")
            row["stable"] = int(col in stable)
            row["identical"] = int(len(found) == n_rep and None not in found and len(set(text)) == 1)
            row["values"] = "|".join(text)
            out.append(row)
    return out


def _keys_and_columns(summaries: list[list[dict]], key: tuple[str, ...]) -> tuple[list[tuple], list[str]]:
    """Every key (as text) and every non-key column of the repeats' summaries, in first-seen order."""
    keys: list[tuple] = []
    cols: list[str] = []
    for rows in summaries:
        for r in rows:
            k = tuple(str(r.get(c, "")) for c in key)
            if k not in keys:
                keys.append(k)
            cols += [c for c in r if c not in key and c not in cols]
    return keys, cols


def _rows_of(summaries: list[list[dict]], key: tuple[str, ...], k: tuple) -> list[dict | None]:
    """Per repeat, its row with key `k` (None where it has none)."""
    return [next((r for r in rows if tuple(str(r.get(c, "")) for c in key) == k), None) for rows in summaries]


def medians(summaries: list[list[dict]], key: tuple[str, ...]) -> list[dict]:
    """One row per key, in the columns of one run's summary: a figure numeric in every repeat
    that has a value for it is its median over them; any other value is kept when every repeat
    wrote the same text, else the repeats' texts joined by "|" (as spread's `values`)."""
    keys, cols = _keys_and_columns(summaries, key)
    out = []
    for k in keys:
        found = _rows_of(summaries, key, k)
        row: dict = dict(zip(key, k))
        for col in cols:
            text = ["" if r is None or r.get(col) is None else str(r.get(col)) for r in found]
            present = [t for t in text if t != ""]
            nums = [x for x in (_num(t) for t in present) if x is not None]
            if present and len(nums) == len(present):
                row[col] = statistics.median(nums)
            else:
                row[col] = text[0] if len(set(text)) == 1 else "|".join(text)
        out.append(row)
    return out


def read_summary(run_dir: Path) -> list[dict]:
    path = run_dir / "summary.csv"
    if not path.exists() or not path.read_text().strip():
        return []
    with path.open() as f:
        return list(csv.DictReader(f))


def children(top: Path) -> list[Path]:
    """rep1..repN of a series folder, in order."""
    reps = [d for d in top.iterdir() if d.is_dir() and d.name.startswith("rep") and d.name[3:].isdigit()]
    return sorted(reps, key=lambda d: int(d.name[3:]))


def summarize_series(top: Path, sc, rebuild: bool = False) -> str:
    """Write the series' summary.csv (medians) and spread.csv from its repeats' summaries;
    return a short text report."""
    reps = children(top)
    summaries = [sc.summarize(d) if rebuild else read_summary(d) for d in reps]
    rows = spread(summaries, sc.key, sc.stable)
    write_csv(top / "spread.csv", rows)
    write_csv(top / "summary.csv", medians(summaries, sc.key))
    return format_spread(rows, len(reps))


_FIELDS = ("metric", "n", "mean", "sd", "min", "max", "stable", "identical", "values")


def _who(row: dict) -> str:
    """The key columns of a spread row, as text."""
    return " ".join(str(v) for k, v in row.items() if k not in _FIELDS)


def format_spread(rows: list[dict], n_rep: int) -> str:
    stable = [r for r in rows if r["stable"]]
    same = [r for r in stable if r["identical"]]
    lines = [f"over {n_rep} repeats: {len(same)}/{len(stable)} seed-stable figures identical"]
    for r in stable:
        if not r["identical"]:
            lines.append(f"  differs: {_who(r)} {r['metric']}: {r['values']}")
    timing = [r for r in rows if not r["stable"] and r["n"] > 1 and r["mean"] not in ("", 0)]
    if timing:
        lines.append("timing figures (mean ± sd):")
        for r in timing:
            lines.append(f"  {_who(r):>16s} {r['metric']:>16s} {r['mean']:>10} ± {r['sd']}")
    return "\n".join(lines)
