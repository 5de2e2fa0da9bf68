"""Plan -> per-switch flow specs (pure: no os-ken, no IO).

Forwarding is static and derived only from the plan's MACs, so it needs no learning and no
packet-in. Invariants of `flow_specs(plan)`:
- every MAC of a non-switch link end attached to a switch cluster gets, on every switch of that
  cluster, one exact `eth_dst` flow whose output follows a shortest path (BFS tree rooted at the
  MAC's switch, ties broken by sorted names, so paths are loop-free and deterministic);
- broadcast/multicast (`eth_dst` with the group bit) is flooded along one spanning tree per
  switch cluster, with one flow per in_port that outputs to every edge and tree port except the
  in_port; frames entering on a non-tree switch-to-switch port hit the table-miss drop, so a
  cyclic switch graph cannot loop broadcast;
- every switch has one priority-0 table-miss flow with no actions (drop, counted by the switch);
- every flow carries a cookie inside APP_COOKIE/APP_COOKIE_MASK, so this app can delete exactly
  its own flows on (re)connect.
Ports are named by plan interface names (`<switch>-<port>`); the OS-facing shell maps names to
OpenFlow port numbers.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from topologies.plan import Link, Plan, PlanError

# Cookie namespace: 0x0Cxx belongs to this controller; the low byte names the purpose.
APP_COOKIE = 0x0C00
APP_COOKIE_MASK = 0xFFFF_FFFF_FFFF_FF00
COOKIE_FORWARDING = 0x0C01
COOKIE_FLOOD = 0x0C02
COOKIE_MISS = 0x0C03

# Priority bands.
PRIORITY_MISS = 0
PRIORITY_FLOOD = 1000
PRIORITY_FORWARDING = 2000
PRIORITY_STEERING = 3000  # anycast steering rules (controller.anycast)

GROUP_MAC = "01:00:00:00:00:00"  # value and mask: the I/G (group) bit


@dataclass(frozen=True)
class FlowSpec:
    """One flow entry. `outputs` empty means drop. Ports are plan interface names."""
    switch: str
    cookie: int
    priority: int
    in_port: str | None = None
    eth_dst: str | None = None
    eth_dst_mask: str | None = None
    outputs: tuple[str, ...] = ()

    def key(self) -> tuple:
        """Sort key: deterministic install order and comparison."""
        return (self.switch, -self.priority, self.cookie, self.in_port or "", self.eth_dst or "")


@dataclass(frozen=True)
class Adjacency:
    """A switch-to-switch link seen from `local`: out via `local_port` to `remote` at `remote_port`."""
    local: str
    local_port: str
    remote: str
    remote_port: str
    link: str


def switch_names(plan: Plan) -> list[str]:
    return sorted(n.name for n in plan.nodes_of(kind="switch"))


def _is_switch(plan: Plan, name: str) -> bool:
    return plan.node(name).kind == "switch"


def switch_graph(plan: Plan) -> dict[str, list[Adjacency]]:
    """Adjacency lists of the switch graph, sorted by (remote, link name) for determinism."""
    graph: dict[str, list[Adjacency]] = {s: [] for s in switch_names(plan)}
    for lk in plan.links:
        if _is_switch(plan, lk.a.node) and _is_switch(plan, lk.b.node):
            graph[lk.a.node].append(Adjacency(lk.a.node, lk.a.intf, lk.b.node, lk.b.intf, lk.name))
            graph[lk.b.node].append(Adjacency(lk.b.node, lk.b.intf, lk.a.node, lk.a.intf, lk.name))
    for adj in graph.values():
        adj.sort(key=lambda a: (a.remote, a.link))
    return graph


def bfs_parents(graph: dict[str, list[Adjacency]], root: str) -> dict[str, Adjacency | None]:
    """Shortest-path tree toward `root`: switch -> adjacency leading one hop closer (root: None)."""
    parents: dict[str, Adjacency | None] = {root: None}
    queue = deque([root])
    while queue:
        here = queue.popleft()
        for adj in graph[here]:
            if adj.remote not in parents:
                # from adj.remote, the way toward root is its end of this same link
                parents[adj.remote] = Adjacency(adj.remote, adj.remote_port, here, adj.local_port, adj.link)
                queue.append(adj.remote)
    return parents


def spanning_tree_links(plan: Plan) -> set[str]:
    """Names of switch-to-switch links on the flood tree (BFS from the smallest name per cluster)."""
    graph = switch_graph(plan)
    tree: set[str] = set()
    seen: set[str] = set()
    for root in sorted(graph):
        if root in seen:
            continue
        parents = bfs_parents(graph, root)
        seen.update(parents)
        tree.update(adj.link for adj in parents.values() if adj is not None)
    return tree


def edge_ports(plan: Plan) -> dict[str, list[tuple[str, Link]]]:
    """Per switch, the ports facing non-switch nodes, as (interface name, link)."""
    out: dict[str, list[tuple[str, Link]]] = {s: [] for s in switch_names(plan)}
    for lk in plan.links:
        for here, there in ((lk.a, lk.b), (lk.b, lk.a)):
            if _is_switch(plan, here.node) and not _is_switch(plan, there.node):
                out[here.node].append((here.intf, lk))
    return out


def mac_locations(plan: Plan) -> dict[str, tuple[str, str]]:
    """MAC of every non-switch end attached to a switch -> (switch, switch port)."""
    loc: dict[str, tuple[str, str]] = {}
    for sw, ports in edge_ports(plan).items():
        for intf, lk in ports:
            peer = lk.other(sw)
            loc[peer.mac] = (sw, intf)
    return loc


def switch_ports(plan: Plan) -> dict[str, list[str]]:
    """Every plan interface name of every switch (what a switch must expose to be complete)."""
    ports: dict[str, list[str]] = {s: [] for s in switch_names(plan)}
    for lk in plan.links:
        for e in (lk.a, lk.b):
            if e.node in ports:
                ports[e.node].append(e.intf)
    return {s: sorted(p) for s, p in ports.items()}


def _unicast_specs(plan: Plan, graph) -> list[FlowSpec]:
    specs = []
    for mac, (home, port) in sorted(mac_locations(plan).items()):
        for sw, adj in bfs_parents(graph, home).items():
            out = port if adj is None else adj.local_port
            specs.append(FlowSpec(sw, COOKIE_FORWARDING, PRIORITY_FORWARDING,
                                  eth_dst=mac, outputs=(out,)))
    return specs


def _flood_specs(plan: Plan, graph) -> list[FlowSpec]:
    tree = spanning_tree_links(plan)
    edges = edge_ports(plan)
    specs = []
    for sw in switch_names(plan):
        ports = [intf for intf, _ in edges[sw]] + [a.local_port for a in graph[sw] if a.link in tree]
        ports = sorted(ports)
        for in_port in ports:
            specs.append(FlowSpec(sw, COOKIE_FLOOD, PRIORITY_FLOOD, in_port=in_port,
                                  eth_dst=GROUP_MAC, eth_dst_mask=GROUP_MAC,
                                  outputs=tuple(p for p in ports if p != in_port)))
    return specs


def flow_specs(plan: Plan) -> dict[str, list[FlowSpec]]:
    """All flows of every switch in the plan, sorted by FlowSpec.key (see module invariants)."""
    graph = switch_graph(plan)
    if not graph:
        raise PlanError(f"plan {plan.name!r} has no switches; nothing for the controller to do")
    specs = _unicast_specs(plan, graph) + _flood_specs(plan, graph)
    specs += [FlowSpec(sw, COOKIE_MISS, PRIORITY_MISS) for sw in graph]
    by_switch: dict[str, list[FlowSpec]] = {sw: [] for sw in graph}
    for s in specs:
        by_switch[s.switch].append(s)
    return {sw: sorted(v, key=FlowSpec.key) for sw, v in by_switch.items()}


def dpid_map(plan: Plan) -> dict[int, str]:
    """DPID (int) -> switch name."""
    return {n.dpid: n.name for n in plan.nodes_of(kind="switch")}


def walk(specs: dict[str, list[FlowSpec]], plan: Plan, switch: str, in_port: str | None,
         eth_dst: str, max_steps: int = 1000) -> list[str]:
    """Simulate one frame: the list of edge ports (interface names) it leaves the network on.

    Follows the highest-priority matching flow on each switch (ties are a bug: PlanError);
    raises PlanError if the frame visits more than `max_steps` switch hops (a loop).
    """
    peer_port: dict[str, tuple[str, str]] = {}
    for lk in plan.links:
        if _is_switch(plan, lk.a.node) and _is_switch(plan, lk.b.node):
            peer_port[lk.a.intf] = (lk.b.node, lk.b.intf)
            peer_port[lk.b.intf] = (lk.a.node, lk.a.intf)
    delivered: list[str] = []
    todo = [(switch, in_port)]
    steps = 0
    while todo:
        sw, inp = todo.pop()
        steps += 1
        if steps > max_steps:
            raise PlanError(f"frame to {eth_dst} from {switch}/{in_port} loops")
        flow = _match(specs[sw], inp, eth_dst)
        for out in (flow.outputs if flow else ()):
            if out == inp:
                continue
            if out in peer_port:
                todo.append(peer_port[out])
            else:
                delivered.append(out)
    return sorted(delivered)


def _match(flows: list[FlowSpec], in_port: str | None, eth_dst: str) -> FlowSpec | None:
    def hits(f: FlowSpec) -> bool:
        if f.in_port is not None and f.in_port != in_port:
            return False
        if f.eth_dst is None:
            return True
        mask = int((f.eth_dst_mask or "ff:ff:ff:ff:ff:ff").replace(":", ""), 16)
        return int(f.eth_dst.replace(":", ""), 16) & mask == int(eth_dst.replace(":", ""), 16) & mask
    matching = [f for f in flows if hits(f)]
    if not matching:
        return None
    top = max(f.priority for f in matching)
    best = [f for f in matching if f.priority == top]
    if len(best) > 1:
        raise PlanError(f"ambiguous flows at priority {top} for {eth_dst} in_port {in_port}: {best}")
    return best[0]
