"""Pure parts of the `fill` scenario: diurnal curve, per-second series and the summarizer on small
synthetic tidy tables (no root, no network); Che's approximation: test_cache_theory.py."""
from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from scenarios import fill, traffic
from harness.rundir import write_csv


def test_diurnal_shape_trough_peak_and_bounds():
    assert fill.diurnal_shape(0.0) == pytest.approx(0.0)
    assert fill.diurnal_shape(0.75) == pytest.approx(1.0)
    assert fill.diurnal_shape(1.0) == pytest.approx(0.0)
    assert fill.diurnal_shape(0.2) < fill.diurnal_shape(0.5) < fill.diurnal_shape(0.7)
    with pytest.raises(ValueError, match="frac"):
        fill.diurnal_shape(1.5)


def test_slot_counts_night_is_quiet_and_peak_is_late():
    counts = fill.slot_counts(6, 3)
    assert counts == [0, 1, 2, 3, 3, 1]
    assert max(counts) == 3 and counts[0] == 0
    with pytest.raises(ValueError):
        fill.slot_counts(0, 3)


ROLES = {"i1br": "border", "nfxr": "router", "i1v1": "viewer"}


def _ts(arm, t, link, cls, node, to, frm):
    return {"arm": arm, "capacity": "head:0.95", "capacity_mb": "40.0", "t_s": t, "link": link, "cls": cls, "node": node,
            "to_node_bytes": to, "from_node_bytes": frm}


def test_per_second_counts_upstream_at_borders_only():
    rows = [_ts("a", 0, "L1", "transit", "i1br", 0, 0), _ts("a", 0, "L2", "transit", "nfxr", 0, 0),
            _ts("a", 0, "L3", "access", "i1v1", 0, 0),
            _ts("a", 1, "L1", "transit", "i1br", 1_000_000, 250_000),
            _ts("a", 1, "L2", "transit", "nfxr", 9_000_000, 0),
            _ts("a", 1, "L3", "access", "i1v1", 500_000, 0),
            _ts("b", 1, "L1", "transit", "i1br", 7, 7)]
    ts = pd.DataFrame(rows)
    out = {r["cls"]: r for r in traffic.per_second(ts[ts["arm"] == "a"], ROLES).to_dict("records")}
    assert out["transit"]["bytes"] == 1_250_000 and out["transit"]["mbps"] == pytest.approx(10.0)
    assert out["access"]["bytes"] == 500_000


def test_hit_ratios_skip_origin_and_weigh_bytes():
    reqs = [{"oca": "i1oca1", "cache": "hit", "bytes": 300}, {"oca": "i1oca1", "cache": "fill", "bytes": 100},
            {"oca": "origin", "cache": "none", "bytes": 999}, {"oca": "i1oca1", "cache": "hit", "bytes": 100}]
    req, byte = traffic.hit_ratios(pd.DataFrame(reqs))
    assert req == pytest.approx(2 / 3) and byte == pytest.approx(0.8)
    assert all(math.isnan(x) for x in traffic.hit_ratios(pd.DataFrame()))


CAP = {"capacity": "head:0.95", "capacity_mb": 40.0}


def _synthetic_run(tmp_path):
    from topologies.catalog import metro
    plan = metro()
    (tmp_path / "plan.json").write_text(plan.to_json())
    cfg = {"day_s": 24, "slots": 6, "window_slots": 2, "slot_counts": [0, 1, 2, 3, 3, 1], "segments": 1,
           "catalog": {"seed": 1, "n_titles": 20, "duration_s": 12}}
    (tmp_path / "manifest.json").write_text(json.dumps({"settings": cfg}))
    border = next(lk for lk in plan.links if lk.cls == "transit" and
                  any(plan.node(e.node).role == "border" for e in (lk.a, lk.b)))
    node = next(e.node for e in (border.a, border.b) if plan.node(e.node).role == "border")
    ts, fills, reqs, sessions, links = [], [], [], [], []
    ocas = [{"arm": arm, **CAP, "oca": "i1oca1", "tier": "embedded", "oca_capacity_mb": 40.0}
            for arm in ("reactive", "proactive")]
    for arm, night_mb, day_mb in (("reactive", 0, 30), ("proactive", 20, 5)):
        cum = 0
        for t in range(0, 13):
            cum += (night_mb if t <= 8 else day_mb) * 1_000_000 // 8
            ts.append({"arm": arm, **CAP, "t_s": t, "link": border.name, "cls": "transit",
                       "node": node, "to_node_bytes": cum, "from_node_bytes": 0})
        links.append({"arm": arm, **CAP, "link": border.name, "cls": "transit", "node": node,
                      "to_node_bytes": cum, "from_node_bytes": 0})
        fills.append({"arm": arm, **CAP, "oca": "i1oca1", "t_s": 2, "kind": "push",
                      "bytes": 5_000_000 if arm == "proactive" else 0, "in_window": True})
        fills.append({"arm": arm, **CAP, "oca": "i1oca1", "t_s": 10, "kind": "pull",
                      "bytes": 4_000_000 if arm == "reactive" else 1_000_000, "in_window": False})
        for c in ("hit", "fill", "fill") if arm == "reactive" else ("hit", "hit", "fill"):
            reqs.append({"arm": arm, **CAP, "oca": "i1oca1", "t_s": 9, "path": "/v/t0001/235/0",
                         "status": 200, "bytes": 1000, "cache": c})
        sessions.append({"arm": arm, **CAP, "t_s": 9, "status": "ok", "bytes": 4_000_000,
                         "started_unix": 1000.0, "ended_unix": 1004.0,
                         "startup_s": 0.5 if arm == "proactive" else 0.9, "account": "i1v1-s02-0000",
                         "first_location": "origin" if arm == "proactive" else "i1oca1"})
    for name, rows in (("links_ts", ts), ("fills", fills), ("requests", reqs), ("sessions", sessions),
                       ("links", links), ("ocas", ocas)):
        write_csv(tmp_path / f"{name}.csv", rows)
    return tmp_path


def test_summarize_synthetic_run(tmp_path):
    rows = {r["arm"]: r for r in fill.summarize(_synthetic_run(tmp_path))}
    re, pro = rows["reactive"], rows["proactive"]
    assert pro["upstream_night_mb"] > re["upstream_night_mb"] == 0
    assert pro["upstream_peak_mbps"] < re["upstream_peak_mbps"]
    assert re["upstream_peak_mbps"] == pytest.approx(30.0)
    assert (re["upstream_peak_mean_mbps"], pro["upstream_peak_mean_mbps"]) == pytest.approx((30.0, 5.0))
    # push fill in/outside the night; pull-through by day counted apart
    assert (pro["fill_in_window_mb"], pro["fill_outside_mb"]) == (5.0, 0.0) and re["fill_outside_mb"] == 0.0
    assert (re["pull_mb"], pro["pull_mb"]) == (4.0, 1.0)
    assert 0 <= re["lru_replay_hit_ratio"] <= 1 and pro["lru_replay_hit_ratio"] != pro["lru_replay_hit_ratio"]
    assert re["hit_ratio"] == pytest.approx(0.333) and pro["hit_ratio"] == pytest.approx(0.667)
    assert 0 < re["che_hit_ratio"] < 1
    # stores that never evict miss only what was neither staged nor asked for before (LRU's stack
    # property: never below the bounded replay); Che over files is a number for the reactive arm only
    assert re["lru_replay_hit_ratio"] <= re["infinite_cache_hit_ratio"] <= 1
    assert pro["infinite_cache_hit_ratio"] != pro["infinite_cache_hit_ratio"]
    assert 0 < re["che_file_hit_ratio"] <= 1
    assert re["upstream_kernel_mb"] > 0
    assert (re["origin_first_sessions"], pro["origin_first_sessions"]) == (0, 1)
    assert (tmp_path / "summary.csv").exists() and (tmp_path / "fill.png").stat().st_size > 0
    assert (tmp_path / "upstream_ts.csv").exists()
    per_oca = (tmp_path / "oca_summary.csv").read_text().splitlines()
    assert per_oca[0].startswith("arm,capacity,capacity_mb,oca,requests") and len(per_oca) == 3
    table = fill.format_table(list(rows.values()))
    assert "proactive" in table and "che_hit_ratio" in table


def test_viewer_requests_drop_fill_traffic_between_ocas():
    from topologies.catalog import metro
    plan = metro()
    viewer, oca = plan.primary_ip("i1v1"), plan.primary_ip("i1oca1")
    reqs = [{"client": viewer, "oca": "nfxoca1"}, {"client": oca, "oca": "nfxoca1"}, {"oca": "i1oca1"}]
    assert traffic.viewer_requests(pd.DataFrame(reqs), plan).to_dict("records")[0] == reqs[0]
    assert list(traffic.viewer_requests(pd.DataFrame(reqs), plan).index) == [0, 2]


def test_peak_window_is_the_busiest_slots_and_the_mean_is_taken_inside():
    starts, counts = [0, 20, 40, 46, 52, 58], [0, 1, 2, 3, 3, 1]
    assert fill.peak_window(starts, counts, 64) == (46, 58)          # slots 3 and 4 (>= 0.8 x 3)
    assert fill.peak_window(starts, counts, 64, share=0.5) == (40, 58)
    assert fill.peak_window(starts, [0, 0, 0, 0, 0, 5], 64) == (58, 64)  # the last slot ends the day
    with pytest.raises(ValueError):
        fill.peak_window(starts, [0] * 6, 64)
    per_s = {float(t): float(t) for t in range(64)}
    assert fill.peak_mean_mbps(per_s, (46, 58)) == pytest.approx(sum(range(46, 58)) / 12)
    assert math.isnan(fill.peak_mean_mbps(per_s, (70, 80))) and math.isnan(fill.peak_mean_mbps({}, (0, 1)))


def test_lru_replay_runs_the_stores_lru_over_the_request_stream():
    import pandas as pd
    from appliances.content import Catalog, CatalogSpec
    cat = Catalog(CatalogSpec(seed=1, n_titles=4, duration_s=8))
    a, b = "/v/t0000/235/0", "/v/t0001/235/0"
    rq = pd.DataFrame({"oca": ["i1oca1"] * 4 + ["origin"], "t_s": [1, 2, 3, 4, 5], "path": [a, b, a, b, a],
                       "cache": ["fill", "fill", "hit", "hit", "hit"]})
    big, one = {"i1oca1": 10.0}, {"i1oca1": cat.segment_size("t0000", 235, 0) * 1.5 / 2**20}
    assert fill.lru_replay(rq, cat, big) == 0.5      # a b | a b hit; the origin's row is not a cache
    assert fill.lru_replay(rq, cat, one) == 0.0      # room for one object: each evicts the other
    # a store that held t0000 and t0001 (every rung of segment 0) at midnight hits from the start
    assert fill.lru_replay(rq, cat, big, {"i1oca1": ["t0000", "t0001"]}, segments=1) == 1.0
    # what it held of other titles does not help; another OCA's staged titles are not its own
    assert fill.lru_replay(rq, cat, big, {"i1oca1": ["t0002"], "i2oca1": ["t0000"]}, segments=1) == 0.5
    assert fill.lru_replay(rq.iloc[0:0], cat, big) != fill.lru_replay(rq.iloc[0:0], cat, big)  # nan


def test_slot_starts_split_the_night_and_the_daytime():
    cfg = {"day_s": 64, "night_s": 40, "slots": 6, "window_slots": 2}
    assert fill.slot_starts(cfg) == [0, 20, 40, 46, 52, 58] and fill.night_s(cfg) == 40
    old = {"day_s": 36, "slots": 6, "window_slots": 2}  # no night_s: even slots (older runs)
    assert fill.slot_starts(old) == [0, 6, 12, 18, 24, 30] and fill.night_s(old) == 12
    for bad in ({**cfg, "night_s": 64}, {**cfg, "window_slots": 6}, {**cfg, "window_slots": 0}):
        with pytest.raises(ValueError, match="night_s"):
            fill.slot_starts(bad)
