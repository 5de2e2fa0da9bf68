"""History-based fill planning (issue 11 items 3 and 5): yesterday's trace, smoothed predicted
popularity, head bytes, plan coverage, the history CSV and the control plane's --history."""
import math
import subprocess
import sys
from pathlib import Path

import pytest

from appliances import tokens
from appliances.content import Catalog
from appliances.control import build_control, load_history
from appliances.fillplan import (head_bytes, history_popularity, history_trace, oca_popularity,
                                 plan_coverage, plan_oca, popularity_order, regional_popularity)
from appliances.history import read_history_csv, write_history_csv
from contracts.deployment import parse_deployment

KEY = bytes(range(32))
SPEC = {"n_titles": 40, "duration_s": 40, "ladder_kbps": [235, 750]}


def raw(capacity_mb=None):
    """Two ISPs (preference seeds 11, 12), one embedded OCA each, two IXP OCAs serving both."""
    cap = {} if capacity_mb is None else {"capacity_mb": capacity_mb}
    oca = lambda name, tier, host, serves, site: {  # noqa: E731
        "name": name, "tier": tier, "url": f"http://198.18.{host}:8080", "serves": serves,
        "distance_hops": 1, "rtt_ms": 1.0, "site": site, **cap}
    both = ["198.18.1.0/24", "198.18.2.0/24"]
    return {"ocas": [oca("i1oca1", "embedded", "1.100", ["198.18.1.0/24"], "isp1"),
                     oca("i2oca1", "embedded", "2.100", ["198.18.2.0/24"], "isp2"),
                     oca("ixp1", "ixp", "9.10", both, "ixp"),
                     oca("ixp2", "ixp", "9.11", both, "ixp")],
            "origin": {"name": "origin", "url": "http://198.18.100.10:8080"},
            "catalog": SPEC,
            "regions": {"isp1": {"prefixes": ["198.18.1.0/24"], "preference_seed": 11},
                        "isp2": {"prefixes": ["198.18.2.0/24"], "preference_seed": 12}}}


def setup(capacity_mb=None):
    d = parse_deployment(raw(capacity_mb))
    cat = Catalog(d.catalog)
    return d, cat, cat.popularity()


def trace(d, base, drift=0.5, seed=1, n=200):
    return history_trace(d, base, sessions_per_region=n, drift=drift, seed=seed)


# --- history_trace ---------------------------------------------------------------------------

def test_trace_is_deterministic_per_seed_and_covers_each_region():
    d, _, base = setup()
    a, b = trace(d, base), trace(d, base)
    assert a == b
    assert trace(d, base, seed=2) != a
    assert [r for r, _ in a] == ["isp1"] * 200 + ["isp2"] * 200
    assert {t for _, t in a} <= set(base)


def test_drift_zero_differs_from_drift_positive():
    d, _, base = setup()
    still, drifted = trace(d, base, drift=0.0), trace(d, base, drift=1.0)
    assert still != drifted
    # the session draws use the same rng: with drift 0 the counts follow the truth closely
    truth = regional_popularity(base, 11)
    counts = {t: 0 for t in base}
    for r, t in still:
        if r == "isp1":
            counts[t] += 1
    assert popularity_order(counts)[0] in popularity_order(truth)[:3]


def test_several_days_pool_oldest_first_and_a_night_ago_shifts_by_one_day():
    d, _, base = setup()
    one = trace(d, base, n=50)
    week = history_trace(d, base, sessions_per_region=50, drift=0.5, seed=1, days=3)
    ago = history_trace(d, base, sessions_per_region=50, drift=0.5, seed=1, days=3, skip_days=1)
    day = 2 * 50  # two regions a day
    assert len(week) == 3 * day and week[-day:] == one  # yesterday last, drawn as with days=1
    assert ago[day:] == week[:2 * day]                  # days 3 and 2 shared, day 4 added, day 1 gone
    assert ago[:day] != week[-day:]


@pytest.mark.parametrize("kw, field", [
    ({"days": 0}, "days"), ({"days": True}, "days"), ({"skip_days": -1}, "skip_days"),
    ({"sessions_per_region": 0}, "sessions_per_region"),
    ({"sessions_per_region": 2.5}, "sessions_per_region"),
    ({"drift": -0.1}, "drift"), ({"drift": math.nan}, "drift"), ({"drift": math.inf}, "drift"),
    ({"seed": "1"}, "seed")])
def test_trace_rejects_bad_arguments(kw, field):
    d, _, base = setup()
    args = {"sessions_per_region": 10, "drift": 0.5, "seed": 1, **kw}
    with pytest.raises(ValueError, match=field):
        history_trace(d, base, **args)


def test_trace_needs_regions():
    d, _, base = setup()
    from dataclasses import replace
    with pytest.raises(ValueError, match="regions"):
        history_trace(replace(d, regions=()), base, sessions_per_region=5, drift=0, seed=1)


# --- history_popularity ----------------------------------------------------------------------

def test_history_popularity_is_add_one_smoothed_and_sums_to_one():
    pop = history_popularity([("a", "x"), ("a", "x"), ("a", "y"), ("b", "z")], ["x", "y", "z"])
    assert set(pop) == {"a", "b"}
    assert pop["a"] == pytest.approx({"x": 3 / 6, "y": 2 / 6, "z": 1 / 6})
    assert pop["b"] == pytest.approx({"x": 1 / 4, "y": 1 / 4, "z": 2 / 4})
    d, cat, base = setup()
    for shares in history_popularity(trace(d, base), cat.titles()).values():
        assert math.fsum(shares.values()) == pytest.approx(1.0)
        assert set(shares) == set(cat.titles()) and min(shares.values()) > 0


def test_history_popularity_rejects_unknown_titles_and_empty_catalog():
    with pytest.raises(ValueError, match="t9999"):
        history_popularity([("a", "t9999")], ["t0000"])
    with pytest.raises(ValueError, match="titles"):
        history_popularity([], [])


# --- oca_popularity / plan_oca with history --------------------------------------------------

def test_oca_popularity_with_history_uses_only_history_or_base():
    d, cat, base = setup()
    hist = history_popularity(trace(d, base), cat.titles())
    assert oca_popularity(d, d.oca("i1oca1"), base, hist) == pytest.approx(hist["isp1"])
    ixp = oca_popularity(d, d.oca("ixp1"), base, hist)
    assert ixp == pytest.approx({t: (hist["isp1"][t] + hist["isp2"][t]) / 2 for t in base})
    # a served region without history falls back to base, not to the truth
    only1 = {"isp1": hist["isp1"]}
    assert oca_popularity(d, d.oca("i2oca1"), base, only1) == pytest.approx(base)
    assert oca_popularity(d, d.oca("ixp1"), base, only1) == pytest.approx(
        {t: (hist["isp1"][t] + base[t]) / 2 for t in base})
    # history None: today's behaviour
    assert oca_popularity(d, d.oca("i1oca1"), base, None) == oca_popularity(
        d, d.oca("i1oca1"), base)
    with pytest.raises(ValueError, match="isp1"):
        oca_popularity(d, d.oca("i1oca1"), base, {"isp1": {"t0000": 1.0}})


def test_plan_with_history_differs_from_truth_but_takes_whole_titles_within_capacity():
    d, cat, base = setup()
    ladder, spt, cap = d.catalog.ladder_kbps, 10, 60_000_000  # ~10 of 40 titles
    oca = d.oca("i1oca1")
    truth = plan_oca(d, oca, base, ladder, spt, cat.segment_size, cap)
    differs = False
    for drift in (0.5, 1.0, 2.0):
        hist = history_popularity(trace(d, base, drift=drift, n=100), cat.titles())
        plan = plan_oca(d, oca, base, ladder, spt, cat.segment_size, cap, history=hist)
        differs |= plan.titles != truth.titles
        assert plan.planned_bytes <= cap * 0.95
        assert plan.planned_bytes == sum(cat.segment_size(*s) for s in plan.segments)
        assert len(plan.segments) == len(plan.titles) * len(ladder) * spt  # whole titles
        assert {s[0] for s in plan.segments} == set(plan.titles)
        order = popularity_order(oca_popularity(d, oca, base, hist))
        assert list(plan.titles) == [t for t in order if t in plan.titles]
    assert differs


# --- head_bytes / plan_coverage --------------------------------------------------------------

SIZES = {"a": 100, "b": 20, "c": 3}
POP = {"a": 0.5, "b": 0.3, "c": 0.2}


def test_head_bytes_boundaries():
    size = SIZES.__getitem__
    assert head_bytes(POP, size, 1.0) == 123  # every title
    assert head_bytes(POP, size, 0.8) == 120  # exactly at the a+b boundary: stops there
    assert head_bytes(POP, size, 0.8000001) == 123
    assert head_bytes(POP, size, 0.5) == 100
    assert head_bytes(POP, size, 0.01) == 100  # at least the top title
    assert head_bytes({"a": 5, "b": 3, "c": 2}, size, 0.8) == 120  # counts work too
    assert head_bytes({"a": 1.0, "b": 0.0}, size, 1.0) == 100  # zero-probability tail left out


def test_head_bytes_share_one_on_a_real_catalog_takes_every_title():
    d, cat, base = setup()
    def tb(t):
        return sum(cat.segment_size(t, k, i) for k in d.catalog.ladder_kbps for i in range(10))
    assert head_bytes(base, tb, 1.0) == sum(tb(t) for t in base)
    assert head_bytes(base, tb, 0.5) < head_bytes(base, tb, 0.9) < head_bytes(base, tb, 1.0)


@pytest.mark.parametrize("share", [0, -0.1, 1.0001, math.nan])
def test_head_bytes_rejects_bad_share(share):
    with pytest.raises(ValueError, match="share"):
        head_bytes(POP, SIZES.__getitem__, share)


def test_head_bytes_rejects_bad_popularity():
    with pytest.raises(ValueError):
        head_bytes({}, SIZES.__getitem__, 0.5)
    with pytest.raises(ValueError):
        head_bytes({"a": -1.0, "b": 2.0}, SIZES.__getitem__, 0.5)


def test_plan_coverage():
    assert plan_coverage(["a", "b"], POP) == pytest.approx(0.8)
    assert plan_coverage([], POP) == 0.0
    assert plan_coverage(["a", "b", "c", "zzz"], POP) == pytest.approx(1.0)
    assert plan_coverage(["a", "a"], {"a": 3, "b": 1}) == pytest.approx(0.75)  # counts
    with pytest.raises(ValueError):
        plan_coverage(["a"], {})
    with pytest.raises(ValueError):
        plan_coverage(["a"], {"a": -1, "b": 2})


# --- CSV -------------------------------------------------------------------------------------

def test_csv_round_trip(tmp_path):
    d, cat, base = setup()
    tr = trace(d, base, n=30)
    path = tmp_path / "h.csv"
    assert write_history_csv(path, tr) == 60
    assert path.read_text().splitlines()[0] == "region,title"
    assert read_history_csv(path, d, cat.titles()) == tr


def test_csv_columns_in_either_order(tmp_path):
    d, cat, _ = setup()
    path = tmp_path / "h.csv"
    path.write_text("title,region\nt0003,isp2\n")
    assert read_history_csv(path, d, cat.titles()) == [("isp2", "t0003")]


@pytest.mark.parametrize("text, where, what", [
    ("", ":1:", "empty file"),
    ("region,title,count\nisp1,t0000,3\n", ":1:", "unknown column"),
    ("region\nisp1\n", ":1:", "exactly once"),
    ("region,region\nisp1,isp1\n", ":1:", "exactly once"),
    ("region,title\n", "", "no session rows"),
    ("region,title\nisp1,t0000\nisp9,t0000\n", ":3:", "unknown region 'isp9'"),
    ("region,title\nisp1,t0000\nisp1,t0001\nisp2,t9999\n", ":4:", "unknown title 't9999'"),
    ("region,title\nisp1,t0000,x\n", ":2:", "expected 2 fields, got 3"),
    ("region,title\nisp1\n", ":2:", "expected 2 fields, got 1"),
    ("region,title\nisp1,t0000\n\n", ":3:", "expected 2 fields, got 0"),
])
def test_csv_rejections_name_file_and_line(tmp_path, text, where, what):
    d, cat, _ = setup()
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(ValueError) as exc:
        read_history_csv(path, d, cat.titles())
    assert f"{path}{where}" in str(exc.value) and what in str(exc.value)


def test_csv_rejects_non_utf8(tmp_path):
    d, cat, _ = setup()
    path = tmp_path / "bin.csv"
    path.write_bytes(b"region,title\n\xff\xfe,t0000\n")
    with pytest.raises(ValueError, match=str(path)):
        read_history_csv(path, d, cat.titles())


# --- control plane ---------------------------------------------------------------------------

def test_cache_control_plans_from_history(tmp_path):
    d, cat, base = setup(capacity_mb=60)
    path = tmp_path / "h.csv"
    write_history_csv(path, trace(d, base, drift=2.0, n=100))
    hist = load_history(str(path), d)
    assert set(hist) == {"isp1", "isp2"}
    truth_cp, hist_cp = build_control(d, KEY), build_control(d, KEY, history=hist)
    assert truth_cp.cache.history is None and hist_cp.cache.history is hist
    oca = d.oca("i1oca1")
    p_truth, p_hist = truth_cp.cache.plan(oca, 10), hist_cp.cache.plan(oca, 10)
    assert p_hist == plan_oca(d, oca, base, d.catalog.ladder_kbps, 10, cat.segment_size,
                              60 * 2**20, history=hist)
    assert p_hist.titles != p_truth.titles


@pytest.mark.integration
def test_cli_bad_history_exits_with_one_line_before_serving(tmp_path):
    import json
    dep = tmp_path / "dep.json"
    dep.write_text(json.dumps(raw()))
    key = tmp_path / "key"
    tokens.write_key(key)
    hist = tmp_path / "h.csv"
    hist.write_text("region,title\nisp1,t0000\nnowhere,t0001\n")
    root = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, "-m", "appliances.control", "--listen", "127.0.0.1:0",
                        "--deployment", str(dep), "--token-key", str(key), "--history", str(hist)],
                       capture_output=True, text=True, cwd=root, timeout=60)
    assert r.returncode == 2 and "READY" not in r.stdout
    assert r.stderr.strip().splitlines() == [
        f"control: error: {hist}:3: unknown region 'nowhere' (deployment regions: "
        f"['isp1', 'isp2'])"]
    missing = subprocess.run([sys.executable, "-m", "appliances.control", "--listen",
                              "127.0.0.1:0", "--deployment", str(dep), "--token-key", str(key),
                              "--history", str(tmp_path / "absent.csv")],
                             capture_output=True, text=True, cwd=root, timeout=60)
    assert missing.returncode == 2 and "absent.csv" in missing.stderr
    assert "Traceback" not in missing.stderr and len(missing.stderr.strip().splitlines()) == 1
