"""metro with `routing="bgp"`: FRR on every router, one shared network. The RIBs read from
zebra and bgpd equal the static plan (so hop counts match), best paths are valley-free, peering
wins over transit, no valley export happens; the IXP peering going down moves isp1 to transit
and back. Times are printed (benchmark figures), never asserted."""
import json
import os
import time

import pytest

from emulation.probes import traceroute
from topologies import bgp

pytestmark = [pytest.mark.emulation,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root (namespaces, OVS)")]

WAIT_S = 60.0  # generous: a busy 2-core machine; the measured figure is printed


@pytest.fixture(scope="module")
def net():
    from emulation.build import Network, Options
    from emulation.frr import missing
    from topologies.catalog import metro
    if missing():
        pytest.skip(missing())
    with Network(metro(), Options(verify=False, label="bgptest", routing="bgp")) as n:
        print(f"\nBGP: sessions Established {n.timings_s['bgp_sessions']:.2f} s after the daemons "
              f"started, routes equal the plan after {n.timings_s['bgp_convergence']:.2f} s; "
              f"{n.bgp.drops_at_ready} session drops by then")
        yield n


def _kernel_bgp_routes(net, router: str) -> dict[str, str]:
    out = net.nodes[router].cmd("ip -j route show proto bgp")
    return {r["dst"]: r["gateway"] for r in json.loads(out or "[]")}


def _domain_path(plan, asn_path: list[int]) -> list[str]:
    by_asn = {v: k for k, v in bgp.asns(plan).items()}
    return [by_asn[a] for a in asn_path]


def test_kernel_routes_equal_the_static_plan(net):
    want = bgp.expected_routes(net.plan)
    assert net.bgp.ribs() == want
    for r in net.bgp.routers:
        assert _kernel_bgp_routes(net, r) == want[r], r
        # the static routes the gate ran on are gone: every gateway route is BGP's
        every = json.loads(net.nodes[r].cmd("ip -j route show") or "[]")
        assert [x for x in every if "gateway" in x and x.get("protocol") != "bgp"] == [], r
    # so the hop counts are the plan's: isp1 -> cloud is border, transit, cloud, origin
    origin = net.plan.primary_ip("origin")
    assert traceroute(net, "i1v1", origin) == ["198.18.1.1", "198.19.2.254", "198.19.2.253", origin]


def test_best_paths_are_valley_free(net):
    checked = 0
    for dom, r in bgp.routers_by_domain(net.plan).items():
        for prefix, path in bgp.best_as_paths(net.bgp.vtysh_json(r, "show bgp ipv4 unicast")).items():
            if path:
                assert bgp.valley_free(net.plan.as_links, [dom, *_domain_path(net.plan, path)]), (r, prefix, path)
                checked += 1
    assert checked >= len(bgp.sessions(net.plan))


def _paths(net, router: str, prefix: str) -> list[dict]:
    return net.bgp.vtysh_json(router, f"show bgp ipv4 unicast {prefix}").get("paths", [])


def test_peering_is_preferred_over_transit(net):
    paths = _paths(net, "i1br", "198.18.2.0/24")
    by_hop = {p["nexthops"][0]["ip"]: p for p in paths}
    assert set(by_hop) == {"198.19.0.2", "198.19.2.254"}  # learned both ways
    peer, transit = by_hop["198.19.0.2"], by_hop["198.19.2.254"]
    assert peer["bestpath"]["overall"] and "bestpath" not in transit
    assert peer["locPrf"] > transit["locPrf"]


def test_no_valley_exports(net):
    asn = bgp.asns(net.plan)
    # transit hears isp2's prefix only from isp2: isp1 and isp3 keep peer routes from their provider
    assert [p["aspath"]["string"] for p in _paths(net, "trr", "198.18.2.0/24")] == [str(asn["isp2"])]
    # the cloud hears isp1 only over transit: Netflix does not pass a peer's route to its peer
    assert [p["aspath"]["string"] for p in _paths(net, "cldr", "198.18.1.0/24")] == \
        [f"{asn['transit']} {asn['isp1']}"]


def test_vtysh_in_a_router_shell(net):
    out = net.nodes["i1br"].cmd("vtysh -c 'show bgp summary'")
    assert "i2br (peer)" in out and "trr (provider)" in out


def test_ixp_peering_down_moves_isp1_to_transit_and_back(net):
    plan = net.plan
    lk = next(lk.name for lk in plan.links if lk.cls == "peering" and "i1br" in (lk.a.node, lk.b.node))
    kept = [x for x in plan.as_links if x not in bgp.as_links_over(plan, lk)]
    dst = plan.primary_ip("i2v1")
    net.link_down(lk)
    t0 = time.monotonic()
    try:
        down_s = net.bgp.wait_routes(bgp.expected_routes(plan, kept), t0, WAIT_S, "link_down")
        assert _kernel_bgp_routes(net, "i1br")["198.18.2.0/24"] == "198.19.2.254"
        assert "198.19.2.254" in traceroute(net, "i1v1", dst)  # traffic crosses the transit router
    finally:
        net.link_up(lk)
    t1 = time.monotonic()
    up_s = net.bgp.wait_routes(bgp.expected_routes(plan), t1, WAIT_S, "link_up")
    assert traceroute(net, "i1v1", dst) == ["198.18.1.1", "198.19.0.2", dst]
    print(f"\nBGP convergence: IXP peering down -> on transit {down_s:.2f} s; up -> back {up_s:.2f} s")
    assert net.bgp.session_drops() > net.bgp.drops_at_ready  # the outage was a BGP event


def test_daemons_and_their_folder_are_in_the_ledger(net):
    entries = net.ledger.entries
    assert str(net.bgp.dir) in entries["dirs"]
    labels = {p["label"] for p in entries["procs"]}
    assert {f"{d}:{r}" for d in bgp.DAEMONS for r in net.bgp.routers} <= labels
