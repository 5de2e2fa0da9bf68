"""metro with `routing="bgp"`: FRR on every router, a receive-only speaker on every OCA and the
IXP route server, one shared network with the services of the embedded arm. The IXP members
peer through the route server, which passes routes transparently (next hop and AS path of the
announcing member); a route server made to prepend is flagged. The RIBs read from zebra and bgpd
equal the static plan (so hop counts match), best paths are valley-free, peering wins over
transit, no valley export happens; the IXP peering going down moves isp1 to transit (and off
the IXP OCA) and back; an ISP withdrawing its prefix from its OCA ranks that OCA out of the next
manifest, and re-announcing brings it back. Times are printed (benchmark figures), never
asserted."""
import json
import os
import subprocess
import sys
import time
import urllib.request

import pytest

from emulation.probes import traceroute
from topologies import bgp

pytestmark = [pytest.mark.emulation,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root (namespaces, OVS)")]

WAIT_S = 60.0  # generous: a busy 2-core machine; the measured figure is printed


I1 = "198.18.1.0/24"
# Runs in a viewer: log in, fetch one manifest, print its PATHWAY-PRIORITY as JSON.
MANIFEST = r"""
import http.client, json, sys
c = http.client.HTTPConnection(sys.argv[1], int(sys.argv[2]), timeout=5)
c.request("POST", "/login", json.dumps({"account": "bgptest"}), {"Content-Type": "application/json"})
tok = json.loads(c.getresponse().read())["account_token"]
c.request("GET", "/play/t0001?segments=1", headers={"Authorization": "Bearer " + tok})
print(json.dumps(json.loads(c.getresponse().read())["steering"]["PATHWAY-PRIORITY"]))
"""


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    from emulation.build import Network, Options
    from emulation.frr import missing
    from harness.services import ServiceOptions, Services
    from topologies.catalog import metro
    if missing():
        pytest.skip(missing())
    with Network(metro(), Options(verify=False, label="bgptest", routing="bgp")) as n:
        print(f"\nBGP: sessions Established {n.timings_s['bgp_sessions']:.2f} s after the daemons "
              f"started, routes equal the plan after {n.timings_s['bgp_convergence']:.2f} s, OCAs "
              f"learned their prefixes after {n.timings_s['bgp_oca_routes']:.2f} s; "
              f"{n.bgp.drops_at_ready} session drops by then")
        svc = Services(n, tmp_path_factory.mktemp("bgpmetro"), ServiceOptions(
            arm="embedded", catalog={"seed": 1, "n_titles": 5, "duration_s": 20}, capacity_mb=50,
            miss="proxy"))
        try:
            svc.start()
            yield n, svc
        finally:
            svc.stop()


@pytest.fixture(scope="module")
def net(env):
    return env[0]


def _api(net, path: str):
    with urllib.request.urlopen(net.api_url + path, timeout=5) as r:
        return json.loads(r.read())


def _manifest_ranking(net, svc, viewer: str) -> list[str]:
    host, port = svc.control_url.split("//")[1].split(":")
    p = net.host(viewer).popen([sys.executable, "-c", MANIFEST, host, port],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = p.communicate(timeout=30)
    assert p.returncode == 0, err.decode()[-800:]
    return json.loads(out)


def _wait_ranking(net, svc, viewer: str, pred, what: str) -> tuple[list[str], float]:
    t0 = time.monotonic()
    while True:
        ranked = _manifest_ranking(net, svc, viewer)
        if pred(ranked):
            return ranked, time.monotonic() - t0
        assert time.monotonic() - t0 < WAIT_S, f"{what}: manifest still ranks {ranked}"
        time.sleep(0.1)


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
    assert "ixprs (rs peer)" in out and "trr (provider)" in out
    assert "i1br (rs-client)" in net.nodes["ixprs"].cmd("vtysh -c 'show bgp summary'")


# ---- the IXP route server ------------------------------------------------------------------
def _summary_peers(net, speaker: str) -> set[str]:
    return bgp.established(net.bgp.vtysh_json(speaker, "show bgp ipv4 unicast summary"))


def test_route_server_has_a_session_with_every_member_and_they_none_with_each_other(net):
    rs = bgp.route_server(net.plan)
    assert net.bgp.route_server == rs.node
    assert _summary_peers(net, rs.node) == {addr for _, addr in rs.clients}
    fabric = {addr for _, addr in rs.clients}
    for member, _ in rs.clients:
        have = _summary_peers(net, member)
        assert rs.addr in have and not have & fabric, (member, have)  # no bilateral IXP session


def test_members_learn_each_other_through_the_route_server_transparently(net):
    rs = bgp.route_server(net.plan)
    for member, _ in rs.clients:
        assert bgp.rs_route_problems(net.plan, member, net.bgp.vtysh_json(member, "show bgp ipv4 unicast")) == []
    # isp2's prefix at isp1: from the route server, next hop isp2's fabric port, AS path isp2 alone
    via_rs = [p for p in _paths(net, "i1br", "198.18.2.0/24") if p["peer"]["peerId"] == rs.addr]
    assert [(p["nexthops"][0]["ip"], p["aspath"]["string"]) for p in via_rs] == \
        [("198.19.0.2", str(bgp.asns(net.plan)["isp2"]))]
    assert via_rs[0]["bestpath"]["overall"]


def test_steering_reads_what_the_ocas_learned(env):
    net, svc = env
    for k in (1, 2, 3):
        ranked, _ = _wait_ranking(net, svc, f"i{k}v1", lambda r: r[0] == f"i{k}oca1", f"isp{k} on its OCA")
        assert ranked == [f"i{k}oca1", "nfxoca1", "origin"]
        locs = _api(net, f"/rank?viewer=198.18.{k}.10")["locations"]
        assert locs[0]["reason"]["bgp"] == {"prefix": f"198.18.{k}.0/24", "as_path_len": 1,
                                            "local_pref": 100, "med": 0, "origin": "IGP"}
        assert locs[1]["reason"]["bgp"]["as_path_len"] == 2  # netflix, isp


def test_withdrawing_a_prefix_from_an_oca_ranks_it_out_and_back(env):
    net, svc = env
    t0 = time.monotonic()
    net.bgp.announce_to_oca("i1oca1", I1, False)
    try:
        net.bgp.wait_oca_routes({"i1oca1": set()}, t0, WAIT_S, "oca_withdraw")
        ranked, _ = _wait_ranking(net, svc, "i1v1", lambda r: "i1oca1" not in r, "withdrawn")
        withdraw_s = time.monotonic() - t0
        assert ranked == ["nfxoca1", "origin"]
        assert {o["name"]: o["status"] for o in _api(net, "/ocas")["ocas"]}["i1oca1"] == "ok"  # alive
        assert _manifest_ranking(net, svc, "i2v1")[0] == "i2oca1"  # other ISPs unaffected
    finally:
        t1 = time.monotonic()
        net.bgp.announce_to_oca("i1oca1", I1, True)
    net.bgp.wait_oca_routes({"i1oca1": {I1}}, t1, WAIT_S, "oca_announce")
    ranked, _ = _wait_ranking(net, svc, "i1v1", lambda r: r[0] == "i1oca1", "re-announced")
    print(f"\nBGP steering: prefix withdrawn -> OCA out of the manifest {withdraw_s:.2f} s; "
          f"re-announced -> back {time.monotonic() - t1:.2f} s")
    assert ranked == ["i1oca1", "nfxoca1", "origin"]


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
        # Netflix hears isp1 no more at the IXP (the cloud keeps its transit route to itself),
        # so the IXP OCA is withdrawn isp1's viewers
        net.bgp.wait_oca_routes({"nfxoca1": {"198.18.2.0/24", "198.18.3.0/24"}}, t0, WAIT_S, "ixp_oca_down")
    finally:
        net.link_up(lk)
    t1 = time.monotonic()
    up_s = net.bgp.wait_routes(bgp.expected_routes(plan), t1, WAIT_S, "link_up")
    assert traceroute(net, "i1v1", dst) == ["198.18.1.1", "198.19.0.2", dst]
    print(f"\nBGP convergence: IXP peering down -> on transit {down_s:.2f} s; up -> back {up_s:.2f} s")
    assert net.bgp.session_drops() > net.bgp.drops_at_ready  # the outage was a BGP event


def test_a_route_server_that_prepends_is_flagged(net):
    """The RIB check can fail: the route server made non-transparent for isp1 (its ASN enters
    isp1's paths) is flagged, and made transparent again is clean."""
    rs = bgp.route_server(net.plan)
    i1 = dict(rs.clients)["i1br"]
    plan, t0 = net.plan, time.monotonic()

    def problems():
        return bgp.rs_route_problems(plan, "i1br", net.bgp.vtysh_json("i1br", "show bgp ipv4 unicast"))

    def toggle(on: bool) -> None:
        net.bgp.vtysh(rs.node, "\n".join(["configure terminal", f"router bgp {rs.asn}", "address-family ipv4 unicast",
                                          f"{'' if on else 'no '}neighbor {i1} route-server-client", "end",
                                          f"clear bgp ipv4 unicast {i1} soft out"]))
    toggle(False)
    try:
        while not any(f"route server's AS{rs.asn}" in p for p in problems()):
            assert time.monotonic() - t0 < WAIT_S, f"prepending not seen: {problems()}"
            time.sleep(0.1)
    finally:
        toggle(True)
    while problems():
        assert time.monotonic() - t0 < WAIT_S, problems()
        time.sleep(0.1)
    net.bgp.wait_routes(bgp.expected_routes(plan), t0, WAIT_S, "rs_transparent_again")
    net.bgp.wait_oca_routes({o: set(s.prefixes) for o, s in net.bgp.oca_sessions.items()}, t0, WAIT_S,
                            "rs_transparent_again_ocas")


def test_daemons_and_their_folder_are_in_the_ledger(net):
    entries = net.ledger.entries
    assert str(net.bgp.dir) in entries["dirs"]
    labels = {p["label"] for p in entries["procs"]}
    assert {f"{d}:{r}" for d in bgp.DAEMONS for r in net.bgp.routers} <= labels
    assert {f"bgpd:{o}" for o in bgp.oca_sessions(net.plan)} <= labels
    assert f"bgpd:{net.bgp.route_server}" in labels
