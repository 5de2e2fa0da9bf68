"""`ocalab run steering --quick` end to end on the emulated metro (root): asserts directions and
policy invariants on the saved tables, not timings."""
from __future__ import annotations

import csv
import os

import pytest

pytestmark = [pytest.mark.emulation,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root (namespaces, OVS)")]


def _rows(path):
    if not path.stat().st_size:
        return []
    with path.open() as f:
        return list(csv.DictReader(f))


def test_steering_quick(tmp_path):
    from ocalab.cli import main
    assert main(["run", "steering", "--quick", "--out", str(tmp_path)]) == 0
    (run_dir,) = list(tmp_path.glob("steering-*"))
    by = {r["arm"]: r for r in _rows(run_dir / "summary.csv")}
    assert set(by) == {"nearest", "load_aware"}
    for r in by.values():
        assert int(r["sessions"]) > 0 and int(r["sessions_ok"]) == int(r["sessions"])
        assert int(r["decisions"]) >= int(r["sessions"])
    decisions = _rows(run_dir / "steering.csv")
    # the controller answered every decision, with the policy of the arm (the proxy's knob works)
    assert decisions and all(d["policy"] == d["arm"] and d["fallback"] == "0" for d in decisions)
    assert all(d["overloaded"] == "" for d in decisions if d["arm"] == "nearest")
    for d in decisions:  # load_aware puts an overloaded OCA first only over overloaded or content-miss OCAs
        ocas = [n for n in d["ranked"].split() if n != "origin"]
        if d["arm"] == "load_aware" and d["first"] in d["overloaded"].split():
            assert set(ocas) <= set(d["overloaded"].split()) | set(d["content_missed"].split()), d
    # the capacity limit binds: the embedded OCA alone did not serve everything under nearest
    assert float(by["nearest"]["embedded_share"]) < 1.0
    assert int(by["nearest"]["health_misses"]) + int(by["load_aware"]["health_misses"]) > 0
    for m in _rows(run_dir / "misses.csv"):  # every 503 came after a steering decision for it
        assert m["decision_ts"] != ""
