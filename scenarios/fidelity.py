"""Scenario `fidelity`: build the topology, run the fidelity gate (every plan pair's measured RTT
against the plan's, and every link's delay estimated from them: emulation.linkfit), save the
per-pair measurements (fidelity.csv) and the per-link verdict (fidelity_links.csv). The verdict's error is |min RTT - plan|
(emulation.fidelity.error_ms); the exit code is 4 if any pair or link is out of tolerance.
"""
from __future__ import annotations

import time

from harness.rundir import new_run_dir, write_csv, write_manifest


def run(a) -> int:
    """`ocalab run fidelity`: a new run folder with fidelity.csv, summary.csv and manifest.json."""
    from emulation.build import Network, Options
    from emulation.fidelity import as_rows
    from emulation.ledger import install_signal_handlers
    from harness.overrides import parse_overrides
    from topologies.catalog import by_name
    install_signal_handlers()
    plan = by_name(a.name, parse_overrides(a.set))
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
    write_csv(run_dir / "summary.csv", [summary(rows, net.summary()["timings_s"])])
    write_manifest(run_dir, scenario="fidelity", seed=a.seed, plan=plan.name, plan_hash=plan.plan_hash(),
                   network=net.summary(), started=started, ended=time.time())
    from emulation.linkfit import as_rows as link_rows
    from emulation.linkfit import describe
    write_csv(run_dir / "fidelity_links.csv", link_rows(net.link_verdict))
    print(format_table(rows))
    bad = sum(not r["ok"] for r in rows)
    bad_links = [u for u in net.link_verdict if not u.ok]
    print("\n".join(describe(u) for u in bad_links))
    print(f"{len(rows) - bad}/{len(rows)} pairs and {len(net.link_verdict) - len(bad_links)}/"
          f"{len(net.link_verdict)} links (or groups) within tolerance; run folder {run_dir}")
    return 0 if not bad and not bad_links else 4


def summary(rows: list[dict], timings_s: dict) -> dict:
    """Pairs, failed pairs and the absolute RTT error (max, mean) of the gate's rows."""
    from contracts.stats import mean
    from emulation.fidelity import error_ms
    errs = [error_ms(r["expected_rtt_ms"], r["min_rtt_ms"]) for r in rows]  # the verdict's error
    return {"pairs": len(rows), "failed": sum(not r["ok"] for r in rows), "max_err_ms": round(max(errs), 3),
            "mean_err_ms": round(mean(errs), 3), **timings_s}


def format_table(rows: list[dict]) -> str:
    """One line per pair: plan RTT, lowest and median measured RTT, verdict."""
    lines = [f"{'src':>8s} {'dst':>8s} {'classes':24s} {'plan_ms':>8s} {'min_ms':>8s} {'median_ms':>9s} ok"]
    for r in rows:
        lines.append(f"{r['src']:>8s} {r['dst']:>8s} {'+'.join(r['classes']):24s} {r['expected_rtt_ms']:8.2f} "
                     f"{r['min_rtt_ms']:8.2f} {r['median_rtt_ms']:9.2f} {'yes' if r['ok'] else 'NO'}")
    return "\n".join(lines)
