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
        print(f"== {d}")
        if scenario == "fidelity":
            print((d / "summary.csv").read_text())
            continue
        from .scenarios import scenario_module
        mod = scenario_module(scenario)
        if "series" in json.loads(manifest.read_text()):
            from .repeats import children, summarize_series
            for child in children(d):
                print(f"-- {child.name}")
                print(mod.format_table(mod.summarize(child)))
            print(summarize_series(d, mod.SCENARIO))
            continue
        print(mod.format_table(mod.summarize(d)))
    return 0
