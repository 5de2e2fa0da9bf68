"""OCAs learn the viewers they serve over BGP, without root: the sessions and configs rendered
from the plan (checked by FRR's parser), the reader of what a speaker learned, and steering by
longest-prefix match and BGP's decision order in the one ranker, the controller and the
control plane's fallback. Under static routing (no learned routes) nothing changes."""
import shutil

import pytest

from appliances.control_health import HealthRegistry
from appliances.steering_local import LocalSteering
from contracts.deployment import parse_deployment
from contracts.steering import (LearnedRoute, bgp_key, bgp_match, bgp_serves, learned_routes_of,
                                rank_candidates, routes_from_frr, Candidate, PathMetrics)
from controller.steering import OcaState, Origin, rank
from topologies import bgp
from topologies.catalog import metro

PLAN = metro()
HAVE_FRR = shutil.which("/usr/lib/frr/bgpd") is not None
I1 = "198.18.1.0/24"


def test_every_oca_peers_with_its_router_and_is_announced_its_viewers():
    ss = bgp.oca_sessions(PLAN)
    assert set(ss) == {n.name for n in PLAN.nodes_of(role="oca")}
    e = ss["i1oca1"]
    assert (e.router, e.oca_addr, e.router_addr, e.prefixes) == ("i1br", "198.18.1.100", "198.18.1.1", (I1,))
    x = ss["nfxoca1"]
    assert (x.router, x.router_addr, x.prefixes) == ("nfxr", "198.19.1.1", (I1, "198.18.2.0/24", "198.18.3.0/24"))
    assert x.router_asn == bgp.asns(PLAN)["netflix"]
    oca_asns = {s.oca_asn for s in ss.values()}
    assert len(oca_asns) == len(ss) and not oca_asns & set(bgp.asns(PLAN).values())


def test_router_config_announces_the_prefix_list_and_accepts_nothing():
    conf = bgp.render(PLAN, "i1br")["bgpd"]
    assert f"ip prefix-list OCA-i1oca1 seq 5 permit {I1}\n" in conf
    assert "  neighbor 198.18.1.100 route-map TO-OCA-i1oca1 out\n" in conf
    assert "  neighbor 198.18.1.100 route-map NOTHING in\n" in conf
    assert "OCA-i2oca1" not in conf  # another ISP's OCA is not i1br's
    s = bgp.oca_sessions(PLAN)["i1oca1"]
    assert bgp.oca_prefix_list(s, I1, False) == f"ip prefix-list OCA-i1oca1 seq 5 deny {I1}"
    oca = bgp.render_oca_bgpd(PLAN, "i1oca1")
    assert "  neighbor 198.18.1.1 route-map NOTHING out\n" in oca  # receive-only


def test_oca_speaker_runs_without_zebra_or_kernel_routes(tmp_path):
    argv = bgp.speaker_argv(tmp_path, "i1oca1")
    assert "-n" in argv and "-Z" in argv and "-z" not in argv


@pytest.mark.skipif(not HAVE_FRR, reason="FRR not installed (sudo make setup)")
def test_frr_parses_every_oca_config(tmp_path):
    from tests.test_bgp_config import _config_errors, _dry_run
    for oca in bgp.oca_sessions(PLAN):
        assert _config_errors(_dry_run(tmp_path, bgp.render_oca_bgpd(PLAN, oca))) == [], oca
    bad = bgp.render_oca_bgpd(PLAN, "i1oca1").replace("route-map ACCEPT in", "route-mapp ACCEPT in")
    assert _config_errors(_dry_run(tmp_path, bad))


FRR_SHOW = {"routes": {
    I1: [{"valid": True, "bestpath": True, "path": "65004", "origin": "IGP", "metric": 0}],
    "198.18.2.0/24": [{"valid": True, "bestpath": True, "path": "65003 65005", "origin": "IGP",
                       "locPrf": 150, "metric": 7}],
    "198.18.3.0/24": [{"valid": True, "path": "65003 65006", "origin": "IGP"}]}}  # not best


def test_routes_from_frr_and_back_through_health():
    routes = routes_from_frr(FRR_SHOW)
    assert routes == [LearnedRoute(I1, 1), LearnedRoute("198.18.2.0/24", 2, 150, 7)]
    health = {"bgp_routes": [r.to_json() for r in routes]}
    assert learned_routes_of(health) == tuple(routes)
    assert learned_routes_of({"bgp_routes": []}) == ()  # a speaker that learned nothing
    assert learned_routes_of({}) is None and learned_routes_of(None) is None  # static
    for bad in ([{"prefix": "nope", "as_path_len": 1, "local_pref": 1, "med": 0, "origin": "IGP"}],
                [{"prefix": I1}], [{**routes[0].to_json(), "origin": "weird"}], "x"):
        assert learned_routes_of({"bgp_routes": bad}) is None


def test_longest_prefix_match_and_who_serves():
    wide, narrow = LearnedRoute("198.18.0.0/16", 1), LearnedRoute(I1, 1)
    assert bgp_match([wide, narrow], "198.18.1.10") == narrow
    assert bgp_match([wide, narrow], "198.18.2.10") == wide
    assert bgp_match([narrow], "198.18.2.10") is None
    assert bgp_serves(True, None, "198.18.2.10") == (True, None)  # static: the declaration
    assert bgp_serves(True, (), "198.18.1.10") == (False, None)  # learned nothing: serves none
    assert bgp_serves(False, (narrow,), "198.18.1.10") == (True, narrow)  # learned beats declared


def test_bgp_decision_order_after_the_tier():
    def c(name, tier, route, hops=1):
        return Candidate(name, tier, PathMetrics(hops, 1.0), heartbeat_s=0.0, bgp=route)
    order = lambda cs: [r.name for r in rank_candidates(None, cs, "origin", 0.0)]  # noqa: E731
    specific, wide = LearnedRoute(I1, 3), LearnedRoute("198.18.0.0/16", 1)
    assert order([c("a", "embedded", wide), c("b", "embedded", specific)]) == ["b", "a", "origin"]
    assert order([c("a", "embedded", LearnedRoute(I1, 2)), c("b", "embedded", LearnedRoute(I1, 1))])[0] == "b"
    assert order([c("a", "embedded", LearnedRoute(I1, 1, med=5)), c("b", "embedded", LearnedRoute(I1, 1))])[0] == "b"
    assert order([c("a", "embedded", LearnedRoute(I1, 1, 90)), c("b", "embedded", LearnedRoute(I1, 2))])[0] == "b"
    # the tier comes first: embedded beats the IXP whatever the route
    assert order([c("x", "ixp", specific), c("e", "embedded", wide, hops=9)])[0] == "e"
    # BGP order before hops; without routes hops decide as before
    assert order([c("a", "embedded", LearnedRoute(I1, 2), 1), c("b", "embedded", LearnedRoute(I1, 1), 5)])[0] == "b"
    assert order([c("a", "embedded", None, 1), c("b", "embedded", None, 5)])[0] == "a"
    assert bgp_key(None) == (0, 0, 0, 0, 0)


def _state(name, tier, addr, learned):
    return OcaState(name, tier, addr, (I1,), heartbeat_s=0.0, learned_routes=learned)


def test_controller_ranks_by_what_the_ocas_learned():
    emb, ixp = LearnedRoute(I1, 1), LearnedRoute(I1, 2)
    view = {"i1oca1": PathMetrics(1, 1.0), "nfxoca1": PathMetrics(3, 4.0)}
    origin = Origin("origin", "198.19.10.11")
    names = lambda ocas: [r.name for r in rank("198.18.1.10", None, ocas, view, origin, 0.0)]  # noqa: E731
    both = [_state("i1oca1", "embedded", "198.18.1.100", (emb,)), _state("nfxoca1", "ixp", "198.19.1.10", (ixp,))]
    assert names(both) == ["i1oca1", "nfxoca1", "origin"]
    assert rank("198.18.1.10", None, both, view, origin, 0.0)[0].reason["bgp"]["prefix"] == I1
    # the ISP withdrew its prefix from the embedded OCA: it is ranked out, though declared
    withdrawn = [_state("i1oca1", "embedded", "198.18.1.100", ()), both[1]]
    assert names(withdrawn) == ["nfxoca1", "origin"]
    # static routing: the declared prefixes, as before
    static = [_state("i1oca1", "embedded", "198.18.1.100", None), _state("nfxoca1", "ixp", "198.19.1.10", None)]
    assert names(static) == ["i1oca1", "nfxoca1", "origin"]


def test_control_plane_fallback_reads_bgp_routes_from_heartbeats():
    dep = parse_deployment({
        "ocas": [{"name": "i1oca1", "tier": "embedded", "url": "http://198.18.1.100:8080", "serves": [I1],
                  "distance_hops": 1, "rtt_ms": 1.0},
                 {"name": "nfxoca1", "tier": "ixp", "url": "http://198.19.1.10:8080", "serves": [I1],
                  "distance_hops": 3, "rtt_ms": 4.0}],
        "origin": {"name": "origin", "url": "http://198.19.10.11:8080", "tier": "origin"},
        "catalog": {}, "regions": {}})
    reg = HealthRegistry()
    steer = LocalSteering(dep, reg)
    route = LearnedRoute(I1, 1).to_json()
    reg.update("i1oca1", {"status": "ok", "bgp_routes": [route]}, 100.0)
    reg.update("nfxoca1", {"status": "ok", "bgp_routes": [{**route, "as_path_len": 2}]}, 100.0)
    locs = steer.rank("198.18.1.10", "t", 100.5)
    assert [x.name for x in locs] == ["i1oca1", "nfxoca1", "origin"] and locs[0].reason["bgp"]["prefix"] == I1
    reg.update("i1oca1", {"status": "ok", "bgp_routes": []}, 101.0)  # withdrawn
    assert [x.name for x in steer.rank("198.18.1.10", "t", 101.5)] == ["nfxoca1", "origin"]
    reg.update("i1oca1", {"status": "ok"}, 102.0)  # no speaker: the deployment entry again
    assert [x.name for x in steer.rank("198.18.1.10", "t", 102.5)][0] == "i1oca1"


def test_oca_takes_its_speakers_vty_folder():
    from appliances.oca import build_parser, config_from_args
    args = build_parser().parse_args(["--listen", "127.0.0.1:0", "--upstream", "http://127.0.0.1:1",
                                      "--store", "/tmp/x", "--capacity-mb", "1", "--bgp-vty", "/run/v"])
    assert config_from_args(args).bgp_vty == "/run/v"


def test_topo_show_lists_the_oca_sessions():
    from ocalab.topo_show import describe
    out = describe(PLAN)
    assert f"i1oca1   AS{bgp.oca_sessions(PLAN)['i1oca1'].oca_asn} 198.18.1.100 <- i1br 198.18.1.1: {I1}" in out
