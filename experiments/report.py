"""`ocalab report RUN_DIR...`: rebuild tables and figures from saved data (no root, no network)."""
from __future__ import annotations

import json
from pathlib import Path


def report(run_dirs: list[Path]) -> int:
    for d in run_dirs:
        manifest = d / "manifest.json"
        if not manifest.exists():
            raise SystemExit(f"ocalab report: {d} is not a run folder (no manifest.json)")
        scenario = json.loads(manifest.read_text()).get("scenario")
        if scenario == "placement":
            from .placement import format_table, summarize
            print(f"== {d}")
            print(format_table(summarize(d)))
        elif scenario == "fidelity":
            print(f"== {d}\n" + (d / "summary.csv").read_text())
        else:
            raise SystemExit(f"ocalab report: no report for scenario {scenario!r} in {d}")
    return 0
