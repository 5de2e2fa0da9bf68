"""Scenario registry for `ocalab run`. Each scenario writes a new run folder with manifest.json."""
from __future__ import annotations

# scenario name -> module with run(a) -> int, and (for report, except fidelity whose summary is
# written by its run) summarize(run_dir) and format_table(rows)
MODULES = {"fidelity": "scenarios.fidelity", "placement": "scenarios.placement", "fill": "scenarios.fill",
           "failover": "scenarios.failover", "flashcrowd": "scenarios.flashcrowd", "chaos": "scenarios.chaos",
           "steering": "scenarios.steering", "bgp": "scenarios.bgp", "realclient": "scenarios.realclient"}


def scenario_module(name: str):
    """The module of a scenario, or a clear error naming the known ones."""
    import importlib
    if name not in MODULES:
        raise SystemExit(f"ocalab: unknown scenario {name!r}; known: {', '.join(sorted(MODULES))}")
    try:
        return importlib.import_module(MODULES[name])
    except ModuleNotFoundError as e:
        if e.name == MODULES[name]:
            raise SystemExit(f"ocalab: scenario {name!r} is not implemented yet") from None
        raise


def run_all(a) -> int:
    """Every scenario in turn, each into its own run folder; non-zero if any failed."""
    failed = []
    names = ["placement", "fill", "failover", "flashcrowd", "steering", "bgp"]
    for i, name in enumerate(names, 1):
        print(f"=== ocalab run {name} ({i} of {len(names)})", flush=True)
        try:
            rc = scenario_module(name).run(a)
        except SystemExit as e:
            print(e)
            rc = 1
        if rc:
            failed.append(name)
    print("all scenarios done" if not failed else f"failed: {', '.join(failed)}")
    return 1 if failed else 0


def run_scenario(a) -> int:
    if a.scenario == "all":
        return run_all(a)
    return scenario_module(a.scenario).run(a)
