"""SDN anycast steering (pure: no os-ken, no IO): one service address, per-connection flows.

Viewers fetch from ANYCAST_IP:SERVICE_PORT. That address is on no segment, so a viewer sends
to its default gateway's MAC and needs no ARP for it. On every switch a viewer attaches to
(`viewer_switches`), a punt rule sends every SYN (without ACK) to the anycast address to the
controller, above the per-connection rules, so a new connection is always steered afresh even if
it reuses an old 5-tuple; other TCP to the anycast address without a connection rule is dropped.
For each SYN the controller ranks the locations (steering.rank, title unknown), `choose()`s the
best usable one and installs (or replaces) `conn_rules()` on that switch:
- forward: the viewer's 5-tuple -> set eth_dst to the next hop (the OCA's MAC when it is on the
  viewer's segment, else the gateway's), set ipv4_dst to the location, output toward it;
- reverse: the location's reply -> set ipv4_src to the anycast address and eth_src to the
  gateway's MAC (where the viewer thinks the anycast address lives), output to the viewer.
Invariants: both rules match the full 5-tuple, so established connections keep their location
until the flow idles out (IDLE_TIMEOUT_S) even when steering changes; every rule carries a
cookie inside forwarding.APP_COOKIE/APP_COOKIE_MASK, so a (re)connecting controller deletes
them with the other flows. Ports are plan interface names; "CONTROLLER" is the controller port.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from contracts.deployment import OCA_PORT
from contracts.steering import G_HEALTH_MISS
from topologies.plan import ADDRESS_SPACE, Plan, PlanError

from . import forwarding as fw
from .steering import RankedLocation

ANYCAST_IP = "198.19.254.1"
SERVICE_PORT = OCA_PORT  # the anycast address serves on the port OCAs and the origin listen on
COOKIE_ANYCAST_PUNT = 0x0C11
COOKIE_ANYCAST_CONN = 0x0C12
PRIORITY_ANYCAST_DROP = fw.PRIORITY_STEERING
PRIORITY_ANYCAST_CONN = fw.PRIORITY_STEERING + 100
PRIORITY_ANYCAST_PUNT = fw.PRIORITY_STEERING + 200
TCP_SYN, TCP_ACK = 0x002, 0x010
IDLE_TIMEOUT_S = 30
ETH_IPV4, PROTO_TCP = 0x0800, 6
CONTROLLER = "CONTROLLER"


@dataclass(frozen=True)
class RuleSpec:
    """A flow with arbitrary OXM match fields and actions ("set", field, value) / ("out", port)."""
    switch: str
    cookie: int
    priority: int
    match: tuple[tuple[str, object], ...]
    actions: tuple[tuple, ...]
    idle_timeout_s: int = 0

    def key(self) -> tuple:
        return (self.switch, -self.priority, self.cookie, tuple(map(str, self.match)))


@dataclass(frozen=True)
class Conn:
    """One viewer TCP connection to the anycast service, as the switch sees its SYN."""
    viewer_ip: str
    viewer_port: int
    anycast_ip: str = ANYCAST_IP
    service_port: int = SERVICE_PORT


def check_anycast_ip(plan: Plan, anycast_ip: str) -> str:
    """The address if usable: inside the plan's address space, owned by no node and on no
    segment's subnet (so viewers route it to their gateway); else PlanError naming why."""
    try:
        ip = ipaddress.ip_address(anycast_ip)
    except ValueError:
        raise PlanError(f"anycast address {anycast_ip!r} is not an IPv4 address") from None
    if ip not in ADDRESS_SPACE:
        raise PlanError(f"anycast address {ip} is outside {ADDRESS_SPACE}")
    for lk in plan.links:
        for e in (lk.a, lk.b):
            if e.ip and ip in ipaddress.ip_interface(e.ip).network:
                raise PlanError(f"anycast address {ip} is on the subnet of {e.intf} ({e.ip})")
    return str(ip)


def viewer_switches(plan: Plan) -> dict[str, list[str]]:
    """Switch -> viewer hosts attached to it directly (only switches with viewers)."""
    out: dict[str, list[str]] = {}
    for v in plan.nodes_of(role="viewer"):
        for lk in plan.links_of(v.name):
            peer = lk.other(v.name).node
            if plan.node(peer).kind == "switch":
                out.setdefault(peer, []).append(v.name)
    return {sw: sorted(vs) for sw, vs in sorted(out.items())}


def punt_specs(plan: Plan, anycast_ip: str) -> dict[str, list[RuleSpec]]:
    """Per viewer switch: SYNs to the anycast address go to the controller; other anycast TCP
    that matches no connection rule is dropped (no actions)."""
    match = (("eth_type", ETH_IPV4), ("ip_proto", PROTO_TCP), ("ipv4_dst", anycast_ip))
    syn = match + (("tcp_flags", (TCP_SYN, TCP_SYN | TCP_ACK)),)
    return {sw: [RuleSpec(sw, COOKIE_ANYCAST_PUNT, PRIORITY_ANYCAST_PUNT, syn, (("out", CONTROLLER),)),
                 RuleSpec(sw, COOKIE_ANYCAST_PUNT, PRIORITY_ANYCAST_DROP, match, ())]
            for sw in viewer_switches(plan)}


def choose(ranked: list[RankedLocation]) -> RankedLocation:
    """The best usable location: the first that is not a health miss (the origin always is)."""
    for loc in ranked:
        if loc.reason.get("group") != G_HEALTH_MISS:
            return loc
    raise ValueError("no usable location in the ranking (the origin should always be there)")


def _out_port(specs: dict[str, list[fw.FlowSpec]], switch: str, mac: str) -> str:
    for s in specs[switch]:
        if s.cookie == fw.COOKIE_FORWARDING and s.eth_dst == mac:
            return s.outputs[0]
    raise PlanError(f"switch {switch!r} has no forwarding flow for {mac}")


def _end_with_ip(plan: Plan, addr: str):
    for lk in plan.links:
        for e in (lk.a, lk.b):
            if e.addr == addr:
                return e
    raise PlanError(f"address {addr} belongs to no node")


def gateway_end(plan: Plan, viewer: str):
    """The link end of the viewer's default gateway (its MAC is where the anycast address is)."""
    for r in plan.routes:
        if r.node == viewer and r.dst == "default":
            return _end_with_ip(plan, r.via)
    raise PlanError(f"viewer {viewer!r} has no default route")


def conn_rules(plan: Plan, specs: dict[str, list[fw.FlowSpec]], switch: str, conn: Conn,
               target_ip: str) -> tuple[RuleSpec, RuleSpec]:
    """(forward, reverse) rules on `switch` that carry `conn` to `target_ip` and back."""
    viewer_end = _end_with_ip(plan, conn.viewer_ip)
    gw = gateway_end(plan, viewer_end.node)
    viewer_net = ipaddress.ip_interface(viewer_end.ip).network
    on_segment = ipaddress.ip_address(target_ip) in viewer_net
    next_mac = _end_with_ip(plan, target_ip).mac if on_segment else gw.mac
    fwd = RuleSpec(switch, COOKIE_ANYCAST_CONN, PRIORITY_ANYCAST_CONN,
                   (("eth_type", ETH_IPV4), ("ip_proto", PROTO_TCP), ("ipv4_src", conn.viewer_ip),
                    ("ipv4_dst", conn.anycast_ip), ("tcp_src", conn.viewer_port),
                    ("tcp_dst", conn.service_port)),
                   (("set", "eth_dst", next_mac), ("set", "ipv4_dst", target_ip),
                    ("out", _out_port(specs, switch, next_mac))), IDLE_TIMEOUT_S)
    rev = RuleSpec(switch, COOKIE_ANYCAST_CONN, PRIORITY_ANYCAST_CONN,
                   (("eth_type", ETH_IPV4), ("ip_proto", PROTO_TCP), ("ipv4_src", target_ip),
                    ("ipv4_dst", conn.viewer_ip), ("tcp_src", conn.service_port),
                    ("tcp_dst", conn.viewer_port)),
                   (("set", "eth_src", gw.mac), ("set", "ipv4_src", conn.anycast_ip),
                    ("out", _out_port(specs, switch, viewer_end.mac))), IDLE_TIMEOUT_S)
    return fwd, rev
