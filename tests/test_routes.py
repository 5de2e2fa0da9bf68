"""Route policy (valley-free, customer > peer > provider) and l3_path on metro (pure; no root)."""
from __future__ import annotations

import ipaddress
import itertools

import pytest

from topologies.catalog import MetroParams, metro
from topologies.plan import ROUTE_SERVER_ROLE, PlanError
from topologies.routes import as_routes, l2_path, l3_path, path_delay_ms, relationships

IXP_NET = ipaddress.ip_network("198.19.0.0/24")
TRANSIT_ROUTER = "198.19.2.254"
CLOUD_LAN = "198.19.10.0/24"
NETFLIX_LAN = "198.19.1.0/24"


@pytest.fixture(scope="module")
def plan():
    return metro()


def routes_of(plan, node: str) -> dict[str, str]:
    return {r.dst: r.via for r in plan.routes if r.node == node}


def data_hosts(plan) -> list[str]:
    """Every host but the IXP route server (BGP only: no data traffic, no route off the fabric)."""
    return [n.name for n in plan.nodes_of(kind="host") if n.role != ROUTE_SERVER_ROLE]


# ---- metro policy --------------------------------------------------------------------------
@pytest.mark.parametrize("k", [1, 2, 3])
def test_isp_reaches_other_isps_and_netflix_over_ixp(plan, k):
    rt = routes_of(plan, f"i{k}br")
    for j in (1, 2, 3):
        if j == k:
            continue
        via = rt[f"198.18.{j}.0/24"]
        assert ipaddress.ip_address(via) in IXP_NET, (k, j, via)
        assert plan.owner_of(via) == f"i{j}br"
    assert ipaddress.ip_address(rt[NETFLIX_LAN]) in IXP_NET
    assert plan.owner_of(rt[NETFLIX_LAN]) == "nfxr"


@pytest.mark.parametrize("k", [1, 2, 3])
def test_isp_reaches_cloud_via_transit_router(plan, k):
    assert routes_of(plan, f"i{k}br")[CLOUD_LAN] == TRANSIT_ROUTER


def test_cloud_reaches_isps_via_transit(plan):
    rt = routes_of(plan, "cldr")
    for k in (1, 2, 3):
        assert rt[f"198.18.{k}.0/24"] == TRANSIT_ROUTER


def test_hosts_default_route_to_their_border(plan):
    for name in data_hosts(plan):
        rt = routes_of(plan, name)
        assert set(rt) == {"default"}, name
        gw = plan.owner_of(rt["default"])
        assert plan.node(gw).kind == "router" and plan.node(gw).domain == plan.node(name).domain


def test_the_route_server_has_no_route_and_no_plan_without_it_changes():
    with_rs, without = metro(), metro(MetroParams(route_server=0))
    assert [n.name for n in with_rs.nodes_of(role=ROUTE_SERVER_ROLE)] == ["ixprs"]
    assert routes_of(with_rs, "ixprs") == {} and without.nodes_of(role=ROUTE_SERVER_ROLE) == []
    assert with_rs.routes == without.routes  # it forwards nothing: every other route is the same
    assert [n for n in with_rs.nodes if n.name != "ixprs"] == list(without.nodes)
    assert [lk for lk in with_rs.links if "ixprs" not in (lk.a.node, lk.b.node)] == list(without.links)
    with pytest.raises(PlanError, match="route_server"):
        MetroParams(route_server=2)


def test_netflix_site_never_carries_isp_cloud_traffic(plan):
    isp_hosts = [n.name for n in plan.nodes if n.domain.startswith("isp") and n.kind == "host"]
    cloud_hosts = [n.name for n in plan.nodes_of(kind="host", domain="cloud")]
    for a, b in itertools.product(isp_hosts, cloud_hosts):
        assert "nfxr" not in l3_path(plan, a, plan.primary_ip(b)), (a, b)
        assert "nfxr" not in l3_path(plan, b, plan.primary_ip(a)), (b, a)
    # nor does the Netflix site route ISP prefixes toward the cloud or cloud prefixes to ISPs
    for dst, via in routes_of(plan, "nfxr").items():
        if dst.startswith("198.18."):
            assert plan.owner_of(via).endswith("br"), (dst, via)


@pytest.mark.parametrize("dst,hops", [
    ("i1oca1", ["i1oca1"]),
    ("nfxoca1", ["i1br", "nfxr", "nfxoca1"]),
    ("origin", ["i1br", "trr", "cldr", "origin"]),
    ("i2v1", ["i1br", "i2br", "i2v1"]),
    ("i3v2", ["i1br", "i3br", "i3v2"]),
])
def test_l3_path_from_viewer(plan, dst, hops):
    assert l3_path(plan, "i1v1", plan.primary_ip(dst)) == hops


def test_l3_path_to_own_address_is_empty(plan):
    assert l3_path(plan, "i1v1", plan.primary_ip("i1v1")) == []


def test_every_host_reaches_every_host(plan):
    hosts = data_hosts(plan)
    for a, b in itertools.permutations(hosts, 2):
        path = l3_path(plan, a, plan.primary_ip(b))
        assert path[-1] == b and 1 <= len(path) <= 4, (a, b, path)


def test_l3_path_outside_plan_is_an_error(plan):
    with pytest.raises(PlanError):
        l3_path(metro(MetroParams(isps=1)), "i1v1", "198.18.7.10")


def test_paths_scale_with_isps():
    p = metro(MetroParams(isps=9))
    assert l3_path(p, "i9v1", p.primary_ip("i1v1")) == ["i9br", "i1br", "i1v1"]
    assert l3_path(p, "i9v1", p.primary_ip("origin")) == ["i9br", "trr", "cldr", "origin"]


@pytest.mark.parametrize("src,dst,delay_ms", [
    ("i1v1", "i1oca1", 3.1),             # access 3 + OCA LAN port 0.1 (no delay line)
    ("i1v1", "nfxoca1", 11.3),           # 3 + 1 to i1br, 7 + 0.1 over the IXP, 0.1 + 0.1 to the OCA
    ("i1v1", "origin", 49.4),            # 4 to i1br, 15 + 0.1 to trr, 0.1 + 30 to cldr, 0.1 + 0.1 to origin
    ("i1v1", "i2v1", 22.5),              # 4, 7 + 7 over the IXP, 1 + 3.5 into ISP 2
    ("i3v2", "i1v1", 23.0),              # 4 + 1, 7 + 7, 1 + 3
    ("origin", "i2v1", 49.9),            # the way back, into ISP 2 (access 3.5 ms)
])
def test_path_delay_sums_links_along_l3_path(plan, src, dst, delay_ms):
    assert path_delay_ms(plan, src, plan.primary_ip(dst)) == pytest.approx(delay_ms)


def test_l2_path_on_the_transit_lan(plan):
    links = l2_path(plan, "i1br-2", "trr-0")
    assert [lk.name for lk in links] == ["i1br:2-octrn:2", "trr:0-octrn:0"]
    assert l2_path(plan, "i1br-0", "i1br-0")[0].name == "i1br:0-oci1lan:0"
    with pytest.raises(PlanError):
        l2_path(plan, "i1br-0", "i2br-0")  # different segments


# ---- as_routes on a hand-made AS graph -------------------------------------------------------
def _via(best, asn, owner):
    r = best[asn].get(owner)
    return None if r is None else (r.learned, r.path)


def test_relationships_are_symmetric():
    rel = relationships([("a", "b", "customer"), ("a", "c", "peer")])
    assert rel["a"] == {"b": "provider", "c": "peer"}
    assert rel["b"] == {"a": "customer"} and rel["c"] == {"a": "peer"}


def test_prefers_customer_over_peer_over_provider_even_if_longer():
    # o is reachable from x via a customer chain (c, m, o), a peer p and a provider t.
    links = [("c", "x", "customer"), ("m", "c", "customer"), ("o", "m", "customer"),
             ("x", "p", "peer"), ("o", "p", "customer"),
             ("x", "t", "customer"), ("o", "t", "customer")]
    assert _via(as_routes(links, ["o"]), "x", "o") == ("customer", ("c", "m", "o"))
    no_cust = [lk for lk in links if lk[0] != "c"]
    assert _via(as_routes(no_cust, ["o"]), "x", "o") == ("peer", ("p", "o"))
    no_peer = [lk for lk in no_cust if "p" not in lk[:2]]
    assert _via(as_routes(no_peer, ["o"]), "x", "o") == ("provider", ("t", "o"))


def test_peer_routes_are_not_exported_to_peers():
    best = as_routes([("a", "b", "peer"), ("b", "c", "peer")], ["a", "c"])
    assert _via(best, "b", "c") == ("peer", ("c",))
    assert best["a"].get("c") is None and best["c"].get("a") is None


def test_provider_routes_are_not_exported_to_peers_or_providers():
    links = [("b", "t1", "customer"), ("o", "t1", "customer"), ("a", "b", "peer"),
             ("b", "t2", "customer")]
    best = as_routes(links, ["o"])
    assert _via(best, "b", "o") == ("provider", ("t1", "o"))
    assert best["a"].get("o") is None      # b does not give its peer a provider route
    assert best["t2"].get("o") is None     # nor its other provider (no transit for free)


def test_customer_routes_go_to_everyone():
    links = [("o", "b", "customer"), ("a", "b", "peer"), ("b", "t", "customer"),
             ("d", "b", "customer")]
    best = as_routes(links, ["o"])
    for asn in ("a", "t", "d"):
        assert best[asn]["o"].path[0] == "b", asn
    assert _via(best, "d", "o") == ("provider", ("b", "o"))


def test_no_valley_in_any_metro_as_path(plan):
    """Along every chosen path: zero or more customer->provider steps, at most one peer step,
    then only provider->customer steps."""
    rel = relationships(plan.as_links)
    owners = sorted({n.domain for n in plan.nodes_of(kind="host")})
    best = as_routes(plan.as_links, owners)
    checked = 0
    for asn, table in best.items():
        for owner, r in table.items():
            hops = [asn, *r.path]
            phase = 0  # 0 climbing, 1 after peer, 2 descending
            for x, y in zip(hops, hops[1:]):
                what = rel[x][y]  # what y is to x
                if what == "provider":
                    assert phase == 0, (asn, owner, hops)
                elif what == "peer":
                    assert phase == 0, (asn, owner, hops)
                    phase = 1
                else:
                    phase = 2
            checked += 1
    assert checked >= 20
