"""`ocalab run fill --quick` end to end on the emulated metro (root): asserts directions on the
saved summary, not timings."""
from __future__ import annotations

import csv
import os

import pytest

pytestmark = [pytest.mark.emulation,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root (namespaces, OVS)")]


def test_fill_quick(tmp_path):
    from ocalab.cli import main
    assert main(["run", "fill", "--quick", "--out", str(tmp_path)]) == 0
    (run_dir,) = list(tmp_path.glob("fill-*"))
    with (run_dir / "summary.csv").open() as f:
        rows = list(csv.DictReader(f))
    by = {(r["arm"], float(r["capacity_mb"])): r for r in rows}
    main_cap = min(c for a, c in by if a == "proactive")
    none, rea, pro = by[("none", main_cap)], by[("reactive", main_cap)], by[("proactive", main_cap)]
    for r in rows:
        assert int(r["sessions"]) > 0 and int(r["sessions_ok"]) == int(r["sessions"])
    # proactive push fill happens in the night window only (the window is a hard end); reactive
    # pushes nothing and pulls on demand
    assert float(pro["fill_in_window_mb"]) > 0 and float(pro["fill_outside_mb"]) == 0.0
    assert float(rea["fill_in_window_mb"]) == 0.0 < float(rea["pull_mb"])
    assert float(pro["upstream_night_mb"]) > float(rea["upstream_night_mb"])
    # OCAs take load off the upstream links during the day: fewer upstream bytes per byte the
    # day's viewers received (raw MB are not compared: the adaptive ABR streams higher rungs
    # from nearby OCAs than from the far origin)
    # (proactive vs none is not asserted yet: on this machine the night fill brings ~40% of each
    # plan before the window closes, no title is complete, so steering sends every proactive
    # session to the IXP site over peering; issue 11 keeps this open)
    assert float(rea["upstream_day_share"]) < float(none["upstream_day_share"])
    assert float(pro["hit_ratio"]) > float(rea["hit_ratio"])
    # controller samples and kernel counters agree on upstream bytes (within 15%)
    for r in rows:
        ctl = float(r["upstream_night_mb"]) + float(r["upstream_day_mb"])
        assert ctl == pytest.approx(float(r["upstream_kernel_mb"]), rel=0.15, abs=1.0)
    # a cold LRU cache never beats the compulsory-miss bound of its own request stream, and a
    # smaller one loses at least as much to capacity misses (bound - hit ratio) as a bigger one.
    # (The raw hit ratios are not compared: the adaptive ABR makes each arm's stream different.)
    sweep = sorted((c, float(r["capacity_miss_ratio"])) for (a, c), r in by.items() if a == "reactive")
    assert len(sweep) >= 2 and all(gap >= -0.01 for _, gap in sweep)
    assert sweep[0][1] >= sweep[-1][1] - 0.01
    assert all(0 <= float(r["che_hit_ratio"]) <= 1 for r in rows if r["arm"] == "reactive")
    # the store's own LRU replaying each reactive run's viewer requests per OCA (trace-driven, no
    # network) starts cold, so it cannot beat the compulsory bound of that stream; the emulated
    # figure may (the IXP site's cache also holds what the embedded OCAs pulled through it)
    for (a, c), r in by.items():
        if a == "reactive":
            assert 0 < float(r["lru_replay_hit_ratio"]) <= float(r["compulsory_bound"]) + 1e-9
    assert (run_dir / "links_ts.csv").stat().st_size > 0 and (run_dir / "fill.png").exists()
