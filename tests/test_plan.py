"""Plan validation and the metro address plan (pure; no root).

Invariants checked: every invalid plan is rejected with a PlanError whose message names the
offending field; the metro plan is valid, deterministic, JSON round-trips with the same hash,
and stays inside 198.18.0.0/15 with interface names that fit IFNAMSIZ.
"""
from __future__ import annotations

import dataclasses
import ipaddress
import json

import pytest

from topologies.catalog import MetroParams, by_name, metro
from topologies.plan import (ADDRESS_SPACE, IFNAMSIZ_MAX, Link, LinkEnd, Node, Plan, PlanError,
                             Route)


def small_plan() -> Plan:
    """A valid plan: h1 on switch ocsw with router r1; r1 point-to-point to h2."""
    nodes = (Node("r1", "router", "border", "a"), Node("h1", "host", "viewer", "a"),
             Node("h2", "host", "origin", "b"), Node("ocsw", "switch", "lan", "a", dpid=1))
    links = (
        Link(LinkEnd("h1", 0, "02:00:00:00:01:00", "198.18.1.10/24"),
             LinkEnd("ocsw", 0, "02:00:00:00:03:00"), "access", 50.0, 3.0),
        Link(LinkEnd("r1", 0, "02:00:00:00:00:00", "198.18.1.1/24"),
             LinkEnd("ocsw", 1, "02:00:00:00:03:01"), "internal", 1000.0, 1.0),
        Link(LinkEnd("r1", 1, "02:00:00:00:00:01", "198.18.2.1/24"),
             LinkEnd("h2", 0, "02:00:00:00:02:00", "198.18.2.10/24"), "transit", 200.0, 10.0),
    )
    routes = (Route("h1", "default", "198.18.1.1"), Route("h2", "default", "198.18.2.1"))
    return Plan("small", nodes, links, routes)


def rebuild(plan: Plan, **changes) -> Plan:
    """dataclasses.replace with a fresh node index (see test_replace_gets_its_own_index)."""
    return dataclasses.replace(plan, **changes)


def with_node(plan: Plan, i: int, **kw) -> Plan:
    nodes = list(plan.nodes)
    nodes[i] = dataclasses.replace(nodes[i], **kw)
    return rebuild(plan, nodes=tuple(nodes))


def with_link(plan: Plan, i: int, **kw) -> Plan:
    links = list(plan.links)
    links[i] = dataclasses.replace(links[i], **kw)
    return rebuild(plan, links=tuple(links))


def with_end(plan: Plan, i: int, side: str, **kw) -> Plan:
    return with_link(plan, i, **{side: dataclasses.replace(getattr(plan.links[i], side), **kw)})


def rejects(make, *fragments: str) -> str:
    """Assert make() raises PlanError and that its message contains every fragment."""
    with pytest.raises(PlanError) as ei:
        make()
    msg = str(ei.value)
    for frag in fragments:
        assert frag in msg, f"PlanError {msg!r} does not name {frag!r}"
    return msg


# ---- valid plans ---------------------------------------------------------------------------
def test_small_plan_is_valid_and_round_trips():
    p = small_plan()
    q = Plan.from_json(p.to_json())
    assert q == p and q.plan_hash() == p.plan_hash()


def test_metro_round_trips_with_identical_hash():
    p = metro()
    q = Plan.from_json(p.to_json())
    assert q == p
    assert q.plan_hash() == p.plan_hash()
    assert q.to_json() == p.to_json()
    assert json.loads(p.to_json())["format"] == "ocalab-plan/1"


def test_metro_is_deterministic_macs_and_hash():
    a, b = metro(), metro()
    macs_a = [(e.intf, e.mac) for lk in a.links for e in (lk.a, lk.b)]
    macs_b = [(e.intf, e.mac) for lk in b.links for e in (lk.a, lk.b)]
    assert macs_a == macs_b
    assert a.plan_hash() == b.plan_hash()


def test_plan_hash_changes_when_a_delay_changes():
    assert metro(MetroParams(access_delay_ms=4.0)).plan_hash() != metro().plan_hash()
    p = small_plan()
    assert with_link(p, 2, delay_ms=11.0).plan_hash() != p.plan_hash()


def test_metro_addresses_inside_benchmark_space():
    p = metro()
    ends = [e for lk in p.links for e in (lk.a, lk.b) if e.ip]
    assert ends
    for e in ends:
        iface = ipaddress.ip_interface(e.ip)
        assert iface.ip in ADDRESS_SPACE, e
        assert iface.network.subnet_of(ADDRESS_SPACE), e
    for r in p.routes:
        assert ipaddress.ip_address(r.via) in ADDRESS_SPACE
        if r.dst != "default":
            assert ipaddress.ip_network(r.dst).subnet_of(ADDRESS_SPACE)


@pytest.mark.parametrize("isps", [1, 3, 9])
def test_isp_lan_is_198_18_k(isps):
    p = metro(MetroParams(isps=isps))
    for k in range(1, isps + 1):
        lan = ipaddress.ip_network(f"198.18.{k}.0/24")
        isp_hosts = p.nodes_of(kind="host", domain=f"isp{k}")
        assert isp_hosts
        for n in isp_hosts + p.nodes_of(kind="router", domain=f"isp{k}"):
            assert any(ipaddress.ip_address(a) in lan for a in p.addresses(n.name)), n
        for n in isp_hosts:
            assert all(ipaddress.ip_address(a) in lan for a in p.addresses(n.name)), n


def test_metro_interface_names_fit_ifnamsiz():
    p = metro(MetroParams(isps=9, viewers_per_isp=80, ocas_per_isp=9, ixp_ocas=9))
    for lk in p.links:
        for e in (lk.a, lk.b):
            assert len(e.intf) <= IFNAMSIZ_MAX == 15
    for n in p.nodes_of(kind="switch"):
        assert n.name.startswith("oc")


def test_metro_only_access_links_carry_loss():
    p = metro(MetroParams(loss_pct=10))
    for lk in p.links:
        assert lk.loss_pct == (10 if lk.cls == "access" else 0), lk.name


# ---- rejected plans: each PlanError names the field ------------------------------------------
def test_duplicate_node_name():
    p = small_plan()
    rejects(lambda: rebuild(p, nodes=p.nodes + (Node("h1", "host", "viewer", "a"),)),
            "nodes[4]", ".name", "duplicate")


def test_name_longer_than_10_chars():
    p = small_plan()
    rejects(lambda: rebuild(p, nodes=p.nodes + (Node("abcdefghijk", "host", "viewer", "a"),)),
            "nodes[4]", ".name")
    # exactly 10 characters is fine as a node (it has no link, so no interface name)
    rebuild(p, nodes=p.nodes + (Node("abcdefghij", "host", "viewer", "a"),))


@pytest.mark.parametrize("bad", ["H1", "h-1", "1h", "h_1", "h 1", ""])
def test_name_bad_characters(bad):
    p = small_plan()
    rejects(lambda: rebuild(p, nodes=p.nodes + (Node(bad, "host", "viewer", "a"),)), ".name")


def test_switch_without_prefix():
    p = small_plan()
    rejects(lambda: rebuild(p, nodes=p.nodes + (Node("sw2", "switch", "lan", "a", dpid=2),)),
            "nodes[4]", ".name", "oc")


def test_duplicate_dpid():
    p = small_plan()
    rejects(lambda: rebuild(p, nodes=p.nodes + (Node("ocsw2", "switch", "lan", "a", dpid=1),)),
            "nodes[4]", ".dpid")


@pytest.mark.parametrize("dpid", [None, 0, -1, 2 ** 64, True])
def test_missing_or_bad_dpid(dpid):
    p = small_plan()
    rejects(lambda: with_node(p, 3, dpid=dpid), "nodes[3]", ".dpid")


def test_dpid_on_a_host():
    rejects(lambda: with_node(small_plan(), 1, dpid=7), "nodes[1]", ".dpid")


def test_unknown_node_kind():
    rejects(lambda: with_node(small_plan(), 1, kind="server"), "nodes[1]", ".kind")


def test_unknown_link_class():
    rejects(lambda: with_link(small_plan(), 0, cls="wifi"), "links[0].cls")


@pytest.mark.parametrize("field,value", [
    ("delay_ms", -1.0), ("delay_ms", float("nan")), ("loss_pct", 100.0), ("loss_pct", -0.1),
    ("bw_mbps", 0.0), ("bw_mbps", -5.0), ("queue_pkts", 0), ("queue_pkts", 2.5),
    ("jitter_ms", -1.0), ("delay_ms", "3"),
])
def test_link_parameter_out_of_range(field, value):
    rejects(lambda: with_link(small_plan(), 2, **{field: value}), f"links[2].{field}")


def test_jitter_above_delay():
    rejects(lambda: with_link(small_plan(), 2, jitter_ms=10.5), "links[2].jitter_ms")
    with_link(small_plan(), 2, jitter_ms=10.0)  # equal is allowed


def test_duplicate_mac():
    rejects(lambda: with_end(small_plan(), 2, "b", mac="02:00:00:00:01:00"), "links[2].b.mac")


@pytest.mark.parametrize("mac", ["01:00:5e:00:00:01", "03:00:00:00:00:01", "ff:ff:ff:ff:ff:ff"])
def test_multicast_mac(mac):
    rejects(lambda: with_end(small_plan(), 2, "b", mac=mac), "links[2].b.mac")


@pytest.mark.parametrize("mac", ["02:00:00:00:02", "02:00:00:00:02:0G", "02-00-00-00-02-00",
                                 "02:00:00:00:02:AA"])
def test_malformed_mac(mac):
    rejects(lambda: with_end(small_plan(), 2, "b", mac=mac), "links[2].b.mac")


def _readdress_h2(ip: str, gw: str) -> Plan:
    """small_plan with the r1-h2 link (both ends and h2's route) moved to another subnet."""
    p = small_plan()
    lk = p.links[2]
    links = p.links[:2] + (dataclasses.replace(lk, a=dataclasses.replace(lk.a, ip=gw),
                                               b=dataclasses.replace(lk.b, ip=ip)),)
    routes = (p.routes[0], Route("h2", "default", gw.split("/")[0]))
    return rebuild(p, links=links, routes=routes)


def test_readdressed_link_is_valid():
    q = _readdress_h2("198.18.3.10/24", "198.18.3.1/24")
    assert q.addresses("h2") == ["198.18.3.10"]


@pytest.mark.parametrize("ip", ["192.0.2.1/24", "203.0.113.1/24", "192.168.1.1/24", "198.20.0.1/24",
                                "198.17.255.1/24", "198.18.0.1/14"])
def test_address_outside_benchmark_space(ip):
    rejects(lambda: with_end(small_plan(), 2, "b", ip=ip), "links[2].b.ip")


def test_address_outside_space_even_on_a_consistent_segment():
    rejects(lambda: _readdress_h2("192.0.2.2/24", "192.0.2.1/24"), "links[2].a.ip", "198.18.0.0/15")


@pytest.mark.parametrize("ip", ["198.18.2.300/24", "not-an-ip", "198.18.2.0/24", "198.18.2.255/24"])
def test_malformed_or_reserved_address(ip):
    rejects(lambda: with_end(small_plan(), 2, "b", ip=ip), "links[2].b.ip")


def test_address_without_prefix_length_is_rejected():
    # accepted as a /32 by the end check; the segment check then names the interface
    msg = rejects(lambda: with_end(small_plan(), 2, "b", ip="198.18.2.10"))
    assert "links[2].b.ip" in msg or "h2-0" in msg


def test_duplicate_address():
    rejects(lambda: with_end(small_plan(), 2, "b", ip="198.18.2.1/24"), "links[2].b.ip")


def test_two_subnets_on_one_segment():
    msg = rejects(lambda: with_end(small_plan(), 0, "a", ip="198.18.3.10/24"), "links", "subnet")
    assert "h1-0" in msg or "r1-0" in msg


def test_one_subnet_on_two_segments():
    msg = rejects(lambda: _readdress_h2("198.18.1.20/24", "198.18.1.2/24"), "links", "198.18.1.0/24")
    assert "two segments" in msg


def test_overlapping_subnets_on_two_segments():
    rejects(lambda: _readdress_h2("198.18.1.130/25", "198.18.1.129/25"), "links", "198.18.1.")


def test_switch_port_with_address():
    rejects(lambda: with_end(small_plan(), 0, "b", ip="198.18.1.20/24"), "links[0].b.ip")


def test_host_end_without_address():
    rejects(lambda: with_end(small_plan(), 0, "a", ip=None), "links[0].a.ip")


def test_port_used_twice_and_unknown_node():
    rejects(lambda: with_end(small_plan(), 2, "a", port=0), "links[2].a.port")
    rejects(lambda: with_end(small_plan(), 2, "b", node="nobody"), "links[2].b.node")


def test_longest_names_still_fit_ifnamsiz():
    """10-character node + '-' + port 0..999 gives at most 14 characters; port 1000 is refused."""
    p = small_plan()
    nodes = list(p.nodes)
    nodes[1] = dataclasses.replace(nodes[1], name="abcdefghij")
    links = list(p.links)
    links[0] = dataclasses.replace(links[0], a=dataclasses.replace(links[0].a, node="abcdefghij",
                                                                     port=999))
    routes = (Route("abcdefghij", "default", "198.18.1.1"), p.routes[1])
    q = rebuild(p, nodes=tuple(nodes), links=tuple(links), routes=routes)
    assert len(q.links[0].a.intf) == 14 <= IFNAMSIZ_MAX
    links[0] = dataclasses.replace(links[0], a=dataclasses.replace(links[0].a, port=1000))
    rejects(lambda: rebuild(p, nodes=tuple(nodes), links=tuple(links), routes=routes),
            "links[0].a.port")


def test_route_next_hop_not_on_subnet():
    p = small_plan()
    rejects(lambda: rebuild(p, routes=p.routes + (Route("h1", "198.18.9.0/24", "198.18.2.1"),)),
            "routes[2].via")


def test_route_bad_destination():
    p = small_plan()
    rejects(lambda: rebuild(p, routes=(Route("h1", "203.0.113.0/24", "198.18.1.1"),)), "routes[0].dst")
    rejects(lambda: rebuild(p, routes=(Route("h1", "198.18.9.1/24", "198.18.1.1"),)), "routes[0].dst")
    rejects(lambda: rebuild(p, routes=(Route("ocsw", "default", "198.18.1.1"),)), "routes[0].node")


def test_bad_plan_name():
    rejects(lambda: rebuild(small_plan(), name="Bad Name"), "name")


def test_as_links_unknown_domain_or_relation():
    p = small_plan()
    rejects(lambda: rebuild(p, as_links=(("a", "zz", "peer"),)), "as_links[0]", "zz")
    rejects(lambda: rebuild(p, as_links=(("a", "b", "friend"),)), "as_links[0]")


# ---- JSON import ---------------------------------------------------------------------------
def _json_with(mutate) -> str:
    d = json.loads(small_plan().to_json())
    mutate(d)
    return json.dumps(d)


@pytest.mark.parametrize("mutate,where", [
    (lambda d: d.update(delay_ms=3), "plan"),
    (lambda d: d["nodes"][0].update(dpidd=5), "nodes[0]"),
    (lambda d: d["links"][1].update(delay=5), "links[1]"),
    (lambda d: d["links"][1]["a"].update(addr="198.18.1.1/24"), "links[1].a"),
    (lambda d: d["routes"][0].update(gw="198.18.1.1"), "routes[0]"),
])
def test_from_json_rejects_unknown_keys(mutate, where):
    msg = rejects(lambda: Plan.from_json(_json_with(mutate)), where, "unknown")
    assert any(k in msg for k in ("delay_ms", "dpidd", "delay", "addr", "gw"))


def test_from_json_rejects_bad_format_and_bad_json():
    rejects(lambda: Plan.from_json(_json_with(lambda d: d.update(format="ocalab-plan/9"))), "format")
    rejects(lambda: Plan.from_json("{not json"), "JSON")


def test_from_json_validates_values():
    rejects(lambda: Plan.from_json(_json_with(lambda d: d["links"][2].update(delay_ms=-2))),
            "links[2].delay_ms")


# ---- metro parameters ------------------------------------------------------------------------
def test_from_overrides_converts_types():
    mp = MetroParams.from_overrides({"isps": "4", "access_delay_ms": "2.5", "loss_pct": "10"})
    assert mp.isps == 4 and isinstance(mp.isps, int)
    assert mp.access_delay_ms == 2.5 and mp.loss_pct == 10.0


def test_from_overrides_unknown_key_names_it():
    rejects(lambda: MetroParams.from_overrides({"acces_delay_ms": "2"}), "acces_delay_ms")


@pytest.mark.parametrize("key,value", [("isps", "three"), ("isps", "2.5"), ("jitter_ms", "x")])
def test_from_overrides_bad_value_names_key(key, value):
    rejects(lambda: MetroParams.from_overrides({key: value}), f"metro.{key}")


@pytest.mark.parametrize("isps", ["0", "10", "-1"])
def test_isps_out_of_range(isps):
    rejects(lambda: MetroParams.from_overrides({"isps": isps}), "metro.isps")


def test_negative_metro_delay_is_rejected_by_the_plan():
    with pytest.raises(PlanError, match="delay_ms"):
        by_name("metro", {"peering_delay_ms": "-1"})


def test_unknown_topology_name():
    rejects(lambda: by_name("mtero"), "mtero", "metro")


# ---- known defect ----------------------------------------------------------------------------
def test_replace_gets_its_own_index():
    p = small_plan()
    q = dataclasses.replace(p, name="copy")
    assert q._by_name is not p._by_name
    renamed = dataclasses.replace(p, nodes=p.nodes + (Node("h9", "host", "viewer", "a"),))
    with pytest.raises(PlanError):
        p.node("h9")  # the original must not learn the copy's nodes
    assert renamed.node("h9").name == "h9"
