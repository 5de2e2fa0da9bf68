"""Run folders: a new directory per run with manifest.json (provenance); never overwritten."""
from __future__ import annotations

import csv
import json
import os
import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def git_info() -> dict:
    def git(*args: str) -> str:
        r = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True)
        return r.stdout.strip() if r.returncode == 0 else ""
    return {"commit": git("rev-parse", "HEAD") or None,
            "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}


def versions() -> dict:
    out = {"python": platform.python_version(), "kernel": platform.release()}
    for pkg in ("os-ken", "aiohttp", "matplotlib", "ocalab"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    try:
        import mininet.net
        out["mininet"] = getattr(mininet.net, "VERSION", None)
    except ImportError:
        out["mininet"] = None
    return out


def new_run_dir(scenario: str, out: Path | None = None) -> Path:
    """Create a fresh run directory; an existing one is never reused."""
    base = out or (REPO / "runs")
    base.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    for i in range(1000):
        d = base / f"{scenario}-{stamp}" if i == 0 else base / f"{scenario}-{stamp}-{i}"
        try:
            d.mkdir()
            (d / "logs").mkdir()
            return d
        except FileExistsError:
            continue
    raise RuntimeError(f"could not create a new run directory under {base}")


def write_manifest(run_dir: Path, **fields) -> Path:
    data = {"format": "ocalab-run/1", "argv": sys.argv, "cwd": os.getcwd(), "git": git_info(),
            "versions": versions(), "host": platform.node(), **fields}
    path = run_dir / "manifest.json"
    path.write_text(json.dumps(data, indent=1, sort_keys=True, default=str))
    return path


def write_csv(path: Path, rows: list[dict]) -> Path:
    if not rows:
        path.write_text("")
        return path
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    return path


# A table `<name>` is saved as <name>.csv by a run, or as <name>.csv.gz once packed for committing.
TABLE_SUFFIXES = (".csv", ".csv.gz")


def table_path(run_dir: Path, name: str) -> Path:
    """The file that holds table `name` (no suffix): <name>.csv, else <name>.csv.gz, else the
    absent <name>.csv (so `.exists()` says whether the table is there). pandas' read_csv reads both."""
    for suffix in TABLE_SUFFIXES:
        path = run_dir / f"{name}{suffix}"
        if path.exists():
            return path
    return run_dir / f"{name}.csv"


def missing_tables(run_dir: Path, names) -> list[str]:
    """`<name>.csv` for every table of `names` that run_dir holds in neither form."""
    return [f"{n}.csv" for n in names if not table_path(run_dir, n).exists()]


def pack_tables(run_dir: Path, names) -> list[tuple[str, int, int]]:
    """Replace each non-empty <name>.csv of `names` with <name>.csv.gz; returns (name, bytes
    before, bytes after) of each table packed. Empty tables stay empty .csv files, which every reader
    takes as "no rows" (a gzip of nothing is not empty). The gzip has no name and no time in
    it, so packing the same table twice gives the same bytes (a clean git diff)."""
    import gzip
    packed = []
    for name in names:
        src = run_dir / f"{name}.csv"
        if not src.exists() or src.stat().st_size == 0:
            continue
        dst = run_dir / f"{name}.csv.gz"
        tmp = dst.with_name(dst.name + ".tmp")
        with src.open("rb") as f, tmp.open("wb") as raw, \
                gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as z:
            while chunk := f.read(1 << 20):
                z.write(chunk)
        os.replace(tmp, dst)
        packed.append((name, src.stat().st_size, dst.stat().st_size))
        src.unlink()
    return packed


def add_arm_columns(summary: Path, arms: dict[str, dict], columns: tuple[str, ...]) -> None:
    """summary.csv with `columns` filled from `arms[row's arm]` (blank for an arm without them).
    The text of the other columns is kept as written; a summary without an arm column, or a
    missing or empty one, is left alone. Re-running replaces the columns' values, never adds
    them twice."""
    summary = Path(summary)
    if not summary.exists() or not summary.stat().st_size:
        return
    with summary.open(newline="") as f:
        reader = csv.DictReader(f)
        fields, rows = list(reader.fieldnames or []), list(reader)
    if "arm" not in fields:
        return
    extra = [k for k in columns if k not in fields]
    for r in rows:
        r.update({k: arms.get(r["arm"], {}).get(k, "") for k in columns})
    with summary.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields + extra)
        w.writeheader()
        w.writerows(rows)
