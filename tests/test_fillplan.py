"""Fill planning: capacity, popularity order, per-ISP preference, source ranking."""
import pytest

from appliances.content import Catalog, CatalogSpec
from contracts.deployment import parse_deployment
from appliances.fillplan import (fill_sources, oca_popularity, plan_oca, popularity_order,
                                 regional_popularity, select_titles)

SPEC = {"n_titles": 40, "duration_s": 40, "ladder_kbps": [235, 750]}


def deployment():
    oca = lambda name, tier, host, serves, site=None: {  # noqa: E731
        "name": name, "tier": tier, "url": f"http://198.18.{host}:8080", "serves": serves,
        "distance_hops": 1, "rtt_ms": 1.0, **({"site": site} if site else {})}
    return parse_deployment({
        "ocas": [oca("i1oca1", "embedded", "1.100", ["198.18.1.0/24"], "isp1"),
                 oca("i1oca2", "embedded", "1.101", ["198.18.1.0/24"], "isp1"),
                 oca("i2oca1", "embedded", "2.100", ["198.18.2.0/24"], "isp2"),
                 oca("ixp1", "ixp", "9.10", ["198.18.1.0/24", "198.18.2.0/24"], "ixp"),
                 oca("ixp2", "ixp", "9.11", ["198.18.1.0/24", "198.18.2.0/24"], "ixp")],
        "origin": {"name": "origin", "url": "http://198.18.100.10:8080"},
        "catalog": SPEC,
        "regions": {"isp1": {"prefixes": ["198.18.1.0/24"], "preference_seed": 11},
                    "isp2": {"prefixes": ["198.18.2.0/24"], "preference_seed": 12}}})


def test_regional_popularity_is_seeded_normalised_and_differs_per_isp():
    base = Catalog(CatalogSpec(**{**SPEC, "ladder_kbps": (235, 750)})).popularity()
    a1, a2 = regional_popularity(base, 11), regional_popularity(base, 11)
    b = regional_popularity(base, 12)
    assert a1 == a2
    assert sum(a1.values()) == pytest.approx(1.0)
    assert popularity_order(a1) != popularity_order(b)
    # the preference perturbs but keeps the Zipf head mostly on top
    top_base = set(popularity_order(base)[:10])
    assert len(top_base & set(popularity_order(a1)[:10])) >= 5


def test_select_titles_greedy_skips_what_does_not_fit():
    sizes = {"a": 60, "b": 50, "c": 30, "d": 10}
    chosen, used = select_titles(["a", "b", "c", "d"], sizes.__getitem__, 100)
    assert chosen == ["a", "c", "d"] and used == 100


def test_plan_respects_capacity_and_popularity_order():
    d = deployment()
    cat = Catalog(d.catalog)
    base = cat.popularity()
    oca = d.oca("i1oca1")
    cap = 30_000_000  # ~4.9 MB per title: about 5 of 40 titles fit
    plan = plan_oca(d, oca, base, d.catalog.ladder_kbps, 10, cat.segment_size, cap,
                    headroom=0.9)
    assert plan.planned_bytes <= cap * 0.9
    assert plan.planned_bytes == sum(cat.segment_size(*s) for s in plan.segments)
    assert len(plan.segments) == len(plan.titles) * 2 * 10
    order = popularity_order(oca_popularity(d, oca, base))
    # the chosen titles are the most popular ones that fit, in popularity order
    assert list(plan.titles) == [t for t in order if t in plan.titles]
    assert list(plan.titles[:3]) == order[:3]
    assert 0 < len(plan.titles) < 40
    # a bigger cache holds a superset
    bigger = plan_oca(d, oca, base, d.catalog.ladder_kbps, 10, cat.segment_size, 3 * cap)
    assert set(plan.titles) <= set(bigger.titles)
    zero = plan_oca(d, oca, base, d.catalog.ladder_kbps, 10, cat.segment_size, 0)
    assert zero.segments == () and zero.planned_bytes == 0


def test_releases_come_first_and_push_out_the_tail():
    d = deployment()
    cat = Catalog(d.catalog)
    base = cat.popularity()
    oca = d.oca("i1oca1")
    cap = 30_000_000
    plain = plan_oca(d, oca, base, d.catalog.ladder_kbps, 10, cat.segment_size, cap, headroom=0.9)
    new = popularity_order(oca_popularity(d, oca, base))[-1]  # the least popular: never planned
    assert new not in plain.titles
    rel = plan_oca(d, oca, base, d.catalog.ladder_kbps, 10, cat.segment_size, cap, headroom=0.9,
                   releases=(new, new))
    assert rel.titles[0] == new and rel.titles.count(new) == 1
    assert list(rel.titles[1:]) == [t for t in plain.titles if t in rel.titles[1:]]
    assert plain.titles[-1] not in rel.titles and rel.planned_bytes <= cap * 0.9
    with pytest.raises(ValueError, match="releases"):
        plan_oca(d, oca, base, d.catalog.ladder_kbps, 10, cat.segment_size, cap, releases=("t9999",))


def test_per_isp_preference_changes_the_plan():
    d = deployment()
    cat = Catalog(d.catalog)
    base = cat.popularity()
    p1 = plan_oca(d, d.oca("i1oca1"), base, (235,), 1, cat.segment_size, 500_000)
    p2 = plan_oca(d, d.oca("i2oca1"), base, (235,), 1, cat.segment_size, 500_000)
    assert p1.titles != p2.titles
    # OCAs of the same region get the same plan
    p1b = plan_oca(d, d.oca("i1oca2"), base, (235,), 1, cat.segment_size, 500_000)
    assert p1b.titles == p1.titles


def test_fill_sources_peer_then_tier_then_origin():
    d = deployment()
    assert fill_sources(d, d.oca("i1oca1")) == [
        "http://198.18.1.101:8080", "http://198.18.9.10:8080", "http://198.18.9.11:8080",
        "http://198.18.100.10:8080"]
    assert fill_sources(d, d.oca("i2oca1")) == [
        "http://198.18.9.10:8080", "http://198.18.9.11:8080", "http://198.18.100.10:8080"]
    assert fill_sources(d, d.oca("ixp1")) == ["http://198.18.9.11:8080",
                                              "http://198.18.100.10:8080"]


def test_request_body_matches_contract():
    d = deployment()
    cat = Catalog(d.catalog)
    plan = plan_oca(d, d.oca("ixp1"), cat.popularity(), (235,), 2, cat.segment_size, 10**6)
    body = plan.request_body(rate_mbps=100, window_end_unix=1234.0)
    assert set(body) == {"segments", "sources", "rate_mbps", "window_end_unix"}
    assert body["segments"][0][1] == 235 and isinstance(body["segments"][0], list)


def test_bad_arguments():
    d = deployment()
    cat = Catalog(d.catalog)
    with pytest.raises(ValueError):
        plan_oca(d, d.oca("ixp1"), cat.popularity(), (235,), 0, cat.segment_size, 10)
    with pytest.raises(ValueError):
        regional_popularity({}, 1)


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 60_000_000), st.integers(1, 10), st.floats(0.1, 1.0))
def test_plan_never_exceeds_capacity(cap, spt, headroom):
    d = deployment()
    cat = Catalog(d.catalog)
    plan = plan_oca(d, d.oca("ixp1"), cat.popularity(), d.catalog.ladder_kbps, spt,
                    cat.segment_size, cap, headroom=headroom)
    assert plan.planned_bytes <= cap * headroom
    assert len(set(plan.segments)) == len(plan.segments)
    # greedy: every skipped title would not have fitted in the space left at the end
    left = int(cap * headroom) - plan.planned_bytes
    for t in cat.titles():
        if t not in plan.titles:
            size = sum(cat.segment_size(t, k, i) for k in d.catalog.ladder_kbps
                       for i in range(spt))
            assert size > left
