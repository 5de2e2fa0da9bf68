"""`ocalab run flashcrowd --quick` end to end on the emulated metro (root): asserts directions on
the saved summary, not timings."""
from __future__ import annotations

import csv
import os

import pytest

pytestmark = [pytest.mark.emulation,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root (namespaces, OVS)")]


def test_flashcrowd_quick(tmp_path):
    from ocalab.cli import main
    assert main(["run", "flashcrowd", "--quick", "--out", str(tmp_path)]) == 0
    (run_dir,) = list(tmp_path.glob("flashcrowd-*"))
    with (run_dir / "summary.csv").open() as f:
        by = {r["arm"]: r for r in csv.DictReader(f)}
    pre, cold = by["prepositioned"], by["cold"]
    for r in (pre, cold):
        assert int(r["spike_sessions"]) > 0 and int(r["spike_ok"]) == int(r["spike_sessions"])
    # pre-positioned: the launch title is served from the OCAs' stores
    assert float(pre["new_title_hit_ratio"]) > float(cold["new_title_hit_ratio"])
    # cold: the spike pulls the title through the upstream links while viewers wait
    # (0.13 measured at quick size; the full-size reference must reach 0.2, results/README)
    assert float(pre["spike_upstream_mb"]) <= 0.5 * float(cold["spike_upstream_mb"])
    assert float(cold["origin_new_title_mb"]) > float(pre["origin_new_title_mb"])
    # cold spike sessions are content misses at the embedded OCA and the IXP site, then stream
    # from the origin across transit (RTT ~100 ms vs ~8 ms): 3.1 vs 1.0 s measured at quick size
    assert 0 < float(pre["startup_p50_s"]) < float(cold["startup_p50_s"])
    assert float(pre["prefill_mb"]) > 0 == float(cold["prefill_mb"])
    assert (run_dir / "links_ts.csv").stat().st_size > 0 and (run_dir / "flashcrowd.png").exists()
