"""`ocalab bench links|oca|scale`: benchmarks that print measured figures and save JSON.

Figures go to results/bench/<what>-<timestamp>.json (never overwritten); nothing here asserts
a speed: targets are printed beside the measurements for the reader to judge.
"""
from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path

from harness.rundir import REPO, git_info, versions

TARGETS = {"links": {"rtt_err_p50_idle_ms": 0.5, "rtt_err_p50_loaded_ms": 1.0,
                     "chain4_mbps": 500, "metro_build_s": 15, "metro_teardown_s": 5}}


def bench_metro_build(repeat: int = 2) -> dict:
    """Build and tear down metro (no fidelity gate) `repeat` times; seconds per phase."""
    from emulation.build import Network, Options
    from topologies.catalog import metro
    builds, teardowns = [], []
    for _ in range(repeat):
        net = Network(metro(), Options(verify=False, label="bench",
                                       controller=_controller_available()))
        net.start()
        net.stop()
        builds.append(net.timings_s["build"])
        teardowns.append(net.timings_s["teardown"])
    return {"metro_build_s": round(statistics.median(builds), 2),
            "metro_teardown_s": round(statistics.median(teardowns), 2),
            "builds_s": [round(x, 2) for x in builds], "teardowns_s": [round(x, 2) for x in teardowns],
            "relays": net.summary()["relays"], "link_backend": net.link_backend,
            "switch_datapath": net.datapath}


def _controller_available() -> bool:
    return (REPO / "controller" / "launcher.py").exists()


def run_bench(a) -> int:
    out_dir = Path(a.out or REPO / "results" / "bench")
    out_dir.mkdir(parents=True, exist_ok=True)
    result: dict = {"bench": a.what, "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
                    "git": git_info(), "versions": versions(), "quick": a.quick}
    if a.what == "links":
        if os.geteuid() != 0:
            raise SystemExit("ocalab bench links: needs root")
        from bench.links import run_bench_relay
        result["links"] = run_bench_relay(out_dir, quick=a.quick)
        result["metro"] = bench_metro_build(repeat=1 if a.quick else 3)
        result["targets"] = TARGETS["links"]
        print(f"metro build {result['metro']['metro_build_s']} s (target <= 15), teardown "
              f"{result['metro']['metro_teardown_s']} s (target <= 5), {result['metro']['relays']} relays, "
              f"backend {result['metro']['link_backend']}, datapath {result['metro']['switch_datapath']}")
    elif a.what == "oca":
        from bench.oca import run_bench_oca
        result["oca"] = run_bench_oca(out_dir, quick=a.quick)
    elif a.what == "reliability":
        from bench.reliability import run_reliability
        result["reliability"] = run_reliability(out_dir, quick=a.quick)
    else:
        raise SystemExit(f"ocalab bench {a.what}: not implemented yet (see the open issues)")
    path = out_dir / f"{a.what}-{time.strftime('%Y%m%dT%H%M%S')}.json"
    path.write_text(json.dumps(result, indent=1, default=str))
    print(f"wrote {path}")
    failed = a.what == "reliability" and not result["reliability"].get("ok", False)
    if failed:
        print("ocalab bench reliability: some pass/fail checks FAILED; see the report")
    return 1 if failed else 0
