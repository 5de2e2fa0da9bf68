"""Yesterday's request log as a CSV file: the input of history-based fill planning.

Format (UTF-8, RFC 4180 via the csv module): a header row naming exactly the columns `region`
and `title` (in either order), then one row per yesterday session:
  region,title
  isp1,t0004
  isp1,t0000
  isp2,t0004
Invariants: write_history_csv(path, trace) then read_history_csv(path, ...) gives the same
trace back, in the same order. Reading never half-succeeds: an unknown or missing column, a
row with too many or too few fields, a region not in the deployment, a title not in the
catalog or a file with no session rows raises ValueError naming the file and line.
The file I/O lives here so that appliances.fillplan stays pure.
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Iterable, Iterator

from contracts.deployment import Deployment

COLUMNS = ("region", "title")


def write_history_csv(path: str | Path, trace: Iterable[tuple[str, str]]) -> int:
    """Write the trace as `region,title` rows under a header; return the number of rows."""
    n = 0
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(COLUMNS)
        for region, title in trace:
            w.writerow((region, title))
            n += 1
    return n


def read_history_csv(path: str | Path, deployment: Deployment,
                     titles: Iterable[str]) -> list[tuple[str, str]]:
    """The (region, title) rows of a history CSV, validated against deployment and catalog."""
    regions = {r.name for r in deployment.regions}
    known_titles = set(titles)
    try:
        with open(path, newline="", encoding="utf-8") as f:
            trace = list(_rows(path, f, regions, known_titles))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise ValueError(f"{path}: not a readable CSV ({exc})") from None
    if not trace:
        raise ValueError(f"{path}: no session rows after the header")
    return trace


def _rows(path: str | Path, f, regions: set[str],
          titles: set[str]) -> Iterator[tuple[str, str]]:
    """Yield validated (region, title) rows; ValueError '<path>:<line>: ...' at the first bad."""
    reader = csv.reader(f)
    header = next(reader, None)
    if header is None:
        raise ValueError(f"{path}:1: empty file, expected the header {','.join(COLUMNS)}")
    _check_header(path, header)
    col = {name: header.index(name) for name in COLUMNS}
    for row in reader:
        where = f"{path}:{reader.line_num}"
        if len(row) != len(COLUMNS):
            raise ValueError(f"{where}: expected {len(COLUMNS)} fields, got {len(row)}")
        region, title = row[col["region"]], row[col["title"]]
        if region not in regions:
            raise ValueError(f"{where}: unknown region {region!r} "
                             f"(deployment regions: {sorted(regions)})")
        if title not in titles:
            raise ValueError(f"{where}: unknown title {title!r} (not in the catalog)")
        yield region, title


def _check_header(path: str | Path, header: list[str]) -> None:
    """ValueError naming line 1 unless the header is exactly the columns region and title."""
    unknown = [c for c in header if c not in COLUMNS]
    if unknown:
        raise ValueError(f"{path}:1: unknown column(s) {unknown}, expected {','.join(COLUMNS)}")
    if sorted(header) != sorted(COLUMNS):
        raise ValueError(f"{path}:1: header {header} must name each of "
                         f"{','.join(COLUMNS)} exactly once")
