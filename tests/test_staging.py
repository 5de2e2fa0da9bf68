"""harness.staging: yesterday's history, capacities sized from it, and stores filled with the
control plane's own plans before the serve clock (no root: plain files)."""
from __future__ import annotations

import hashlib

import pytest

from appliances.content import Catalog
from appliances.store import Store
from contracts.catalog import CatalogSpec
from harness import staging
from harness.services import ServiceOptions, deployment
from harness.sizing import parse_rule, tier_rules
from topologies.catalog import metro

CATALOG = {"seed": 1, "n_titles": 6, "duration_s": 8}


@pytest.fixture(scope="module")
def staged(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("staging")
    dep = deployment(metro(), ServiceOptions(arm="embedded", catalog=CATALOG))
    hist = staging.write_history(dep, tmp / "history.csv", seed=5, sessions_per_region=200, drift=0.3,
                                 skip_titles=("t0003",))
    dep = staging.size_ocas(dep, tier_rules(), None, hist)
    out = staging.stage(dep, None, hist, tmp / "stores", tmp / "objects", skip_titles=("t0003",))
    return tmp, dep, hist, out


def test_history_file_is_yesterdays_sessions_without_todays_launch(staged):
    tmp, dep, _, _ = staged
    rows = (tmp / "history.csv").read_text().splitlines()
    assert rows[0] == "region,title" and len(rows) > 100
    assert not any(r.endswith(",t0003") for r in rows[1:])


def test_stores_hold_exactly_the_plan_with_catalog_bytes(staged):
    tmp, dep, hist, out = staged
    catalog = Catalog(CatalogSpec(**CATALOG))
    plans = staging.plans(dep, None, hist)
    for o in dep["ocas"]:
        store = Store(tmp / "stores" / o["name"], int(o["capacity_mb"] * 2**20))
        want = {k for k in plans[o["name"]].segments if k[0] != "t0003"}
        assert set(store.keys()) == want and out[o["name"]]["filled"] == len(want)
        assert store.used_bytes == out[o["name"]]["bytes"] <= store.capacity_bytes
        key = sorted(want)[0]
        obj = store.lookup(key)
        data = obj.path.read_bytes()
        assert data == catalog.segment_bytes(*key) and obj.sha256 == hashlib.sha256(data).hexdigest()


def test_ixp_holds_the_catalog_and_embedded_the_predicted_head(staged):
    _, dep, _, out = staged
    titles = {o["name"]: set(out[o["name"]]["titles"].split()) for o in dep["ocas"]}
    assert titles["nfxoca1"] == {f"t000{i}" for i in range(6)} - {"t0003"}
    for o in dep["ocas"]:
        if o["tier"] == "embedded":
            assert o["capacity_rule"] == "head:0.95"
            assert 0 < len(titles[o["name"]]) <= 6 and o["capacity_mb"] < dep["ocas"][0]["capacity_mb"] * 10


def test_objects_are_generated_once_and_hard_linked(staged):
    tmp, dep, _, _ = staged
    src = next((tmp / "objects").glob("*/*/*"))
    assert src.stat().st_nlink >= 2  # the IXP site and at least one embedded OCA share it


def test_lru_titles_keeps_the_most_recent_that_fit_least_recent_first():
    size = {"a": 4, "b": 4, "c": 4, "d": 9}
    assert staging.lru_titles(["a", "b", "c"], size, 8) == ["b", "c"]
    assert staging.lru_titles(["a", "b", "a", "c"], size, 8) == ["a", "c"]  # a touched: b evicted
    assert staging.lru_titles(["a", "d"], size, 8) == ["a"]                # d never fits
    assert staging.lru_titles([], size, 8) == []


def test_lru_tier_holds_yesterdays_lru_state_in_recency_order(tmp_path):
    dep = deployment(metro(), ServiceOptions(arm="embedded", catalog=CATALOG))
    hist = staging.write_history(dep, tmp_path / "history.csv", seed=5, sessions_per_region=200, drift=0.3)
    dep = staging.size_ocas(dep, {**tier_rules(), "embedded": parse_rule("0.5")}, 1, hist)
    trace = staging.read_trace(dep, tmp_path / "history.csv")
    with pytest.raises(ValueError, match="trace"):
        staging.stage(dep, 1, hist, tmp_path / "x", tmp_path / "o", lru_tiers=("embedded",))
    out = staging.stage(dep, 1, hist, tmp_path / "stores", tmp_path / "objects", lru_tiers=("embedded",),
                        trace=trace)
    assert out["i1oca1"]["state"] == "staged-lru" and out["nfxoca1"]["state"] == "staged"
    o = next(o for o in dep["ocas"] if o["name"] == "i1oca1")
    cap = int(o["capacity_mb"] * 2**20)
    title_bytes = {t: sum(Catalog(CatalogSpec(**CATALOG)).segment_size(t, k, 0) for k in o_ladder())
                   for t in (f"t000{i}" for i in range(6))}
    want = staging.lru_titles([t for r, t in trace if r == "isp1"], title_bytes, cap)
    assert out["i1oca1"]["titles"].split() == want and 0 < len(want) < 6  # half the catalog binds
    store = Store(tmp_path / "stores" / "i1oca1", cap)
    keys = store.keys()
    assert {k[0] for k in keys} == set(want) and store.used_bytes <= cap
    # the startup index (oldest mtime first) resumes the LRU order: least recent title first
    assert (keys[0][0], keys[-1][0]) == (want[0], want[-1])
    assert all(p.stat().st_nlink == 1 for p in (tmp_path / "stores" / "i1oca1" / "objects").rglob("*")
               if p.is_file())


def o_ladder():
    return CatalogSpec(**CATALOG).ladder_kbps
