"""Pure parts of the `flashcrowd` scenario: the launch title and the summarizer on small synthetic
tidy tables (no root, no network)."""
from __future__ import annotations

import json

import pytest

from scenarios import flashcrowd
from harness.rundir import write_csv


def test_new_title_is_least_popular():
    from appliances.content import Catalog, CatalogSpec
    cat = {"seed": 1, "n_titles": 10, "duration_s": 12}
    t = flashcrowd.new_title(cat)
    pop = Catalog(CatalogSpec(**cat)).popularity()
    assert pop[t] == min(pop.values())


def _synthetic_run(tmp_path):
    from topologies.catalog import metro
    plan = metro()
    (tmp_path / "plan.json").write_text(plan.to_json())
    cfg = {**flashcrowd._settings(True), "new_title": "t0009"}
    (tmp_path / "manifest.json").write_text(json.dumps({"settings": cfg}))
    border = next(lk for lk in plan.links if lk.cls == "transit" and
                  any(plan.node(e.node).role == "border" for e in (lk.a, lk.b)))
    node = next(e.node for e in (border.a, border.b) if plan.node(e.node).role == "border")
    ts, reqs, sessions, links = [], [], [], []
    for arm, spike_mb, startups in (("prepositioned", 2, [0.3, 0.4, 0.5, 0.6]),
                                    ("cold", 40, [0.9, 1.5, 2.0, 3.0])):
        cum = 0
        for t in range(10):
            cum += (spike_mb if 4 <= t <= 6 else 1) * 1_000_000 // 8
            ts.append({"arm": arm, "capacity_mb": 100.0, "t_s": t, "link": border.name,
                       "cls": "transit", "node": node, "to_node_bytes": cum, "from_node_bytes": 0})
        links.append({"arm": arm, "capacity_mb": 100.0, "link": border.name, "cls": "transit",
                      "node": node, "to_node_bytes": cum, "from_node_bytes": 0})
        for i, s in enumerate(startups):
            sessions.append({"arm": arm, "role": "spike", "startup_s": s, "status": "ok", "t_s": 4 + i / 2})
        sessions.append({"arm": arm, "role": "baseline", "startup_s": 0.7, "status": "ok", "t_s": 0})
        for c in ("hit", "hit") if arm == "prepositioned" else ("fill", "hit"):
            reqs.append({"arm": arm, "oca": "i1oca1", "path": "/v/t0009/235/0", "cache": c, "bytes": 100,
                         "t_s": 5})
        reqs.append({"arm": arm, "oca": "i1oca1", "path": "/v/t0001/235/0", "cache": "fill", "bytes": 100,
                     "t_s": 5})
        if arm == "cold":
            reqs.append({"arm": arm, "oca": "origin", "path": "/v/t0009/235/0", "cache": "none",
                         "bytes": 2_000_000, "t_s": 5})
        else:  # the pre-positioning fill, before the clock starts
            reqs.append({"arm": arm, "oca": "origin", "path": "/v/t0009/235/0", "cache": "none",
                         "bytes": 3_000_000, "t_s": -4})
    for name, rows in (("links_ts", ts), ("requests", reqs), ("sessions", sessions), ("links", links)):
        write_csv(tmp_path / f"{name}.csv", rows)
    return tmp_path


def test_summarize_synthetic_run(tmp_path):
    rows = {r["arm"]: r for r in flashcrowd.summarize(_synthetic_run(tmp_path))}
    pre, cold = rows["prepositioned"], rows["cold"]
    assert pre["spike_sessions"] == cold["spike_sessions"] == 4
    assert pre["startup_p50_s"] < cold["startup_p50_s"]
    assert cold["startup_max_s"] == 3.0
    assert cold["startup_p90_s"] == pytest.approx(2.7)  # linear between closest ranks: 2.0 + 0.7 x (3.0 - 2.0)
    assert cold["upstream_peak_mbps"] == pytest.approx(40.0) and pre["upstream_peak_mbps"] == pytest.approx(2.0)
    assert cold["spike_peak_mbps"] == pytest.approx(40.0) and pre["spike_peak_mbps"] == pytest.approx(2.0)
    assert cold["spike_upstream_mb"] == pytest.approx(2 * 5 + 3 * 0.125, abs=0.01)  # t = 5..9
    assert pre["new_title_hit_ratio"] == 1.0 and cold["new_title_hit_ratio"] == 0.5
    assert cold["origin_new_title_mb"] == 2.0 and pre["origin_new_title_mb"] == 0.0
    assert pre["prefill_mb"] == 3.0 and cold["prefill_mb"] == 0.0
    assert pre["upstream_kernel_mb"] < cold["upstream_kernel_mb"]
    assert (tmp_path / "flashcrowd.png").stat().st_size > 0 and (tmp_path / "transit_ts.csv").exists()
    assert "prepositioned" in flashcrowd.format_table(list(rows.values()))
