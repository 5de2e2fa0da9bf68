"""Steering policy: tier order, content and health misses, load threshold, ties, plan-derived view."""
import pytest

from topologies.routes import path_delay_ms
from contracts.steering import (MONITOR_DEAD_S, STALE_AFTER_S, Candidate, PathMetrics,
                                content_verdict, title_objects_of)
from controller.steering import OcaState, Origin, network_view, rank
from topologies.catalog import metro

NOW = 10_000.0
VIEWER = "198.18.1.10"
ORIGIN = Origin("origin", "198.19.10.11")


def oca(name, tier="embedded", prefixes=("198.18.1.0/24",), **kw):
    kw.setdefault("heartbeat_s", NOW - 1)
    addr = kw.pop("address", "198.18.1.100")
    return OcaState(name, tier, addr, prefixes, **kw)


VIEW = {"e1": PathMetrics(1, 6.0), "e2": PathMetrics(1, 6.5), "x1": PathMetrics(3, 23.0),
        "other": PathMetrics(4, 30.0), "origin": PathMetrics(4, 98.0)}


def names(ranked):
    return [r.name for r in ranked]


def test_embedded_then_ixp_then_origin_and_prefix_filter():
    ocas = [oca("x1", "ixp", ("198.18.0.0/16",), address="198.19.1.10"), oca("e2"), oca("e1"),
            oca("other", prefixes=("198.18.2.0/24",), address="198.18.2.100")]
    ranked = rank(VIEWER, "t1", ocas, VIEW, ORIGIN, NOW)
    assert names(ranked) == ["e1", "e2", "x1", "origin"]  # e1 before e2 by RTT; other not serving
    assert ranked[0].reason == {"hops": 1, "rtt_ms": 6.0, "load": 0.0, "content_miss": False,
                                "health_miss": False, "overloaded": False, "group": 0,
                                "policy": "nearest", "why": "ok"}
    assert ranked[-1].tier == "origin" and ranked[-1].reason["why"] == "origin"
    assert ranked[2].to_json()["base_url_root"] == "http://198.19.1.10"


def test_content_miss_goes_below_hits_but_above_origin():
    ocas = [oca("e1", stored_titles=frozenset({"t2"})), oca("e2", stored_titles=frozenset({"t1"})),
            oca("x1", "ixp", None, address="198.19.1.10")]  # x1: titles unknown -> not a miss
    ranked = rank(VIEWER, "t1", ocas, VIEW, ORIGIN, NOW)
    assert names(ranked) == ["e2", "x1", "e1", "origin"]
    assert ranked[2].reason["content_miss"] and ranked[2].reason["why"] == "content_miss"


def test_an_oca_short_of_the_needed_objects_is_a_content_miss():
    # e1 is nearer but holds 29 of the 30 objects a session needs (e.g. 3 rungs x 10 segments)
    ocas = [oca("e1", title_objects={"t1": 29}, stored_titles=frozenset({"t1"})),
            oca("e2", title_objects={"t1": 30, "t2": 5})]
    ranked = rank(VIEWER, "t1", ocas, VIEW, ORIGIN, NOW, need_objects=30)
    assert names(ranked) == ["e2", "e1", "origin"]
    assert ranked[1].reason["content_miss"] and ranked[1].reason["why"] == "content_miss"
    assert not ranked[0].reason["content_miss"]
    # a shorter session needs fewer: both hold enough, nearest first
    assert names(rank(VIEWER, "t1", ocas, VIEW, ORIGIN, NOW, need_objects=29)) == ["e1", "e2", "origin"]
    # a title an OCA holds nothing of is a miss, however small the need
    assert names(rank(VIEWER, "t2", ocas, VIEW, ORIGIN, NOW, need_objects=1)) == ["e2", "e1", "origin"]


def test_without_need_or_counts_the_stored_titles_rule_applies():
    ocas = [oca("e1", title_objects={"t1": 1}, stored_titles=frozenset({"t1"})),
            oca("e2", title_objects={"t1": 99}, stored_titles=frozenset({"t2"}))]
    # need unknown: one stored segment is enough (e1 hit), counts are not used (e2 miss by titles)
    ranked = rank(VIEWER, "t1", ocas, VIEW, ORIGIN, NOW)
    assert names(ranked) == ["e1", "e2", "origin"] and ranked[1].reason["content_miss"]
    # counts unknown: stored_titles decides even with a need
    plain = [oca("e1", stored_titles=frozenset({"t1"})), oca("e2", stored_titles=frozenset({"t2"}))]
    assert names(rank(VIEWER, "t1", plain, VIEW, ORIGIN, NOW, need_objects=30)) == ["e1", "e2", "origin"]
    # nothing known of the content: never a miss
    assert names(rank(VIEWER, "t1", [oca("e1"), oca("e2")], VIEW, ORIGIN, NOW, need_objects=30)) == [
        "e1", "e2", "origin"]


def test_a_pull_through_oca_is_never_a_content_miss():
    # e1 (nearer) lacks t1 but pulls through (miss mode proxy): it serves the session, fetching
    # what it lacks; e2 lacks t1 and answers content misses: below the hit x1
    ocas = [oca("e1", title_objects={"t2": 30}, stored_titles=frozenset({"t2"}), pulls_through=True),
            oca("e2", title_objects={"t2": 30}, stored_titles=frozenset({"t2"})),
            oca("x1", "ixp", None, address="198.19.1.10", title_objects={"t1": 30})]
    ranked = rank(VIEWER, "t1", ocas, VIEW, ORIGIN, NOW, need_objects=30)
    assert names(ranked) == ["e1", "x1", "e2", "origin"]
    assert not ranked[0].reason["content_miss"] and ranked[2].reason["content_miss"]


def test_pulls_through_is_read_from_the_health_miss_mode():
    from contracts.steering import pulls_through_of
    assert pulls_through_of({"miss_mode": "proxy"})
    assert not any(pulls_through_of(h) for h in ({"miss_mode": "content_miss"}, {"miss_mode": "redirect"},
                                                 {}, None, {"miss_mode": ["proxy"]}))


def test_content_verdict_and_title_objects_parsing():
    c = Candidate("e1", "embedded", PathMetrics(1, 1.0), NOW, title_objects={"t1": 3},
                  stored_titles=("t1",))
    assert content_verdict(c, None, 1) == "unknown"  # anycast: never a miss
    assert [content_verdict(c, "t1", n) for n in (2, 3, 4)] == ["hit", "hit", "miss"]
    assert content_verdict(c, "t2", None) == "miss" and content_verdict(c, "t1", None) == "hit"
    assert content_verdict(Candidate("e", "embedded", None, NOW), "t1", 3) == "unknown"
    pull = Candidate("e1", "embedded", PathMetrics(1, 1.0), NOW, title_objects={}, pulls_through=True)
    assert content_verdict(pull, "t1", 3) == "pull" and content_verdict(pull, None, 3) == "unknown"
    assert title_objects_of({"title_objects": {"t1": 3, "t2": 0}}) == {"t1": 3, "t2": 0}
    for bad in ([["t1", 3]], {"t1": -1}, {"t1": 1.5}, {"t1": True}, {"t1": "3"}, {1: 3}, None):
        assert title_objects_of({"title_objects": bad}) is None, bad
    assert title_objects_of({}) is None and title_objects_of(None) is None


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "30"])
def test_bad_need_objects_is_named(bad):
    with pytest.raises(ValueError, match="need_objects"):
        rank(VIEWER, "t1", [oca("e1")], VIEW, ORIGIN, NOW, need_objects=bad)


@pytest.mark.parametrize("bad", [
    {"heartbeat_s": None}, {"heartbeat_s": NOW - STALE_AFTER_S - 0.1}, {"status": "draining"}])
def test_health_miss_goes_below_origin(bad):
    ranked = rank(VIEWER, "t1", [oca("e1", **bad), oca("e2")], VIEW, ORIGIN, NOW)
    assert names(ranked) == ["e2", "origin", "e1"]
    assert ranked[-1].reason["health_miss"] and ranked[-1].reason["group"] == 4


def test_fresh_heartbeat_at_the_limit_is_healthy():
    ranked = rank(VIEWER, "t1", [oca("e1", heartbeat_s=NOW - STALE_AFTER_S)], VIEW, ORIGIN, NOW)
    assert names(ranked) == ["e1", "origin"]


def test_fail_static_judges_heartbeats_at_the_last_push_until_the_monitor_is_dead():
    pushed = NOW - 3.0  # the monitor has not pushed for 3 s (starved of CPU)
    ocas = [oca("e1", heartbeat_s=pushed - 0.25), oca("e2", heartbeat_s=pushed - STALE_AFTER_S - 0.5)]
    ranked = rank(VIEWER, "t1", ocas, VIEW, ORIGIN, NOW, pushed_s=pushed)
    # e1 answered the last probe round: still usable; e2 had been silent while others answered
    assert names(ranked) == ["e1", "origin", "e2"] and ranked[-1].reason["why"] == "stale_heartbeat:3.5s"
    # without the push time every heartbeat is judged at now: both stale
    assert names(rank(VIEWER, "t1", ocas, VIEW, ORIGIN, NOW)) == ["origin", "e1", "e2"]
    # no push for longer than MONITOR_DEAD_S: the monitor is dead, heartbeats are judged at now
    dead = rank(VIEWER, "t1", ocas, VIEW, ORIGIN, pushed + MONITOR_DEAD_S + 0.1, pushed_s=pushed)
    assert names(dead)[0] == "origin"


def test_oca_without_path_is_a_health_miss():
    ranked = rank(VIEWER, "t1", [oca("e9")], VIEW, ORIGIN, NOW)
    assert names(ranked) == ["origin", "e9"] and ranked[1].reason["why"] == "no_path"


def test_load_threshold_only_in_load_aware_policy():
    ocas = [oca("e1", load=0.95), oca("e2", load=0.2), oca("x1", "ixp", None, address="198.19.1.10")]
    assert names(rank(VIEWER, "t1", ocas, VIEW, ORIGIN, NOW)) == ["e1", "e2", "x1", "origin"]
    ranked = rank(VIEWER, "t1", ocas, VIEW, ORIGIN, NOW, policy="load_aware", load_threshold=0.9)
    assert names(ranked) == ["e2", "x1", "e1", "origin"]
    assert ranked[2].reason["overloaded"] and ranked[2].reason["why"] == "overloaded"
    # below the threshold, load_aware prefers the less loaded of equally near OCAs
    ocas = [oca("e1", load=0.5), oca("e2", load=0.1)]
    assert names(rank(VIEWER, "t1", ocas, VIEW, ORIGIN, NOW, policy="load_aware")) == ["e2", "e1", "origin"]


def test_ties_are_broken_by_name_and_input_order_does_not_matter():
    view = {"b": PathMetrics(1, 6.0), "a": PathMetrics(1, 6.0), "c": PathMetrics(1, 6.0), "origin": None}
    ocas = [oca("c"), oca("a"), oca("b")]
    first = names(rank(VIEWER, "t1", ocas, view, ORIGIN, NOW))
    assert first == ["a", "b", "c", "origin"]
    assert names(rank(VIEWER, "t1", ocas[::-1], view, ORIGIN, NOW)) == first


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="unknown steering policy 'fastest'"):
        rank(VIEWER, "t1", [], VIEW, ORIGIN, NOW, policy="fastest")
    with pytest.raises(ValueError, match="load must be"):
        oca("e1", load=1.5)
    with pytest.raises(ValueError, match="tier"):
        OcaState("e1", "origin", "198.18.1.100")
    with pytest.raises(ValueError):
        rank("not-an-ip", "t1", [], VIEW, ORIGIN, NOW)


def test_network_view_from_metro_plan():
    plan = metro()
    view = network_view(plan, VIEWER, {"i1oca1": "198.18.1.100", "nfxoca1": "198.19.1.10",
                                       "origin": "198.19.10.11", "i2oca1": "198.18.2.100"})
    p = dict(plan.params)
    access, lan = p["access_delay_ms"], p["lan_delay_ms"]
    assert view["i1oca1"] == PathMetrics(1, 2 * (access + lan))  # access + OCA link, both ways
    assert view["nfxoca1"].hops == 3  # i1br, nfxr, nfxoca1
    # access, ISP LAN to border, border to IXP, IXP to site router, site LAN in and out
    assert view["nfxoca1"].rtt_ms == pytest.approx(
        2 * (access + p["internal_delay_ms"] + p["peering_delay_ms"] + 3 * lan))
    assert view["origin"].hops > view["nfxoca1"].hops
    assert view["i1oca1"].rtt_ms < view["nfxoca1"].rtt_ms < view["origin"].rtt_ms
    assert path_delay_ms(plan, "i1br", "198.19.0.250") == pytest.approx(7 + lan)  # border -> IXP -> site router
