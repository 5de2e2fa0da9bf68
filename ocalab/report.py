"""`ocalab report RUN_DIR...`: rebuild tables and figures from saved data (no root, no network).

A folder that cannot be rebuilt (not a run folder, a failed run, the tables missing, a summary
that raises) gets one line on stderr saying why, its saved files stay as they were, and the
exit code is 1. `--pack` first replaces the scenario's tables with .csv.gz (to commit them),
then rebuilds from the packed tables, which proves they are complete.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from harness import hostload, loadedrtt
from harness.hostload import warning
from harness.rundir import TABLE_SUFFIXES, missing_tables, pack_tables


class NotRebuilt(Exception):
    """Why a folder cannot be reported, in one line."""


def report(run_dirs: list[Path], pack: bool = False, show_traceback: bool = False) -> int:
    """Exit code 0, or 1 if any folder could not be reported (a failed run, missing data)."""
    code = 0
    for d in run_dirs:
        print(f"== {d}", flush=True)
        try:
            code = max(code, _report_one(d, pack, show_traceback))
        except NotRebuilt as e:
            print(f"ocalab report: {e}", file=sys.stderr, flush=True)
            code = 1
    return code


def _manifest(d: Path) -> dict:
    path = d / "manifest.json"
    if not d.is_dir():
        raise NotRebuilt(f"{d} is not a folder")
    if not path.exists():
        raise NotRebuilt(f"{d} is not a run folder (no manifest.json)")
    try:
        m = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise NotRebuilt(f"{path} cannot be read: {e}") from None
    if not isinstance(m, dict) or not m.get("scenario"):
        raise NotRebuilt(f"{path} names no scenario")
    return m


def _module(d: Path, scenario: str):
    from ocalab.registry import scenario_module
    try:
        return scenario_module(scenario)
    except SystemExit as e:  # an unknown scenario: the registry's message names the known ones
        raise NotRebuilt(f"{d}: {str(e).removeprefix('ocalab: ')}") from None


def _report_one(d: Path, pack: bool, show_traceback: bool) -> int:
    m = _manifest(d)
    if m.get("status") == "failed":
        print(f"this run failed, nothing to report: {m.get('error')}")
        return 1
    if m["scenario"] == "fidelity":  # its summary is the gate's verdict, saved at run time
        if not (d / "summary.csv").exists():
            raise NotRebuilt(f"{d} lacks summary.csv")
        print((d / "summary.csv").read_text())
        return 0
    mod = _module(d, m["scenario"])
    series = "series" in m
    from harness.repeats import children, summarize_series
    folders = children(d) if series else [d]
    if not folders:
        raise NotRebuilt(f"{d} is a series without rep1..repN folders")
    gaps = {f: _check(f, mod.SCENARIO.tables) for f in folders}  # every folder before any write
    for f in folders:
        if pack:
            _pack(f, mod.SCENARIO.tables)
        if series:
            print(f"-- {f.name}")
        print(_rebuild(f, mod, gaps[f], show_traceback), flush=True)
        if (loaded := loadedrtt.annotate(f)) is not None:
            print(loadedrtt.line(loaded), flush=True)
        load = hostload.annotate(f) or _manifest(f).get("host_cpu") or {}
        if (w := warning(load)) is not None:
            print(w, flush=True)
    if series:
        print(summarize_series(d, mod.SCENARIO))
    return 0


def _lacks(d: Path, missing: list[str]) -> NotRebuilt:
    return NotRebuilt(f"{d} lacks {', '.join(missing)}: it cannot be rebuilt (a run folder holds them)")


def _check(d: Path, tables: tuple[str, ...]) -> list[str]:
    """The tables `d` lacks. Raises NotRebuilt when it lacks plan.json or every table (e.g. a
    folder of summaries and figures only); a run folder from before a table existed lacks just
    that one, and its summary may do without it."""
    missing = missing_tables(d, tables)
    if not (d / "plan.json").exists() or (tables and len(missing) == len(tables)):
        raise _lacks(d, (["plan.json"] if not (d / "plan.json").exists() else []) + missing)
    return missing


def _pack(d: Path, tables: tuple[str, ...]) -> None:
    packed = pack_tables(d, tables)
    before, after = sum(p[1] for p in packed), sum(p[2] for p in packed)
    print(f"packed {len(packed)} tables into .csv.gz: {before / 1e6:.2f} MB -> {after / 1e6:.2f} MB")


def _rebuild(d: Path, mod, missing: list[str], show_traceback: bool) -> str:
    """The summary table rebuilt from `d`'s tables. If the summary raises, or comes out empty
    where the saved one had rows, the saved outputs are put back and NotRebuilt says why."""
    saved = {p: p.read_bytes() for p in _outputs(d, mod.SCENARIO.tables)}
    if missing:
        print(f"note: {d} lacks {', '.join(missing)}; the summary is built without them", file=sys.stderr)
    try:
        rows = mod.summarize(d)
        text = mod.format_table(rows)
    except Exception as e:
        _restore(d, saved, mod.SCENARIO.tables)
        if show_traceback:
            raise
        if isinstance(e, FileNotFoundError) and missing:
            raise _lacks(d, missing) from None
        raise NotRebuilt(f"{d}: its summary failed: {type(e).__name__}: {e} "
                         "(`ocalab report --traceback` shows where)") from None
    if not rows and saved.get(d / "summary.csv", b"").strip():
        _restore(d, saved, mod.SCENARIO.tables)
        raise NotRebuilt(f"{d}: the tables gave an empty summary; kept the saved summary.csv and figures")
    return text


def _outputs(d: Path, tables: tuple[str, ...]) -> list[Path]:
    """The files a summary may rewrite: every top-level file but the inputs (tables, plan,
    manifest); all small (summaries, figures, time series)."""
    inputs = {"manifest.json", "plan.json"} | {f"{t}{s}" for t in tables for s in TABLE_SUFFIXES}
    return [p for p in d.iterdir() if p.is_file() and p.name not in inputs]


def _restore(d: Path, saved: dict[Path, bytes], tables: tuple[str, ...]) -> None:
    for p in _outputs(d, tables):
        if p not in saved:  # written by the failed rebuild
            p.unlink()
    for p, data in saved.items():
        p.write_bytes(data)
