"""`ocalab run placement --repeat 2 --abr fixed` end to end on the emulated metro (root), at a
small size: the series layout, the same-seed reproducibility of the non-timing figures, the
independent byte accounting (kernel, relay and log bytes agree within 1% on transit and peering;
the controller's counters only check the link mapping) and the direction of the headline result."""
from __future__ import annotations

import csv
import dataclasses
import json
import os

import pytest

pytestmark = [pytest.mark.emulation,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root (namespaces, OVS)")]


def _rows(path):
    with path.open() as f:
        return list(csv.DictReader(f))


def test_placement_repeats_reproduce_non_timing_figures(tmp_path, monkeypatch):
    from scenarios import placement
    from ocalab.cli import main

    def small(quick: bool) -> dict:
        return {"viewers_per_host": 1, "segments": 4, "ramp_s": 0.0,
                "catalog": {"seed": 1, "n_titles": 6, "duration_s": 16}}
    monkeypatch.setattr(placement, "SCENARIO", dataclasses.replace(placement.SCENARIO, settings=small))
    assert main(["run", "placement", "--repeat", "2", "--abr", "fixed", "--seed", "3", "--out", str(tmp_path)]) == 0
    (top,) = list(tmp_path.glob("placement-*"))
    manifest = json.loads((top / "manifest.json").read_text())
    assert manifest["series"] == ["rep1", "rep2"] and manifest["settings"]["abr"] == "fixed"
    assert manifest["fidelity_verified"] is True
    for rep in ("rep1", "rep2"):
        child = json.loads((top / rep / "manifest.json").read_text())
        assert child["repeat_index"] == int(rep[3:]) and child["seed"] == 3
        for name in ("chunks", "sessions", "links", "links_ctl", "links_relay", "paths", "access", "summary",
                     "fidelity", "bytes"):
            assert (top / rep / f"{name}.csv").stat().st_size > 0, name
        _assert_bytes_agree(_rows(top / rep / "bytes.csv"))
    spread, medians = _rows(top / "spread.csv"), _rows(top / "summary.csv")
    assert {r["arm"] for r in medians} == {"origin", "ixp", "embedded"}
    stable = [r for r in spread if r["stable"] == "1"]
    assert len(stable) == 3 * len(placement.STABLE)
    assert [f"{r['arm']} {r['metric']}: {r['values']}" for r in stable if r["identical"] != "1"] == []
    summary = {r["arm"]: r for r in _rows(top / "rep1" / "summary.csv")}
    e, o = summary["embedded"], summary["origin"]
    assert float(e["hops"]) < float(summary["ixp"]["hops"]) < float(o["hops"])
    # Open Connect's serve path from filled caches: an embedded OCA's content miss goes to the IXP
    # site, never pulls over transit, so embedded moves no more transit than the IXP arm
    assert float(e["payload_transit_mb"]) <= 0.1 * float(o["payload_transit_mb"])
    assert float(e["payload_transit_mb"]) <= float(summary["ixp"]["payload_transit_mb"]) + 1.0
    assert float(o["payload_transit_mb"]) >= float(o["served_mb"])  # everything came over transit
    assert float(e["in_isp_share"]) > 0.5 and float(o["in_isp_share"]) == 0.0
    # the plan came from yesterday's history, so it covers most but not necessarily all sessions
    assert 0.5 < float(e["plan_coverage"]) <= 1.0 and o["plan_coverage"] == ""
    for r in summary.values():
        assert float(r["ctl_vs_kernel_pct"]) < 2.0  # the link mapping check (same counter source)
        assert float(r["relay_vs_kernel_wire_pct"]) <= 1.0
        # wire bytes carry the payload plus headers, ACKs and probes
        assert float(r["transit_mb"]) >= float(r["payload_transit_mb"])
    assert e["ttfb_hit_ms"] != ""
    # `ocalab report` rebuilds the series from saved data
    (top / "summary.csv").unlink()
    (top / "spread.csv").unlink()
    assert main(["report", str(top)]) == 0
    assert _rows(top / "spread.csv") == spread and _rows(top / "summary.csv") == medians


def _assert_bytes_agree(rows: list[dict]) -> None:
    """Issue 16's done-when: on transit and peering, wherever a class carried the arm's content
    (over 1 MB of logged payload), relay frame counters agree with the kernel's and relay TCP
    payload with the logged bodies within 1%; the arms together judge both classes."""
    judged = set()
    for r in rows:
        if r["cls"] not in ("transit", "peering") or int(r["log_payload_bytes"]) < 1_000_000:
            continue
        judged.add(r["cls"])
        assert abs(float(r["gap_wire_pct"])) <= 1.0, r
        assert abs(float(r["gap_payload_pct"])) <= 1.0, r
    assert judged == {"transit", "peering"}
