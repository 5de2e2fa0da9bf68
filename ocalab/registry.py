"""Scenario registry for `ocalab run`. Each scenario writes a new run folder with manifest.json."""
from __future__ import annotations

import time

from harness.rundir import new_run_dir, write_csv, write_manifest


def run_fidelity(a) -> int:
    """Build the topology, run the fidelity gate, save the per-pair measurements."""
    from emulation.build import Network, Options
    from topologies.catalog import by_name
    from emulation.fidelity import as_rows
    from emulation.ledger import install_signal_handlers
    from ocalab.cli import _overrides
    install_signal_handlers()
    plan = by_name(a.name, _overrides(a.set))
    run_dir = new_run_dir("fidelity", a.out)
    started = time.time()
    net = Network(plan, Options(link_backend=a.link_backend, datapath=a.datapath, verify=False,
                                work_dir=run_dir / "logs", label="fidelity"))
    with net:
        try:
            results = net.verify(raise_on_fail=False)
        finally:
            (run_dir / "plan.json").write_text(plan.to_json())
    rows = as_rows(results)
    write_csv(run_dir / "fidelity.csv", rows)
    bad = [r for r in rows if not r["ok"]]
    errs = [abs(r["low_rtt_ms"] - r["expected_rtt_ms"]) for r in rows]  # the verdict's statistic
    summary = [{"pairs": len(rows), "failed": len(bad), "max_abs_err_ms": round(max(errs), 3),
                "mean_abs_err_ms": round(sum(errs) / len(errs), 3), **net.summary()["timings_s"]}]
    write_csv(run_dir / "summary.csv", summary)
    write_manifest(run_dir, scenario="fidelity", seed=a.seed, plan=plan.name, plan_hash=plan.plan_hash(),
                   network=net.summary(), started=started, ended=time.time())
    print(f"{'src':>8s} {'dst':>8s} {'classes':24s} {'plan_ms':>8s} {'low_ms':>8s} {'median_ms':>9s} ok")
    for r in rows:
        print(f"{r['src']:>8s} {r['dst']:>8s} {'+'.join(r['classes']):24s} {r['expected_rtt_ms']:8.2f} "
              f"{r['low_rtt_ms']:8.2f} {r['median_rtt_ms']:9.2f} {'yes' if r['ok'] else 'NO'}")
    print(f"{len(rows) - len(bad)}/{len(rows)} pairs within tolerance; run folder {run_dir}")
    return 0 if not bad else 4


# scenario name -> module with run(a) -> int, and (for report) summarize(run_dir) and format_table(rows)
MODULES = {"placement": "scenarios.placement", "fill": "scenarios.fill",
           "failover": "scenarios.failover", "flashcrowd": "scenarios.flashcrowd",
           "steering": "scenarios.steering"}
SCENARIOS = {"fidelity": run_fidelity}


def scenario_module(name: str):
    """The module of a scenario, or a clear error naming the known ones."""
    import importlib
    if name not in MODULES:
        raise SystemExit(f"ocalab: unknown scenario {name!r}; known: {', '.join(sorted(set(MODULES) | set(SCENARIOS)))}")
    try:
        return importlib.import_module(MODULES[name])
    except ModuleNotFoundError as e:
        if e.name == MODULES[name]:
            raise SystemExit(f"ocalab: scenario {name!r} is not implemented yet") from None
        raise


def run_all(a) -> int:
    """Every scenario in turn, each into its own run folder; non-zero if any failed."""
    failed = []
    for name in ["placement", "fill", "failover", "flashcrowd", "steering"]:
        print(f"=== ocalab run {name}", flush=True)
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
    if a.scenario in SCENARIOS:
        return SCENARIOS[a.scenario](a)
    return scenario_module(a.scenario).run(a)
