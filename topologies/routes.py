"""Inter-domain route policy and path walking: pure functions over plan data.

Policy (Gao-Rexford, as BGP local-preference and export filters would give):
- preference: customer route > peer route > provider route, then shorter AS path, then name;
- export: an AS announces its own and its customers' prefixes to everyone, and routes learned
  from peers or providers only to its customers (no valley paths).
So an ISP reaches another ISP and the Netflix IXP site over IXP peering, and reaches the cloud
region over paid transit; the Netflix site never carries ISP traffic to the cloud.

Each domain has at most one router (its border); hosts default-route to it.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from topologies.plan import Link, Node, Plan, PlanError, Route

PREF = {"customer": 3, "peer": 2, "provider": 1, "own": 4}


@dataclass(frozen=True)
class AsRoute:
    prefix_owner: str
    path: tuple[str, ...]  # AS path from the deciding AS (exclusive) to the owner (inclusive)
    learned: str  # own | customer | peer | provider


def relationships(as_links) -> dict[str, dict[str, str]]:
    """Map as -> neighbour -> what the neighbour is to it (customer, peer, provider)."""
    rel: dict[str, dict[str, str]] = {}
    for a, b, kind in as_links:
        if kind == "peer":
            rel.setdefault(a, {})[b] = "peer"
            rel.setdefault(b, {})[a] = "peer"
        else:  # a is a customer of b
            rel.setdefault(a, {})[b] = "provider"
            rel.setdefault(b, {})[a] = "customer"
    return rel


def _better(x: AsRoute, y: AsRoute | None) -> bool:
    if y is None:
        return True
    kx = (-PREF[x.learned], len(x.path), x.path)
    ky = (-PREF[y.learned], len(y.path), y.path)
    return kx < ky


def as_routes(as_links, owners: list[str]) -> dict[str, dict[str, AsRoute]]:
    """Best route of every AS toward every prefix-owning AS, by iterating to a fixed point."""
    rel = relationships(as_links)
    ases = sorted(set(rel) | set(owners))
    best: dict[str, dict[str, AsRoute]] = {a: {} for a in ases}
    for o in owners:
        best[o][o] = AsRoute(o, (), "own")
    for _ in range(len(ases) + 2):
        changed = False
        for a in ases:
            for nbr, what in sorted(rel.get(a, {}).items()):
                # what nbr is to a; nbr exports its best route to a if allowed
                for owner, r in list(best[nbr].items()):
                    exportable = r.learned in ("own", "customer") or rel[nbr][a] == "customer"
                    if not exportable or a in r.path or owner == a:
                        continue
                    cand = AsRoute(owner, (nbr,) + r.path, what)
                    if _better(cand, best[a].get(owner)):
                        best[a][owner] = cand
                        changed = True
        if not changed:
            return best
    raise PlanError("as_links: route computation did not converge")


def compute_routes(nodes: tuple[Node, ...], links: tuple[Link, ...],
                   as_links, segments) -> tuple[Route, ...]:
    """Static routes for every host and router, following the policy above."""
    by_name = {n.name: n for n in nodes}
    routers: dict[str, Node] = {}
    for n in nodes:
        if n.kind == "router":
            if n.domain in routers:
                raise PlanError(f"nodes: domain {n.domain!r} has two routers; one border router per domain")
            routers[n.domain] = n
    seg_net = _segment_nets(segments)
    prefixes = domain_prefixes(nodes, segments)
    best = as_routes(as_links, sorted(prefixes))
    routes: list[Route] = []
    for n in nodes:
        if n.kind == "host":
            gw = routers.get(n.domain)
            if gw is None:
                continue
            via = _shared_addr(gw.name, n.name, links, seg_net)
            if via:
                routes.append(Route(n.name, "default", via))
    for dom, r in sorted(routers.items()):
        for owner, ar in sorted(best.get(dom, {}).items()):
            if ar.learned == "own":
                continue
            nxt = routers.get(ar.path[0])
            if nxt is None:
                raise PlanError(f"as_links: domain {ar.path[0]!r} has no router")
            via = _shared_addr(nxt.name, r.name, links, seg_net)
            if via is None:
                raise PlanError(f"as_links: {dom} and {ar.path[0]} are neighbours but share no link")
            routes.extend(Route(r.name, p, via) for p in sorted(prefixes[owner]))
    return tuple(routes)


def _segment_nets(segments) -> dict:
    """Interface name -> (its segment's subnet, the segment)."""
    seg_net = {}
    for seg in segments:
        net = ipaddress.ip_interface(seg[0].ip).network
        for e in seg:
            seg_net[e.intf] = (net, seg)
    return seg_net


def domain_prefixes(nodes, segments) -> dict[str, list[str]]:
    """Domain -> the subnets its hosts sit on: the prefixes that domain originates."""
    by_name = {n.name: n for n in nodes}
    prefixes: dict[str, list[str]] = {}
    for net, seg in {str(v[0]): v for v in _segment_nets(segments).values()}.values():
        host_domains = {by_name[e.node].domain for e in seg if by_name[e.node].kind == "host"}
        for d in sorted(host_domains):
            prefixes.setdefault(d, []).append(str(net))
    return prefixes


def _shared_addr(target: str, frm: str, links, seg_net) -> str | None:
    """Address of `target` on a segment that `frm` is also attached to."""
    mine = {str(seg_net[e.intf][0]) for lk in links for e in (lk.a, lk.b)
            if e.node == frm and e.intf in seg_net}
    for lk in links:
        for e in (lk.a, lk.b):
            if e.node == target and e.intf in seg_net and str(seg_net[e.intf][0]) in mine:
                return e.addr
    return None


def l3_path(plan, src: str, dst_addr: str, max_hops: int = 32) -> list[str]:
    """Nodes a packet from `src` to `dst_addr` visits at layer 3 (excluding src).

    The hop count traceroute shows is len(result). Raises PlanError on a routing loop or hole.
    """
    dst = ipaddress.ip_address(dst_addr)
    path: list[str] = []
    here = src
    for _ in range(max_hops):
        ends = [e for e in plan.ends_of(here) if e.ip]
        if any(ipaddress.ip_interface(e.ip).ip == dst for e in ends):
            return path
        if any(dst in ipaddress.ip_interface(e.ip).network for e in ends):
            path.append(plan.owner_of(dst_addr))
            return path
        via = _lookup(plan, here, dst)
        if via is None:
            raise PlanError(f"no route from {here!r} to {dst_addr}")
        here = plan.owner_of(via)
        path.append(here)
    raise PlanError(f"routing loop from {src!r} to {dst_addr}: {path}")


def _lookup(plan, node: str, dst) -> str | None:
    best, best_len = None, -1
    for r in plan.routes:
        if r.node != node:
            continue
        net = ipaddress.ip_network("0.0.0.0/0" if r.dst == "default" else r.dst)
        if dst in net and net.prefixlen > best_len:
            best, best_len = r.via, net.prefixlen
    return best


def l2_path(plan: Plan, src_intf: str, dst_intf: str) -> list[Link]:
    """Links crossed between two L3 interfaces of one segment (BFS over switches)."""
    kinds = {n.name: n.kind for n in plan.nodes}
    by_intf = {e.intf: lk for lk in plan.links for e in (lk.a, lk.b)}
    start, goal = by_intf[src_intf], by_intf[dst_intf]
    if start is goal:
        return [start]
    first_sw = start.other(start.a.node if start.a.intf == src_intf else start.b.node).node
    frontier, seen = [(first_sw, [start])], {first_sw}
    while frontier:
        sw, path = frontier.pop(0)
        for lk in plan.links_of(sw):
            if lk is path[-1]:
                continue
            if lk is goal:
                return path + [lk]
            nxt = lk.other(sw).node
            if kinds[nxt] == "switch" and nxt not in seen:
                seen.add(nxt)
                frontier.append((nxt, path + [lk]))
    raise PlanError(f"no layer-2 path between {src_intf} and {dst_intf}")


def path_links(plan, src: str, dst_addr: str) -> tuple[str, ...]:
    """Names of the plan links a packet from node `src` to `dst_addr` crosses, in order
    (the layer-3 path, and within each segment the fewest-hop switch path, `l2_path`)."""
    out: list[str] = []
    here = src
    for nxt in l3_path(plan, src, dst_addr):
        mine = {ipaddress.ip_interface(e.ip).network: e for e in plan.ends_of(here) if e.ip}
        theirs = [e for e in plan.ends_of(nxt) if e.ip and ipaddress.ip_interface(e.ip).network in mine]
        if not theirs:
            raise PlanError(f"{here!r} and {nxt!r} share no subnet")
        net = ipaddress.ip_interface(theirs[0].ip).network
        out += [lk.name for lk in l2_path(plan, mine[net].intf, theirs[0].intf)]
        here = nxt
    return tuple(out)


def path_delay_ms(plan, src: str, dst_addr: str) -> float:
    """One-way delay the plan implies from `src` to `dst_addr` (sum over every link crossed)."""
    delays = {lk.name: lk.delay_ms for lk in plan.links}
    return sum(delays[name] for name in path_links(plan, src, dst_addr))


def l3_end(plan: Plan) -> dict[str, str]:
    """Link name -> the node at its non-switch end (its `a` end if neither is a switch)."""
    return {lk.name: lk.b.node if plan.node(lk.a.node).kind == "switch" else lk.a.node for lk in plan.links}
