"""BGP over the plan, as pure functions: ASNs, eBGP sessions, FRR configs, RIB checks.

Every AS-level link (plan.as_links) is one eBGP session between the two domains' border
routers, over the subnet they share. Gao-Rexford policy (the same one topologies.routes
computes for static routes) is written as FRR route-maps and communities:
- inbound, a route is tagged `<own ASN>:100|200|300` (from a customer, peer, provider) and gets
  local-pref 300|200|100 (customer over peer over provider); `set community` replaces any tag a
  neighbour sent, so only our own tags steer our exports;
- outbound to a peer or provider, routes tagged 200 or 300 are denied (no valley exports); own
  prefixes (untagged) and customer routes go to everyone;
- every session is `next-hop-self`: the transit LAN is shared by ISPs, transit and cloud, and a
  third-party next hop would let an ISP reach the cloud around the transit router.
Each domain originates the subnets its hosts sit on (routes.domain_prefixes). Every OCA has a
receive-only session with its router, which announces it the viewer prefixes it serves through
a per-OCA prefix-list (`oca_sessions`); the OCA runs bgpd without zebra or kernel routes. The
configs name only files under one per-node directory, so runs never share a pid file, socket
or log.

IXP route server: when the plan has a host of role ROUTE_SERVER_ROLE, the peer links between
routers on its subnet (the IXP fabric) are not bilateral sessions; each member (a router with a
peer link over the fabric) has one session with the route server instead, which runs bgpd
without zebra and has every member as `route-server-client`: transparent, so its ASN never
enters a path and the next hop stays the announcing member's fabric address. It has one Loc-RIB
and no policy of its own, so the members must peer as a full mesh (else it would hand routes
between members that do not peer; route_server() refuses such a plan). Members keep their
policy: what the route server sends is a peer route (local-pref, tag), what they send it is own
and customer routes only, and they accept a first AS other than the route server's (`no
neighbor X enforce-first-as`; off by default in FRR 8, on since 9.1).
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

from topologies.plan import ROUTE_SERVER_ROLE, Plan, PlanError, l2_segments
from topologies.routes import as_routes, compute_routes, domain_prefixes, relationships

ASN_BASE = 65001  # private 16-bit ASNs, one per routed domain in name order
OCA_ASN_BASE = 64601  # one private ASN per OCA speaker, in name order
RS_ASN = 64512  # the IXP route server's: seen in its sessions, never in a path
RS_CLIENT = "rs-client"  # Session.relation of the route server's side of a member's session
KEEPALIVE_S, HOLD_S, CONNECT_RETRY_S = 1, 3, 1
TAG = {"customer": 100, "peer": 200, "provider": 300}
LOCAL_PREF = {"customer": 300, "peer": 200, "provider": 100}
DAEMONS = ("zebra", "bgpd")


@dataclass(frozen=True)
class Session:
    """One side of an eBGP session: `router` talks to `peer` (of AS `peer_asn`, which is its
    `relation`: customer, peer or provider) from `local_addr` to `peer_addr`."""
    router: str
    peer: str
    local_addr: str
    peer_addr: str
    peer_asn: int
    relation: str


def routers_by_domain(plan: Plan) -> dict[str, str]:
    """Domain -> its border router (routes.compute_routes allows one per domain)."""
    return {n.domain: n.name for n in plan.nodes_of(kind="router")}


def asns(plan: Plan) -> dict[str, int]:
    """Domain -> ASN, for every domain with a router."""
    return {d: ASN_BASE + i for i, d in enumerate(sorted(routers_by_domain(plan)))}


def _subnet_addr(plan: Plan, node: str, net) -> str | None:
    return next((e.addr for e in plan.ends_of(node) if e.ip and ipaddress.ip_interface(e.ip).network == net), None)


def _shared_ends(plan: Plan, a: str, b: str) -> tuple[str, str]:
    """Addresses of routers a and b on the first subnet (in address order) they share."""
    mine = {ipaddress.ip_interface(e.ip).network: e.addr for e in plan.ends_of(a) if e.ip}
    theirs = {ipaddress.ip_interface(e.ip).network: e.addr for e in plan.ends_of(b) if e.ip}
    shared = sorted(set(mine) & set(theirs))
    if not shared:
        raise PlanError(f"{a} and {b} share no subnet for a BGP session")
    return mine[shared[0]], theirs[shared[0]]


@dataclass(frozen=True)
class RouteServer:
    """The IXP route server `node` (AS `asn`, `addr` on `subnet`) and its clients: member
    router -> its address on the subnet."""
    node: str
    addr: str
    asn: int
    subnet: str
    clients: tuple[tuple[str, str], ...]


def route_server(plan: Plan) -> RouteServer | None:
    """The plan's route server, or None. Its clients are the routers with a peer AS link over
    its subnet; those must peer as a full mesh and have no other AS link over it (a route server
    without per-client policy gives every client every other client's routes)."""
    nodes = plan.nodes_of(role=ROUTE_SERVER_ROLE)
    if not nodes:
        return None
    if len(nodes) > 1 or nodes[0].kind != "host":
        raise PlanError(f"route server: want one host of role {ROUTE_SERVER_ROLE!r}, got "
                        f"{', '.join(f'{n.name} ({n.kind})' for n in nodes)}")
    rs = nodes[0].name
    ends = [e for e in plan.ends_of(rs) if e.ip]
    if len(ends) != 1:
        raise PlanError(f"route server {rs}: want one address (on the fabric), got {len(ends)}")
    net = ipaddress.ip_interface(ends[0].ip).network
    routers = routers_by_domain(plan)
    over = [x for x in plan.as_links if x[0] in routers and x[1] in routers
            and _shared_net(plan, routers[x[0]], routers[x[1]]) == net]
    members = sorted({d for x in over for d in x[:2]})
    peers = {frozenset(x[:2]) for x in over if x[2] == "peer"}
    for x in over:
        if x[2] != "peer":
            raise PlanError(f"route server {rs}: AS link {x} over {net} is not a peer link")
    for i, a in enumerate(members):
        for b in members[i + 1:]:
            if frozenset((a, b)) not in peers:
                raise PlanError(f"route server {rs}: members {a} and {b} do not peer; a route server "
                                f"without per-client policy would give them each other's routes")
    clients = tuple((routers[d], _subnet_addr(plan, routers[d], net)) for d in members)
    return RouteServer(rs, ends[0].addr, RS_ASN, str(net), tuple(sorted(clients)))


def _shared_net(plan: Plan, a: str, b: str):
    local, _ = _shared_ends(plan, a, b)
    return next(ipaddress.ip_interface(e.ip).network for e in plan.ends_of(a) if e.addr == local)


def _via_rs(plan: Plan, rs: RouteServer | None, a: str, b: str) -> bool:
    """True if routers a and b exchange routes through the route server."""
    return rs is not None and str(_shared_net(plan, a, b)) == rs.subnet


def sessions(plan: Plan) -> dict[str, list[Session]]:
    """Speaker -> its sessions (sorted by peer): two sides per AS link, except that the peer
    links over the route server's subnet become one session per member with the route server
    (its side has relation RS_CLIENT; it is a key here too)."""
    routers, asn, rel = routers_by_domain(plan), asns(plan), relationships(plan.as_links)
    rs = route_server(plan)
    out: dict[str, list[Session]] = {r: [] for r in routers.values()}
    for a, b, _kind in plan.as_links:
        for x, y in ((a, b), (b, a)):
            if x not in routers or y not in routers:
                raise PlanError(f"as_links: {x!r} or {y!r} has no router for a BGP session")
            if _via_rs(plan, rs, routers[x], routers[y]):
                continue
            local, remote = _shared_ends(plan, routers[x], routers[y])
            out[routers[x]].append(Session(routers[x], routers[y], local, remote, asn[y], rel[x][y]))
    if rs is not None:
        out[rs.node] = []
        for member, addr in rs.clients:
            out[member].append(Session(member, rs.node, addr, rs.addr, rs.asn, "peer"))
            out[rs.node].append(Session(rs.node, member, rs.addr, addr, asn[plan.node(member).domain], RS_CLIENT))
    return {r: sorted(s, key=lambda s: s.peer) for r, s in out.items()}


def as_links_over(plan: Plan, link_name: str) -> list[tuple[str, str, str]]:
    """The AS links whose routes cross the plan link `link_name`: their session runs from one of
    its addresses (for a link over the route server, the session of either member with it)."""
    lk = next((lk for lk in plan.links if lk.name == link_name), None)
    if lk is None:
        raise PlanError(f"no link {link_name!r} in plan {plan.name!r}")
    addrs = {e.addr for e in (lk.a, lk.b) if e.ip}
    routers, rs, out = routers_by_domain(plan), route_server(plan), []
    for a, b, kind in plan.as_links:
        ends = set(_shared_ends(plan, routers[a], routers[b]))
        if _via_rs(plan, rs, routers[a], routers[b]):
            ends.add(rs.addr)
        if ends & addrs:
            out.append((a, b, kind))
    return out


def router_id(plan: Plan, router: str) -> str:
    """The router's lowest address."""
    return str(min(ipaddress.ip_address(e.addr) for e in plan.ends_of(router) if e.ip))


def originated(plan: Plan) -> dict[str, list[str]]:
    """Router -> the prefixes it announces (its domain's host subnets)."""
    pref = domain_prefixes(plan.nodes, l2_segments(plan))
    return {r: sorted(pref.get(d, [])) for d, r in routers_by_domain(plan).items()}


def daemon_paths(run_dir: Path, router: str, daemon: str) -> dict[str, Path]:
    """Files of one daemon of one router, all under run_dir/router."""
    d = run_dir / router
    return {"dir": d, "conf": d / f"{daemon}.conf", "pid": d / f"{daemon}.pid",
            "log": d / f"{daemon}.log", "zapi": d / "zserv.api", "vty": d}


def daemon_argv(run_dir: Path, router: str, daemon: str) -> list[str]:
    """Command line of `daemon` for `router`: own config, pid file, zebra socket, vty socket
    directory and log; no TCP vty port. The daemon drops to Debian's `frr` user (root without
    the frrvty group is refused), so the caller makes the router's folder that user's."""
    p = daemon_paths(run_dir, router, daemon)
    return [f"/usr/lib/frr/{daemon}", "-f", str(p["conf"]), "-i", str(p["pid"]), "-z", str(p["zapi"]),
            "--vty_socket", str(p["vty"]), "--log", f"file:{p['log']}", "-P", "0"]


# ---- OCAs learn the prefixes they serve over BGP ------------------------------------------
@dataclass(frozen=True)
class OcaSession:
    """The session of OCA `oca` (receive-only, AS `oca_asn`) with its domain's router `router`
    (AS `router_asn`) on the subnet they share; `prefixes`: what the router announces to it."""
    oca: str
    router: str
    oca_addr: str
    router_addr: str
    oca_asn: int
    router_asn: int
    prefixes: tuple[str, ...]


def viewer_prefixes(plan: Plan) -> dict[str, str]:
    """Domain -> the LAN prefix its viewers live in."""
    return {v.domain: str(ipaddress.ip_interface(next(e.ip for e in plan.ends_of(v.name) if e.ip)).network)
            for v in plan.nodes_of(role="viewer")}


def oca_sessions(plan: Plan) -> dict[str, OcaSession]:
    """OCA -> its session. An embedded OCA is announced its ISP's viewer prefix; an IXP-site OCA
    every ISP's viewer prefix that its router has a route for (it learns them from the ISPs'
    IXP sessions, so an ISP off the IXP is withdrawn from it)."""
    routers, asn, vp = routers_by_domain(plan), asns(plan), viewer_prefixes(plan)
    out = {}
    for i, n in enumerate(sorted(plan.nodes_of(role="oca"), key=lambda n: n.name)):
        if n.domain not in routers:
            raise PlanError(f"OCA {n.name}: domain {n.domain!r} has no router for its BGP session")
        mine, theirs = _shared_ends(plan, n.name, routers[n.domain])
        prefixes = (vp[n.domain],) if n.tier == "embedded" else tuple(sorted(vp.values()))
        out[n.name] = OcaSession(n.name, routers[n.domain], mine, theirs, OCA_ASN_BASE + i,
                                 asn[n.domain], prefixes)
    return out


def oca_prefix_list(s: OcaSession, prefix: str, permit: bool) -> str:
    """The prefix-list line of `prefix` (one of s.prefixes) in the router's list for the OCA;
    `permit=False` withdraws it from the OCA (vtysh: conf t, this line, soft clear out)."""
    return f"ip prefix-list OCA-{s.oca} seq {5 * (1 + s.prefixes.index(prefix))} " \
           f"{'permit' if permit else 'deny'} {prefix}"


def _router_oca_policy(plan: Plan, router: str) -> list[str]:
    lines = []
    for s in (s for s in oca_sessions(plan).values() if s.router == router):
        lines += [oca_prefix_list(s, p, True) for p in s.prefixes]
        lines += [f"route-map TO-OCA-{s.oca} permit 10", f" match ip address prefix-list OCA-{s.oca}",
                  "exit", "!"]
    return lines


def _oca_neighbors(plan: Plan, router: str) -> tuple[list[str], list[str]]:
    """(neighbor lines, address-family lines) of `router`'s OCA sessions: it announces the
    OCA's prefix-list and accepts nothing from it."""
    ss = [s for s in oca_sessions(plan).values() if s.router == router]
    top = [x for s in ss for x in (
        f" neighbor {s.oca_addr} remote-as {s.oca_asn}", f" neighbor {s.oca_addr} description {s.oca} (oca)",
        f" neighbor {s.oca_addr} timers connect {CONNECT_RETRY_S}",
        f" neighbor {s.oca_addr} advertisement-interval 0")]
    af = [x for s in ss for x in (
        f"  neighbor {s.oca_addr} activate", f"  neighbor {s.oca_addr} route-map NOTHING in",
        f"  neighbor {s.oca_addr} route-map TO-OCA-{s.oca} out")]
    return top, af


def render_oca_bgpd(plan: Plan, oca: str) -> str:
    """bgpd.conf of an OCA's receive-only speaker (run with -n -Z: no kernel, no zebra)."""
    s = oca_sessions(plan)[oca]
    return "\n".join([
        f"hostname {oca}", "log timestamp precision 3", "!",
        "route-map ACCEPT permit 10", "exit", "route-map NOTHING deny 10", "exit", "!",
        f"router bgp {s.oca_asn}", f" bgp router-id {s.oca_addr}", " bgp log-neighbor-changes",
        " no bgp default ipv4-unicast", f" timers bgp {KEEPALIVE_S} {HOLD_S}",
        f" neighbor {s.router_addr} remote-as {s.router_asn}",
        f" neighbor {s.router_addr} timers connect {CONNECT_RETRY_S}",
        " address-family ipv4 unicast", f"  neighbor {s.router_addr} activate",
        f"  neighbor {s.router_addr} route-map ACCEPT in", f"  neighbor {s.router_addr} route-map NOTHING out",
        " exit-address-family", "exit", "!", "line vty", "!"]) + "\n"


def speaker_argv(run_dir: Path, node: str) -> list[str]:
    """bgpd of an OCA or the route server: no zebra (-Z), no kernel routes (-n), files under
    run_dir/node."""
    p = daemon_paths(run_dir, node, "bgpd")
    return ["/usr/lib/frr/bgpd", "-n", "-Z", "-f", str(p["conf"]), "-i", str(p["pid"]),
            "--vty_socket", str(p["vty"]), "--log", f"file:{p['log']}", "-P", "0"]


def render_zebra(plan: Plan, router: str) -> str:
    return f"hostname {router}\nlog timestamp precision 3\n!\nip forwarding\n!\nline vty\n!\n"


def render_bgpd(plan: Plan, router: str) -> str:
    """bgpd.conf of `router`: its sessions with the Gao-Rexford route-maps above."""
    me = plan.node(router).domain
    asn = asns(plan)[me]
    lines = [f"hostname {router}", "log timestamp precision 3", "!",
             f"bgp community-list standard PEER-OR-PROVIDER seq 5 permit {asn}:{TAG['peer']}",
             f"bgp community-list standard PEER-OR-PROVIDER seq 10 permit {asn}:{TAG['provider']}", "!"]
    for rel in ("customer", "peer", "provider"):
        lines += [f"route-map FROM-{rel.upper()} permit 10", f" set local-preference {LOCAL_PREF[rel]}",
                  f" set community {asn}:{TAG[rel]}", "exit", "!"]
    lines += ["route-map TO-CUSTOMER permit 10", "exit", "!",
              "route-map TO-PEER-OR-PROVIDER deny 10", " match community PEER-OR-PROVIDER", "exit",
              "route-map TO-PEER-OR-PROVIDER permit 20", "exit", "!",
              "route-map NOTHING deny 10", "exit", "!", *_router_oca_policy(plan, router),
              f"router bgp {asn}", f" bgp router-id {router_id(plan, router)}",
              " bgp log-neighbor-changes", " no bgp default ipv4-unicast",
              f" timers bgp {KEEPALIVE_S} {HOLD_S}"]
    mine, rs = sessions(plan)[router], route_server(plan)
    for s in mine:
        to_rs = rs is not None and s.peer == rs.node
        lines += [f" neighbor {s.peer_addr} remote-as {s.peer_asn}",
                  f" neighbor {s.peer_addr} description {s.peer} ({'rs peer' if to_rs else s.relation})",
                  f" neighbor {s.peer_addr} update-source {s.local_addr}",
                  f" neighbor {s.peer_addr} timers connect {CONNECT_RETRY_S}",
                  f" neighbor {s.peer_addr} advertisement-interval 0"]
        if to_rs:  # its paths start with the announcing member's AS
            lines.append(f" no neighbor {s.peer_addr} enforce-first-as")
    oca_top, oca_af = _oca_neighbors(plan, router)
    lines += oca_top + [" address-family ipv4 unicast", "  maximum-paths 1"]
    lines += [f"  network {p}" for p in originated(plan)[router]]
    for s in mine:
        out = "TO-CUSTOMER" if s.relation == "customer" else "TO-PEER-OR-PROVIDER"
        lines += [f"  neighbor {s.peer_addr} activate", f"  neighbor {s.peer_addr} next-hop-self",
                  f"  neighbor {s.peer_addr} route-map FROM-{s.relation.upper()} in",
                  f"  neighbor {s.peer_addr} route-map {out} out"]
    lines += oca_af + [" exit-address-family", "exit", "!", "line vty", "!"]
    return "\n".join(lines) + "\n"


def render_rs_bgpd(plan: Plan) -> str:
    """bgpd.conf of the route server (run with -n -Z like an OCA's speaker): every member a
    route-server-client, no policy of its own (each member filters what it sends and tags what
    it receives); refuses a plan without a route server."""
    rs = route_server(plan)
    if rs is None:
        raise PlanError(f"plan {plan.name!r} has no host of role {ROUTE_SERVER_ROLE!r}")
    ss = sessions(plan)[rs.node]
    lines = [f"hostname {rs.node}", "log timestamp precision 3", "!",
             f"router bgp {rs.asn}", f" bgp router-id {rs.addr}", " bgp log-neighbor-changes",
             " no bgp default ipv4-unicast", " no bgp ebgp-requires-policy",
             f" timers bgp {KEEPALIVE_S} {HOLD_S}"]
    for s in ss:
        lines += [f" neighbor {s.peer_addr} remote-as {s.peer_asn}",
                  f" neighbor {s.peer_addr} description {s.peer} ({RS_CLIENT})",
                  f" neighbor {s.peer_addr} timers connect {CONNECT_RETRY_S}",
                  f" neighbor {s.peer_addr} advertisement-interval 0"]
    lines.append(" address-family ipv4 unicast")
    for s in ss:
        lines += [f"  neighbor {s.peer_addr} activate", f"  neighbor {s.peer_addr} route-server-client"]
    return "\n".join(lines + [" exit-address-family", "exit", "!", "line vty", "!"]) + "\n"


def render(plan: Plan, router: str) -> dict[str, str]:
    """Daemon -> config text for `router`."""
    return {"zebra": render_zebra(plan, router), "bgpd": render_bgpd(plan, router)}


# ---- reading what the daemons say (vtysh JSON), pure ------------------------------------
def established(summary: dict) -> set[str]:
    """Peer addresses in state Established, from `show bgp ipv4 unicast summary json`."""
    peers = summary.get("peers") or summary.get("ipv4Unicast", {}).get("peers", {})
    return {addr for addr, p in peers.items() if p.get("state") == "Established"}


def drops(summary: dict) -> int:
    """Sessions dropped since the daemon started (each a flap), from the summary JSON."""
    peers = summary.get("peers") or summary.get("ipv4Unicast", {}).get("peers", {})
    return sum(int(p.get("connectionsDropped", 0)) for p in peers.values())


def bgp_routes(route_json: dict) -> dict[str, str]:
    """Prefix -> next-hop address of the selected BGP route that zebra has installed in the
    kernel, from `show ip route json`."""
    out = {}
    for prefix, entries in route_json.items():
        for r in entries:
            if r.get("protocol") == "bgp" and r.get("selected") and r.get("installed"):
                hops = [h["ip"] for h in r.get("nexthops", []) if h.get("ip") and h.get("active")]
                if len(hops) != 1:
                    raise PlanError(f"{prefix}: want one active next hop, got {hops}")
                out[prefix] = hops[0]
    return out


def expected_routes(plan: Plan, as_links=None) -> dict[str, dict[str, str]]:
    """Router -> prefix -> next hop of the static plan (topologies.routes), which BGP must equal;
    with `as_links`, of the plan as if only those AS links had sessions up."""
    routes = plan.routes if as_links is None else \
        compute_routes(plan.nodes, plan.links, tuple(as_links), l2_segments(plan))
    out: dict[str, dict[str, str]] = {r: {} for r in routers_by_domain(plan).values()}
    for r in routes:
        if r.node in out:
            out[r.node][r.dst] = r.via
    return out


def rib_diff(want: dict[str, str], have: dict[str, str]) -> list[str]:
    """What differs between two prefix -> next hop maps, one line each (empty: equal)."""
    return [f"{p}: want via {want.get(p)}, have via {have.get(p)}"
            for p in sorted(set(want) | set(have)) if want.get(p) != have.get(p)]


def best_as_paths(bgp_json: dict) -> dict[str, list[int]]:
    """Prefix -> AS path of the best route, from `show bgp ipv4 unicast json` (FRR 8)."""
    out = {}
    for prefix, paths in bgp_json.get("routes", {}).items():
        for p in paths:
            if p.get("bestpath"):
                seg = p.get("path", "")
                out[prefix] = [int(x) for x in seg.split()] if isinstance(seg, str) else []
    return out


def rs_route_problems(plan: Plan, member: str, bgp_json: dict) -> list[str]:
    """What is wrong with what `member` learned through the route server, from its `show bgp
    ipv4 unicast json` (FRR 8), one line each (empty: all right). Every other member's own
    prefixes must come from the route server with that member's fabric address as next hop and
    an AS path starting with that member's AS, and no path from the route server may carry the
    route server's ASN (a transparent route server never prepends it), nor any prefix that no
    other member may export to it (only own and customer routes: no valley)."""
    rs = route_server(plan)
    if rs is None or member not in dict(rs.clients):
        raise PlanError(f"{member} is not a client of a route server in plan {plan.name!r}")
    asn, mine = asns(plan), originated(plan)
    pref = domain_prefixes(plan.nodes, l2_segments(plan))
    best = as_routes(plan.as_links, sorted(pref))
    me = plan.node(member).domain
    exportable = {p for other, _ in rs.clients if other != member
                  for owner, r in best[plan.node(other).domain].items()
                  if r.learned in ("own", "customer") and owner != me for p in pref[owner]}
    got: dict[str, list[dict]] = {}
    out = []
    for prefix, paths in bgp_json.get("routes", {}).items():
        for p in paths:
            if p.get("peerId") != rs.addr:
                continue
            hops = [h.get("ip") for h in p.get("nexthops", [])]
            path = [int(x) for x in str(p.get("path", "")).split()]
            got.setdefault(prefix, []).append({"hops": hops, "path": path})
            if rs.asn in path:
                out.append(f"{prefix}: AS path {path} carries the route server's AS{rs.asn}")
            if prefix not in exportable:
                out.append(f"{prefix}: via the route server, but no other member exports it (a valley)")
    for other, addr in rs.clients:
        if other == member:
            continue
        first = asn[plan.node(other).domain]
        for prefix in mine[other]:
            seen = got.get(prefix, [])
            if not any(g["hops"] == [addr] and g["path"][:1] == [first] for g in seen):
                out.append(f"{prefix} of {other}: want via the route server with next hop {addr} and "
                           f"first AS{first}, have {seen or 'nothing'}")
    return out


def valley_free(as_links, path: list[str]) -> bool:
    """True if the domain path (first hop first) is up* peer? down*: after a peer or provider->
    customer step, no customer->provider or peer step follows (Gao-Rexford's valley-free rule)."""
    rel = relationships(as_links)
    descending = False
    for x, y in zip(path, path[1:]):
        what = rel.get(x, {}).get(y)  # what y is to x
        if what is None:
            raise PlanError(f"path {path}: {x} and {y} are not neighbours")
        if what in ("peer", "provider") and descending:
            return False
        if what in ("peer", "customer"):
            descending = True
    return True
