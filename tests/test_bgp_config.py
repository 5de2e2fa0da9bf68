"""BGP over the plan without root: sessions, FRR configs (checked by FRR's own parser when it is
installed), the Gao-Rexford policy and the readers of vtysh JSON."""
import dataclasses
import shutil
import subprocess
from pathlib import Path

import pytest

from topologies import bgp
from topologies.catalog import MetroParams, metro
from topologies.plan import PlanError
from topologies.routes import as_routes

PLAN = metro()
BILATERAL = metro(MetroParams(route_server=0))
HAVE_FRR = shutil.which("/usr/lib/frr/bgpd") is not None


def _check_sides(plan, sides):
    mirror = {"customer": "provider", "provider": "customer", "peer": "peer"}
    by_pair = {(s.router, s.peer): s for s in sides}
    for s in sides:
        back = by_pair[(s.peer, s.router)]
        assert (back.local_addr, back.peer_addr) == (s.peer_addr, s.local_addr)
        if bgp.RS_CLIENT in (s.relation, back.relation):  # a member takes the route server as a peer
            assert {s.relation, back.relation} == {"peer", bgp.RS_CLIENT}
        else:
            assert back.relation == mirror[s.relation]
        assert plan.owner_of(s.peer_addr) == s.peer


def test_without_a_route_server_every_as_link_is_one_session_each_side_on_a_shared_subnet():
    ss = bgp.sessions(BILATERAL)
    sides = [s for lst in ss.values() for s in lst]
    assert len(sides) == 2 * len(BILATERAL.as_links) and bgp.route_server(BILATERAL) is None
    _check_sides(BILATERAL, sides)
    # ISPs reach each other and Netflix over the IXP fabric, and their provider over the transit LAN
    i1 = {s.peer: (s.peer_addr, s.relation) for s in ss["i1br"]}
    assert i1 == {"i2br": ("198.19.0.2", "peer"), "i3br": ("198.19.0.3", "peer"),
                  "nfxr": ("198.19.0.250", "peer"), "trr": ("198.19.2.254", "provider")}
    assert len(set(bgp.asns(BILATERAL).values())) == len(bgp.routers_by_domain(BILATERAL))


def test_ixp_members_peer_through_the_route_server_and_keep_the_rest_bilateral():
    rs = bgp.route_server(PLAN)
    assert (rs.node, rs.addr, rs.subnet) == ("ixprs", "198.19.0.254", "198.19.0.0/24")
    assert rs.clients == (("i1br", "198.19.0.1"), ("i2br", "198.19.0.2"), ("i3br", "198.19.0.3"),
                          ("nfxr", "198.19.0.250"))
    assert rs.asn not in bgp.asns(PLAN).values()
    ss = bgp.sessions(PLAN)
    sides = [s for lst in ss.values() for s in lst]
    _check_sides(PLAN, sides)
    fabric = [x for x in PLAN.as_links if {"isp1", "isp2", "isp3", "netflix"} >= set(x[:2])]
    assert len(fabric) == 6  # the peer mesh of three ISPs and Netflix: one session each instead
    assert len(sides) == 2 * (len(PLAN.as_links) - len(fabric)) + 2 * len(rs.clients)
    assert {s.peer: (s.peer_addr, s.relation) for s in ss["i1br"]} == {
        "ixprs": ("198.19.0.254", "peer"), "trr": ("198.19.2.254", "provider")}
    assert {s.peer: s.relation for s in ss["nfxr"]} == {"ixprs": "peer", "cldr": "peer"}  # backbone stays
    assert [(s.peer, s.relation) for s in ss["ixprs"]] == [(c, bgp.RS_CLIENT) for c, _ in rs.clients]


def test_route_server_config_is_transparent_without_policy():
    conf = bgp.render_rs_bgpd(PLAN)
    rs = bgp.route_server(PLAN)
    assert f"router bgp {rs.asn}\n" in conf
    for member, addr in rs.clients:
        asn = bgp.asns(PLAN)[PLAN.node(member).domain]
        assert f" neighbor {addr} remote-as {asn}\n" in conf
        assert f"  neighbor {addr} route-server-client\n" in conf
    assert conf.count("route-server-client\n") == len(rs.clients)
    assert "route-map" not in conf and "prepend" not in conf and "next-hop-self" not in conf
    assert "  network " not in conf  # it originates nothing


def test_route_server_refuses_members_that_do_not_all_peer():
    gap = dataclasses.replace(PLAN, as_links=tuple(x for x in PLAN.as_links if x != ("isp1", "isp2", "peer")))
    with pytest.raises(PlanError, match="isp1 and isp2 do not peer"):
        bgp.render_rs_bgpd(gap)
    with pytest.raises(PlanError, match="do not peer"):
        bgp.sessions(gap)
    paid = dataclasses.replace(PLAN, as_links=tuple(("isp1", "isp2", "customer") if x == ("isp1", "isp2", "peer")
                                                    else x for x in PLAN.as_links))
    with pytest.raises(PlanError, match="not a peer link"):
        bgp.render_rs_bgpd(paid)
    with pytest.raises(PlanError, match="no host of role"):
        bgp.render_rs_bgpd(BILATERAL)


def test_bgpd_config_of_an_isp_border():
    conf = bgp.render(PLAN, "i1br")["bgpd"]
    asn = bgp.asns(PLAN)["isp1"]
    assert f"router bgp {asn}\n" in conf
    assert "  network 198.18.1.0/24\n" in conf
    assert f" timers bgp {bgp.KEEPALIVE_S} {bgp.HOLD_S}\n" in conf
    assert "  neighbor 198.19.2.254 route-map FROM-PROVIDER in\n" in conf
    # the route server's routes are peer routes; it may send paths that start with another AS
    assert "  neighbor 198.19.0.254 route-map FROM-PEER in\n" in conf
    assert " no neighbor 198.19.0.254 enforce-first-as\n" in conf and conf.count("enforce-first-as") == 1
    assert "198.19.0.2 " not in conf  # no bilateral session with another member
    # an ISP has no customers: everything it sends goes through the valley filter
    assert "route-map TO-CUSTOMER out" not in conf
    assert conf.count("route-map TO-PEER-OR-PROVIDER out") == 2
    assert bgp.render(BILATERAL, "i1br")["bgpd"].count("route-map TO-PEER-OR-PROVIDER out") == 4
    assert f"permit {asn}:{bgp.TAG['peer']}" in conf and f"permit {asn}:{bgp.TAG['provider']}" in conf
    trr = bgp.render(PLAN, "trr")["bgpd"]
    assert trr.count("route-map TO-CUSTOMER out") == 4 and "  network " not in trr


def test_daemon_files_stay_in_the_routers_folder(tmp_path):
    for d in bgp.DAEMONS:
        argv = bgp.daemon_argv(tmp_path, "i1br", d)
        paths = [a.split(":", 1)[-1] for a in argv if "/" in a and not a.startswith("/usr/lib/frr")]
        assert paths and all(Path(p).is_relative_to(tmp_path / "i1br") for p in paths)


def _dry_run(tmp_path, text: str) -> str:
    conf = tmp_path / "bgpd.conf"
    conf.write_text(text)
    r = subprocess.run(["/usr/lib/frr/bgpd", "-C", "-S", "-f", str(conf), "-i", str(tmp_path / "pid"),
                        "-z", str(tmp_path / "zapi"), "--vty_socket", str(tmp_path), "-P", "0"],
                       capture_output=True, text=True, timeout=30)
    return r.stdout + r.stderr


def _config_errors(out: str) -> list[str]:
    return [ln for ln in out.splitlines() if "No such command" in ln or "Unknown command" in ln
            or ("Error" in ln and "config" in ln)]


@pytest.mark.skipif(not HAVE_FRR, reason="FRR not installed (sudo make setup)")
def test_frr_parses_every_rendered_config(tmp_path):
    for plan in (PLAN, BILATERAL):
        for r in bgp.routers_by_domain(plan).values():
            assert _config_errors(_dry_run(tmp_path, bgp.render(plan, r)["bgpd"])) == [], r
    assert _config_errors(_dry_run(tmp_path, bgp.render_rs_bgpd(PLAN))) == []
    # the check can fail: a typo is reported
    bad = bgp.render(PLAN, "i1br")["bgpd"].replace("timers bgp", "timerz bgp")
    assert _config_errors(_dry_run(tmp_path, bad))


def test_valley_free_rule():
    links = PLAN.as_links
    assert bgp.valley_free(links, ["isp1", "transit", "cloud"])        # up, down
    assert bgp.valley_free(links, ["isp1", "isp2"])                    # peer
    assert bgp.valley_free(links, ["cloud", "transit", "isp1"])        # up, down
    assert not bgp.valley_free(links, ["isp1", "isp2", "transit"])     # peer then up
    assert not bgp.valley_free(links, ["isp1", "netflix", "cloud"])    # two peer steps
    assert not bgp.valley_free(links, ["transit", "isp1", "isp2"])     # down then peer
    with pytest.raises(PlanError):
        bgp.valley_free(links, ["isp1", "cloud"])


def test_the_static_plan_that_bgp_must_match_is_valley_free_and_prefers_peering():
    routers = bgp.routers_by_domain(PLAN)
    best = as_routes(PLAN.as_links, sorted(routers))
    for dom, table in best.items():
        for r in table.values():
            assert bgp.valley_free(PLAN.as_links, [dom, *r.path])
    want = bgp.expected_routes(PLAN)
    assert want["i1br"]["198.18.2.0/24"] == "198.19.0.2"       # peer over transit
    assert want["i1br"]["198.19.10.0/24"] == "198.19.2.254"    # the cloud through the transit router
    assert "198.18.1.0/24" not in want["cldr"] or want["cldr"]["198.18.1.0/24"] == "198.19.2.254"


def test_expected_routes_without_the_ixp_peering():
    lk = next(lk.name for lk in PLAN.links if lk.cls == "peering" and "i1br" in (lk.a.node, lk.b.node))
    down = bgp.as_links_over(PLAN, lk)
    assert sorted(down) == [("isp1", "isp2", "peer"), ("isp1", "isp3", "peer"), ("isp1", "netflix", "peer")]
    want = bgp.expected_routes(PLAN, [x for x in PLAN.as_links if x not in down])
    assert want["i1br"] == {"198.18.2.0/24": "198.19.2.254", "198.18.3.0/24": "198.19.2.254",
                            "198.19.10.0/24": "198.19.2.254"}
    assert "198.18.1.0/24" not in want["nfxr"]  # Netflix's peer (cloud) does not re-export it
    assert bgp.as_links_over(BILATERAL, lk) == down  # the same AS links, bilateral or through the RS
    rs_port = next(lk.name for lk in PLAN.links if "ixprs" in (lk.a.node, lk.b.node))
    assert len(bgp.as_links_over(PLAN, rs_port)) == 6  # the route server down: every IXP peering
    with pytest.raises(PlanError):
        bgp.as_links_over(PLAN, "nope")


def test_readers_of_vtysh_json():
    summary = {"ipv4Unicast": {"peers": {"198.19.0.2": {"state": "Established"},
                                         "198.19.0.3": {"state": "Active"}}}}
    assert bgp.established(summary) == {"198.19.0.2"}
    assert bgp.established({"peers": {"1.2.3.4": {"state": "Established"}}}) == {"1.2.3.4"}
    assert bgp.drops({"ipv4Unicast": {"peers": {"a": {"connectionsDropped": 2}, "b": {}}}}) == 2
    routes = {"198.18.2.0/24": [{"protocol": "bgp", "selected": True, "installed": True,
                                 "nexthops": [{"ip": "198.19.0.2", "active": True}]}],
              "198.18.4.0/24": [{"protocol": "bgp", "selected": True,  # not yet in the kernel
                                 "nexthops": [{"ip": "198.19.0.4", "active": True}]}],
              "198.18.1.0/24": [{"protocol": "connected", "selected": True, "nexthops": [{"active": True}]}],
              "198.18.3.0/24": [{"protocol": "bgp", "nexthops": [{"ip": "198.19.2.254", "active": True}]}]}
    assert bgp.bgp_routes(routes) == {"198.18.2.0/24": "198.19.0.2"}
    assert bgp.rib_diff({"a": "x"}, {"a": "x"}) == []
    assert bgp.rib_diff({"a": "x", "b": "y"}, {"a": "z"}) == ["a: want via x, have via z",
                                                              "b: want via y, have via None"]
    table = {"routes": {"198.18.2.0/24": [{"bestpath": True, "path": "65003"}, {"path": "65006 65003"}]}}
    assert bgp.best_as_paths(table) == {"198.18.2.0/24": [65003]}


def test_unknown_routing_mode_is_a_clear_error():
    from emulation.build import Network, Options
    from emulation.linkemu import EmulationError
    with pytest.raises(EmulationError, match="routing: 'ospf'"):
        Network(PLAN, Options(routing="ospf"))


def test_topo_show_lists_the_sessions():
    from ocalab.topo_show import describe
    text = describe(PLAN)
    assert "  i1br   AS65002: ixprs 198.19.0.254 AS64512 peer, trr 198.19.2.254 AS65006 provider" in text
    assert "  ixprs  AS64512: i1br 198.19.0.1 AS65002 rs-client, i2br 198.19.0.2 AS65003 rs-client, " \
           "i3br 198.19.0.3 AS65004 rs-client, nfxr 198.19.0.250 AS65005 rs-client" in text
    assert "  route server ixprs on 198.19.0.0/24: transparent (route-server-client) for i1br, i2br, " \
           "i3br, nfxr" in text
    assert "-> ixprs" not in text  # no data path to it
    assert "  i1br   AS65002: i2br 198.19.0.2 AS65003 peer, i3br 198.19.0.3 AS65004 peer, " \
           "nfxr 198.19.0.250 AS65005 peer, trr 198.19.2.254 AS65006 provider" in describe(BILATERAL)


def test_cli_banner_shows_vtysh_only_with_bgp():
    from ocalab.labcli import banner
    with_bgp = banner(PLAN, {"routing": "bgp"}, "none", {}, None)
    assert "  i1br vtysh -c 'show bgp summary'" in with_bgp
    assert "  ixprs vtysh -c 'show bgp summary'    # the IXP route server" in with_bgp
    assert not any("vtysh" in ln for ln in banner(PLAN, {"routing": "static"}, "none", {}, None))


def _rs_table(paths_of_prefix: dict) -> dict:
    """`show bgp ipv4 unicast json` of a member, with only the fields the check reads."""
    return {"routes": {p: [{"peerId": peer, "path": path, "nexthops": [{"ip": hop}]} for peer, hop, path in paths]
                       for p, paths in paths_of_prefix.items()}}


def test_rib_check_of_what_a_member_learns_through_the_route_server():
    asn, rs = bgp.asns(PLAN), "198.19.0.254"
    good = {"198.18.2.0/24": [(rs, "198.19.0.2", f"{asn['isp2']}")],
            "198.18.3.0/24": [(rs, "198.19.0.3", f"{asn['isp3']}")],
            "198.19.1.0/24": [(rs, "198.19.0.250", f"{asn['netflix']}")],
            "198.19.10.0/24": [("198.19.2.254", "198.19.2.254", f"{asn['transit']} {asn['cloud']}")]}
    assert bgp.rs_route_problems(PLAN, "i1br", _rs_table(good)) == []
    # the check can fail: a prepending route server, a next hop at the route server, a missing
    # member, and a member that exports what it learned from its provider (a valley)
    prepended = {**good, "198.18.2.0/24": [(rs, "198.19.0.2", f"{bgp.RS_ASN} {asn['isp2']}")]}
    assert any(f"AS{bgp.RS_ASN}" in p for p in bgp.rs_route_problems(PLAN, "i1br", _rs_table(prepended)))
    hop_self = {**good, "198.18.3.0/24": [(rs, rs, f"{asn['isp3']}")]}
    assert bgp.rs_route_problems(PLAN, "i1br", _rs_table(hop_self))[0].startswith("198.18.3.0/24 of i3br")
    missing = {k: v for k, v in good.items() if k != "198.19.1.0/24"}
    assert len(bgp.rs_route_problems(PLAN, "i1br", _rs_table(missing))) == 1
    valley = {**good, "198.19.10.0/24": [(rs, "198.19.0.2", f"{asn['isp2']} {asn['transit']} {asn['cloud']}")]}
    assert "a valley" in bgp.rs_route_problems(PLAN, "i1br", _rs_table(valley))[0]
    with pytest.raises(PlanError):
        bgp.rs_route_problems(PLAN, "trr", _rs_table(good))


def test_every_neighbor_description_fits_the_summary_column():
    """`show bgp summary` cuts a description of 20 characters or more at its last space."""
    confs = [bgp.render(PLAN, r)["bgpd"] for r in bgp.routers_by_domain(PLAN).values()] + [bgp.render_rs_bgpd(PLAN)]
    descs = [ln.split(" description ", 1)[1] for c in confs for ln in c.splitlines() if " description " in ln]
    assert "ixprs (rs peer)" in descs and "i1br (rs-client)" in descs
    assert [d for d in descs if len(d) >= 20] == []
