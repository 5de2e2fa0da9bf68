"""Plan -> flow specs: reachability on metro, loop-free broadcast on cyclic switch graphs, cookies."""
import pytest

from controller import forwarding as fw
from topologies.catalog import metro
from topologies.plan import Link, LinkEnd, Node, Plan, PlanError

BCAST = "ff:ff:ff:ff:ff:ff"


def mesh_plan(switch_edges, hosts_per_switch=1):
    """Switches s0..sN-1 joined by `switch_edges` (pairs of indices, may form cycles), with hosts."""
    n = 1 + max(max(e) for e in switch_edges)
    nodes = [Node(f"ocs{i}", "switch", "lan", "isp1", dpid=0x100 + i) for i in range(n)]
    ports = {f"ocs{i}": 0 for i in range(n)}
    links, mac = [], iter(range(1, 10000))

    def end(node, ip=None):
        port = ports.setdefault(node, 0)
        ports[node] += 1
        m = next(mac)
        return LinkEnd(node, port, f"02:aa:00:00:{m >> 8:02x}:{m & 255:02x}", ip)

    for a, b in switch_edges:
        links.append(Link(end(f"ocs{a}"), end(f"ocs{b}"), "internal", 1000.0, 0.0))
    for i in range(n):
        for j in range(hosts_per_switch):
            h = f"h{i}x{j}"
            nodes.append(Node(h, "host", "viewer", "isp1"))
            links.append(Link(end(h, f"198.18.250.{10 + i * 10 + j}/24"), end(f"ocs{i}"),
                              "access", 100.0, 0.0))
    return Plan("mesh", tuple(nodes), tuple(links))


def host_ports(plan):
    """(host MAC, switch, switch port) for every host attachment."""
    return [(mac, sw, port) for mac, (sw, port) in sorted(fw.mac_locations(plan).items())]


def test_metro_every_mac_reachable_from_every_port_of_its_switch():
    plan = metro()
    specs = fw.flow_specs(plan)
    locs = fw.mac_locations(plan)
    assert len(locs) == sum(1 for lk in plan.links for e in (lk.a, lk.b)
                            if plan.node(e.node).kind != "switch")
    for mac, (sw, port) in locs.items():
        for in_port in fw.switch_ports(plan)[sw]:
            if in_port != port:
                assert fw.walk(specs, plan, sw, in_port, mac) == [port], (mac, sw, in_port)


def test_metro_flows_do_not_leak_macs_of_other_segments():
    plan = metro()
    specs = fw.flow_specs(plan)
    locs = fw.mac_locations(plan)
    for sw, flows in specs.items():
        for f in flows:
            if f.cookie == fw.COOKIE_FORWARDING:
                assert locs[f.eth_dst][0] == sw
                assert all(o in fw.switch_ports(plan)[sw] for o in f.outputs)


def test_metro_broadcast_reaches_every_other_port_once():
    plan = metro()
    specs = fw.flow_specs(plan)
    for sw, ports in fw.switch_ports(plan).items():
        for in_port in ports:
            assert fw.walk(specs, plan, sw, in_port, BCAST) == [p for p in ports if p != in_port]
            assert fw.walk(specs, plan, sw, in_port, "33:33:00:00:00:01") == \
                [p for p in ports if p != in_port]


def test_unknown_unicast_hits_table_miss_drop():
    plan = metro()
    specs = fw.flow_specs(plan)
    sw = "ocixp"
    in_port = fw.switch_ports(plan)[sw][0]
    assert fw.walk(specs, plan, sw, in_port, "02:ff:ff:ff:ff:01") == []
    miss = [f for f in specs[sw] if f.priority == fw.PRIORITY_MISS]
    assert miss == [fw.FlowSpec(sw, fw.COOKIE_MISS, fw.PRIORITY_MISS)]


@pytest.mark.parametrize("edges", [
    [(0, 1), (1, 2), (2, 0)],                          # triangle
    [(0, 1), (1, 2), (2, 3), (3, 0), (0, 2), (1, 3)],  # K4
    [(0, 1), (1, 2), (2, 3), (3, 4), (4, 0), (2, 5)],  # ring with a tail
])
def test_cyclic_graph_broadcast_is_loop_free_and_complete(edges):
    plan = mesh_plan(edges, hosts_per_switch=2)
    specs = fw.flow_specs(plan)
    hosts = host_ports(plan)
    all_host_ports = sorted(p for _, _, p in hosts)
    for _, sw, port in hosts:
        got = fw.walk(specs, plan, sw, port, BCAST)
        assert got == [p for p in all_host_ports if p != port]  # each exactly once
    tree = fw.spanning_tree_links(plan)
    assert len(tree) == len({n.name for n in plan.nodes_of(kind="switch")}) - 1


def test_naive_flooding_on_a_cycle_loops_and_walk_detects_it():
    plan = mesh_plan([(0, 1), (1, 2), (2, 0)])
    ports = fw.switch_ports(plan)
    naive = {sw: [fw.FlowSpec(sw, fw.COOKIE_FLOOD, 1, eth_dst=fw.GROUP_MAC, eth_dst_mask=fw.GROUP_MAC,
                              outputs=tuple(ps))] for sw, ps in ports.items()}
    sw, port = host_ports(plan)[0][1:]
    with pytest.raises(PlanError, match="loops"):
        fw.walk(naive, plan, sw, port, BCAST)


@pytest.mark.parametrize("edges", [[(0, 1), (1, 2), (2, 0)], [(0, 1), (1, 2), (2, 3), (3, 0)]])
def test_cyclic_graph_unicast_shortest_path(edges):
    plan = mesh_plan(edges)
    specs = fw.flow_specs(plan)
    graph = fw.switch_graph(plan)
    for dst_mac, dst_sw, dst_port in host_ports(plan):
        hops = fw.bfs_parents(graph, dst_sw)
        for _, sw, port in host_ports(plan):
            if port == dst_port:
                continue
            assert fw.walk(specs, plan, sw, port, dst_mac) == [dst_port]
            # the parent chain is a shortest path: at most half the ring
            n, here = 0, sw
            while hops[here] is not None:
                here, n = hops[here].remote, n + 1
            assert n <= len(graph) // 2


def test_cookies_priorities_and_determinism():
    plan = metro()
    specs = fw.flow_specs(plan)
    assert set(specs) == set(fw.switch_names(plan))
    for sw, flows in specs.items():
        assert all(f.cookie & fw.APP_COOKIE_MASK == fw.APP_COOKIE for f in flows)
        assert all(f.switch == sw for f in flows)
        by_cookie = {c: [f for f in flows if f.cookie == c] for c in
                     (fw.COOKIE_FORWARDING, fw.COOKIE_FLOOD, fw.COOKIE_MISS)}
        assert all(f.priority == fw.PRIORITY_FORWARDING and len(f.outputs) == 1
                   for f in by_cookie[fw.COOKIE_FORWARDING])
        assert all(f.priority == fw.PRIORITY_FLOOD and f.in_port for f in by_cookie[fw.COOKIE_FLOOD])
        assert len(by_cookie[fw.COOKIE_MISS]) == 1
        assert sum(map(len, by_cookie.values())) == len(flows)
        assert len({(f.priority, f.in_port, f.eth_dst) for f in flows}) == len(flows)
    assert fw.flow_specs(Plan.from_json(plan.to_json())) == specs


def test_plan_without_switches_is_an_error():
    plan = Plan("bare", (Node("a", "host", "viewer", "isp1"), Node("b", "host", "viewer", "isp1")),
                (Link(LinkEnd("a", 0, "02:00:00:00:00:01", "198.18.250.1/24"),
                      LinkEnd("b", 0, "02:00:00:00:00:02", "198.18.250.2/24"), "access", 10.0, 0.0),))
    with pytest.raises(PlanError, match="no switches"):
        fw.flow_specs(plan)


def test_flow_mod_serializes_with_resolved_port_numbers():
    from os_ken.ofproto import ofproto_protocol, ofproto_v1_3
    from controller.app import flow_mod

    dp = ofproto_protocol.ProtocolDesc(ofproto_v1_3.OFP_VERSION)
    plan = metro()
    ports = {p: i + 1 for i, p in enumerate(fw.switch_ports(plan)["ocixp"])}
    for spec in fw.flow_specs(plan)["ocixp"]:
        msg = flow_mod(dp, spec, ports)
        msg.xid = 0
        msg.serialize()
        assert msg.cookie == spec.cookie and msg.priority == spec.priority
        outs = [a.port for i in msg.instructions for a in i.actions]
        assert outs == [ports[p] for p in spec.outputs]
        if spec.in_port:
            assert msg.match["in_port"] == ports[spec.in_port]
    with pytest.raises(KeyError):
        flow_mod(dp, fw.flow_specs(plan)["ocixp"][0], {})
