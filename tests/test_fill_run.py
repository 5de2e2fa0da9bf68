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
    by = {(r["arm"], r["capacity"]): r for r in rows}
    main_cap = next(c for a, c in by if a == "proactive")
    none, rea, pro = by[("none", main_cap)], by[("reactive", main_cap)], by[("proactive", main_cap)]
    for r in rows:
        assert int(r["sessions"]) > 0 and int(r["sessions_ok"]) == int(r["sessions"])
    # tonight's push (today's release first) runs in the night window only; reactive pushes
    # nothing and pulls what it lacks through from the IXP site by day
    fill_in, fill_out = float(pro["fill_in_window_mb"]), float(pro["fill_outside_mb"])
    assert fill_in > 0 and fill_out <= 0.05 * (fill_in + fill_out)
    assert float(rea["fill_in_window_mb"]) == 0.0 < float(rea["pull_mb"])
    # Open Connect's claim: at the evening peak the upstream links carry least with proactive
    # fill, more with pull-through caches, most with no OCAs
    peak = {a: float(r["upstream_peak_mean_mbps"]) for a, r in (("none", none), ("reactive", rea),
                                                                  ("proactive", pro))}
    assert peak["proactive"] < peak["reactive"] < peak["none"], peak
    assert float(pro["hit_ratio"]) > float(rea["hit_ratio"])
    # controller samples and kernel counters agree on upstream bytes (within 15%)
    for r in rows:
        ctl = float(r["upstream_night_mb"]) + float(r["upstream_day_mb"])
        assert ctl == pytest.approx(float(r["upstream_kernel_mb"]), rel=0.15, abs=1.0)
    # capacity binds: a smaller pull-through cache hits less, in the emulation and in the
    # trace-driven replay of its own request stream through the store's LRU (same midnight
    # state); the two agree but for requests that met a pull in flight
    small = [r for (a, c), r in by.items() if a == "reactive" and c != main_cap]
    assert small and all(float(r["capacity_mb"]) < float(rea["capacity_mb"]) for r in small)
    for r in small:
        assert float(r["hit_ratio"]) < float(rea["hit_ratio"])
        assert float(r["lru_replay_hit_ratio"]) < float(rea["lru_replay_hit_ratio"])
    for r in small + [rea]:
        assert float(r["hit_ratio"]) == pytest.approx(float(r["lru_replay_hit_ratio"]), abs=0.1)
    assert all(0 < float(r["che_hit_ratio"]) <= 1 for r in rows if r["arm"] == "reactive")
    # what each OCA held at midnight is on record (the manifest's fill_mode says how)
    with (run_dir / "ocas.csv").open() as f:
        staged = {(r["arm"], r["oca"]): r["staged"] for r in csv.DictReader(f) if r["capacity"] == main_cap}
    assert staged[("reactive", "i1oca1")] == "staged-lru" and staged[("proactive", "i1oca1")] == "staged"
    assert (run_dir / "links_ts.csv").stat().st_size > 0 and (run_dir / "fill.png").exists()
