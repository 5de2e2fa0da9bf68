"""Che's approximation (contracts.cachetheory) and the trace-driven replay of the OCA's own
eviction code (bench.cache): exact values, the 3-point gate at a quick size, a control that
must fail the gate, the Store cross-check and seeded determinism. Pure; no network."""
from __future__ import annotations

import pytest

from bench import cache
from contracts.cachetheory import che_hit_ratio, zipf_popularity
from scenarios import fill

QUICK_OBJECTS, QUICK_REQUESTS, QUICK_WARMUP = 1_000, 30_000, 6_000


def test_che_known_values():
    # uniform popularity over N items, cache C: T solves N(1-exp(-T/N)) = C and the hit ratio
    # is 1 - exp(-T/N) = C/N exactly
    assert che_hit_ratio([1.0] * 10, 4) == pytest.approx(0.4, abs=1e-9)
    assert che_hit_ratio([1.0] * 10, 0) == 0.0
    assert che_hit_ratio([1.0] * 10, 10) == 1.0
    with pytest.raises(ValueError):
        che_hit_ratio([0.0, 0.0], 1)
    assert fill.che_hit_ratio is che_hit_ratio  # the fill scenario uses this one definition


def test_zipf_popularity_is_normalised_and_ranked():
    pop = zipf_popularity(4, 1.0)
    assert sum(pop) == pytest.approx(1.0)
    assert pop[0] / pop[3] == pytest.approx(4.0) and pop == sorted(pop, reverse=True)
    assert zipf_popularity(3, 0.0) == pytest.approx([1 / 3] * 3)
    with pytest.raises(ValueError):
        zipf_popularity(0, 1.0)


def test_irm_trace_is_seeded_and_follows_popularity():
    pop = zipf_popularity(50, 1.0)
    a, b = cache.irm_trace(pop, 20_000, seed=7), cache.irm_trace(pop, 20_000, seed=7)
    assert a == b and a != cache.irm_trace(pop, 20_000, seed=8)
    assert set(a) <= set(range(50))
    assert a.count(0) / len(a) == pytest.approx(pop[0], abs=0.01)


def test_replay_rows_are_deterministic_apart_from_timing():
    s = cache.Setting(1.0, 0.1, 200, 5_000, 1_000)
    timing = {"trace_s", "replay_s", "che_s"}
    first, again = cache.replay(s, seed=3), cache.replay(s, seed=3)
    assert {k: v for k, v in first.items() if k not in timing} == \
        {k: v for k, v in again.items() if k not in timing}
    assert first["counted"] == 4_000 and first["cache_objects"] == 20 and first["exact_lru"] is None


def test_one_object_lru_hits_exactly_when_the_same_object_repeats():
    # with room for one object, LRU hits iff request n asks what request n-1 asked:
    # an exact check of the replay that does not go through Che
    trace = cache.irm_trace(zipf_popularity(10, 1.0), 5_000, seed=2)
    hits = list(cache.policy_hits(trace, 1))
    assert hits == [False] + [trace[n] == trace[n - 1] for n in range(1, len(trace))]
    row = cache.replay(cache.Setting(1.0, 0.1, 10, 20_000, 2_000, "small"))
    assert row["measured"] == pytest.approx(row["exact_lru"], abs=0.01)


@pytest.mark.parametrize("alpha", [0.8, 1.0])
def test_project_lru_matches_che_within_three_points(alpha):
    row = cache.replay(cache.Setting(alpha, 0.1, QUICK_OBJECTS, QUICK_REQUESTS, QUICK_WARMUP))
    assert abs(row["measured"] - row["che"]) <= cache.LIMIT_POINTS / 100, row
    assert row["within_limit"]


def test_fifo_without_touch_fails_the_gate_at_alpha_one():
    # a lost `touch` on hits (FIFO) must be caught: the gate has teeth
    lru = cache.replay(cache.Setting(1.0, 0.05, QUICK_OBJECTS, QUICK_REQUESTS, QUICK_WARMUP))
    fifo = cache.replay(cache.Setting(1.0, 0.05, QUICK_OBJECTS, QUICK_REQUESTS, QUICK_WARMUP, "fifo"))
    assert not fifo["within_limit"], fifo
    assert lru["measured"] - fifo["measured"] > cache.LIMIT_POINTS / 100


def test_store_replay_counts_the_same_hits_as_the_policy(tmp_path):
    trace = cache.irm_trace(zipf_popularity(100, 1.0), 1_500, seed=5)
    store = cache.hit_ratio(cache.store_hits(trace, 10, tmp_path), 300)
    policy = cache.hit_ratio(cache.policy_hits(trace, 10), 300)
    assert store == policy and store[1] == 1_200 and 0 < store[0] < 1_200
    assert len(list((tmp_path / "objects").glob("*/*/*"))) == 10  # the Store is full, not over


def test_hit_ratio_excludes_warmup():
    assert cache.hit_ratio([True, True, False, True], 2) == (1, 2)
    assert cache.hit_ratio([], 0) == (0, 0)


def test_che_for_files_of_unequal_size():
    from contracts.cachetheory import che_hit_ratio_sized
    pop = zipf_popularity(200, 0.8)
    # equal sizes: the same as items (the characteristic time is the same equation)
    assert che_hit_ratio_sized(pop, [3.0] * 200, 3.0 * 40) == pytest.approx(che_hit_ratio(pop, 40), abs=1e-9)
    # the same bytes of cache hold more small files: a higher hit ratio than with big ones
    small = che_hit_ratio_sized(pop, [1.0] * 200, 60.0)
    big = che_hit_ratio_sized(pop, [3.0] * 200, 60.0)
    assert small > big
    # making the popular files small raises it further; room for every file -> 1.0; none -> 0.0
    assert che_hit_ratio_sized(pop, [1.0] * 20 + [3.0] * 180, 60.0) > big
    assert che_hit_ratio_sized(pop, [2.0] * 200, 400.0) == 1.0 and che_hit_ratio_sized(pop, [2.0] * 200, 0) == 0.0
    with pytest.raises(ValueError):
        che_hit_ratio_sized(pop, [1.0] * 199, 10.0)
    with pytest.raises(ValueError):
        che_hit_ratio_sized(pop, [0.0] * 200, 10.0)


def test_fill_items_are_files_at_the_runs_rung_mix():
    from appliances.content import Catalog, CatalogSpec
    cat = Catalog(CatalogSpec(seed=1, n_titles=5, duration_s=12))
    pops, sizes = fill.file_items(cat, {235: 0.75, 1750: 0.25}, 3)
    assert len(pops) == len(sizes) == 10 and sum(pops) == pytest.approx(1.0)
    t = next(iter(cat.popularity()))  # items follow the popularity order
    assert sizes[0] == sum(cat.segment_size(t, 235, i) for i in range(3)) < sizes[1]
    import pandas as pd
    rq = pd.DataFrame({"oca": ["i1oca1", "i1oca1", "origin", "i1oca1"],
                       "path": [f"/v/{t}/235/0", f"/v/{t}/235/1", f"/v/{t}/1750/0", "/health"]})
    assert fill.rung_share(rq, cat) == {235: 1.0}  # the origin and non-segment paths are not the caches'
