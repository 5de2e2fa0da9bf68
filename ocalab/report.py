"""`ocalab report RUN_DIR...`: rebuild tables and figures from saved data (no root, no network)."""
from __future__ import annotations

import json
from pathlib import Path


def report(run_dirs: list[Path]) -> int:
    """Exit code 0, or 1 if a folder is a run that failed (its manifest says why)."""
    code = 0
    for d in run_dirs:
        manifest = d / "manifest.json"
        if not manifest.exists():
            raise SystemExit(f"ocalab report: {d} is not a run folder (no manifest.json)")
        m = json.loads(manifest.read_text())
        scenario = m.get("scenario")
        print(f"== {d}")
        if m.get("status") == "failed":
            print(f"this run failed, nothing to report: {m.get('error')}")
            code = 1
            continue
        if scenario == "fidelity":
            print((d / "summary.csv").read_text())
            continue
        from ocalab.registry import scenario_module
        mod = scenario_module(scenario)
        if "series" in m:
            from harness.repeats import children, summarize_series
            for child in children(d):
                print(f"-- {child.name}")
                print(mod.format_table(mod.summarize(child)))
            print(summarize_series(d, mod.SCENARIO))
            continue
        print(mod.format_table(mod.summarize(d)))
    return code
