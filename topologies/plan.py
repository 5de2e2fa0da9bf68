"""The topology plan: frozen, validated, pure data (no root, no mininet import).

A `Plan` is the single description of an emulated Internet that every other part reads:
the builder realizes it, the controller installs forwarding from its JSON export, and
experiments derive expectations (hops, RTTs, link classes) from it.

Invariants enforced by `Plan.validate()` (called by the constructor):
- node names match ``[a-z][a-z0-9]{0,9}`` and are unique; switch names start with PREFIX,
  so every bridge and switch port visible in the root namespace carries the ocalab prefix;
- interface names (``<node>-<port>``) fit IFNAMSIZ (15 characters);
- every address lies inside ADDRESS_SPACE (198.18.0.0/15), is unique, and all addresses on
  one layer-2 segment share one subnet; switches have no addresses;
- MACs are explicit, unicast and unique; switch DPIDs are explicit and unique;
- link parameters are within range and carry units in their names;
- every route's next hop is on a subnet the node is attached to.
"""
from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
import json
import re
from dataclasses import dataclass
from typing import Any

PREFIX = "oc"
ADDRESS_SPACE = ipaddress.ip_network("198.18.0.0/15")
NODE_KINDS = ("host", "router", "switch")
LINK_CLASSES = ("access", "internal", "peering", "transit", "backbone")
ROUTE_SERVER_ROLE = "routeserver"  # a host that speaks BGP only (an IXP route server): no data
                                   # traffic, no route off its one subnet
AS_RELATIONS = ("peer", "customer")  # (a, b, "customer") means a is a customer of b
_NAME_RE = re.compile(r"^[a-z][a-z0-9]{0,9}$")
_MAC_RE = re.compile(r"^([0-9a-f]{2}:){5}[0-9a-f]{2}$")
IFNAMSIZ_MAX = 15
# A link planned at most this slow one way (and without jitter or loss) gets no delay line: the
# veth pair and its switch port realize it alone. The OVS userspace datapath takes 0.1-0.27 ms
# one way per switch it crosses (fidelity pairs over two such ports: min RTT 0.17-0.54 ms), so a
# LAN or exchange port is planned at this value (topologies.catalog.MetroParams.lan_delay_ms),
# and the fidelity gate judges the pairs over it against that plan like any other.
SWITCH_PORT_DELAY_MS = 0.1


class PlanError(ValueError):
    """A plan is invalid; the message names the offending field."""


def _fail(where: str, msg: str) -> None:
    raise PlanError(f"{where}: {msg}")


@dataclass(frozen=True)
class Node:
    """One emulated node. `domain` is the AS it belongs to (isp1, netflix, transit, cloud, ixp)."""
    name: str
    kind: str
    role: str
    domain: str
    dpid: int | None = None
    tier: str | None = None  # OCA tier: "embedded" or "ixp"


@dataclass(frozen=True)
class LinkEnd:
    """One end of a link: interface `<node>-<port>` with its MAC and optional CIDR address."""
    node: str
    port: int
    mac: str
    ip: str | None = None

    @property
    def intf(self) -> str:
        return f"{self.node}-{self.port}"

    @property
    def addr(self) -> str | None:
        """The address without prefix length, or None."""
        return self.ip.split("/")[0] if self.ip else None


@dataclass(frozen=True)
class Link:
    """A bidirectional link; delay_ms, jitter_ms and loss_pct apply to each direction."""
    a: LinkEnd
    b: LinkEnd
    cls: str
    bw_mbps: float
    delay_ms: float
    jitter_ms: float = 0.0
    loss_pct: float = 0.0
    queue_pkts: int = 1000

    @property
    def name(self) -> str:
        return f"{self.a.node}:{self.a.port}-{self.b.node}:{self.b.port}"

    @property
    def impaired(self) -> bool:
        """True when the link needs delay, jitter or loss emulation (not only a rate): a delay
        over SWITCH_PORT_DELAY_MS, or any jitter or loss."""
        return self.delay_ms > SWITCH_PORT_DELAY_MS + 1e-9 or self.jitter_ms > 0 or self.loss_pct > 0

    def end(self, node: str) -> LinkEnd:
        if self.a.node == node:
            return self.a
        if self.b.node == node:
            return self.b
        raise KeyError(node)

    def other(self, node: str) -> LinkEnd:
        return self.b if self.a.node == node else self.a


@dataclass(frozen=True)
class Route:
    """A static route on a host or router: `dst` is a CIDR or "default"; `via` a next-hop address."""
    node: str
    dst: str
    via: str


@dataclass(frozen=True)
class Plan:
    name: str
    nodes: tuple[Node, ...]
    links: tuple[Link, ...]
    routes: tuple[Route, ...] = ()
    as_links: tuple[tuple[str, str, str], ...] = ()
    params: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        self.validate()
        # a cache, not a field: every Plan (also one made by dataclasses.replace) builds its own
        object.__setattr__(self, "_by_name", {n.name: n for n in self.nodes})

    # ---- queries -------------------------------------------------------------------
    def node(self, name: str) -> Node:
        try:
            return self._by_name[name]
        except KeyError:
            raise PlanError(f"node {name!r} is not in plan {self.name!r}") from None

    def nodes_of(self, kind: str | None = None, role: str | None = None,
                 domain: str | None = None) -> list[Node]:
        return [n for n in self.nodes if (kind is None or n.kind == kind)
                and (role is None or n.role == role) and (domain is None or n.domain == domain)]

    def links_of(self, node: str) -> list[Link]:
        return [lk for lk in self.links if node in (lk.a.node, lk.b.node)]

    def ends_of(self, node: str) -> list[LinkEnd]:
        return [lk.end(node) for lk in self.links_of(node)]

    def addresses(self, node: str) -> list[str]:
        return [e.addr for e in self.ends_of(node) if e.ip]

    def primary_ip(self, node: str) -> str:
        addrs = self.addresses(node)
        if not addrs:
            raise PlanError(f"node {node!r} has no address")
        return addrs[0]

    def owner_of(self, addr: str) -> str:
        for lk in self.links:
            for e in (lk.a, lk.b):
                if e.addr == addr:
                    return e.node
        raise PlanError(f"address {addr} belongs to no node")

    def param(self, key: str, default: Any = None) -> Any:
        return dict(self.params).get(key, default)

    # ---- export --------------------------------------------------------------------
    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["params"] = dict(self.params)
        d["as_links"] = [list(x) for x in self.as_links]
        d["format"] = "ocalab-plan/1"
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, sort_keys=True)

    def plan_hash(self) -> str:
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:16]

    @classmethod
    def from_dict(cls, d: dict) -> "Plan":
        d = dict(d)
        fmt = d.pop("format", "ocalab-plan/1")
        if fmt != "ocalab-plan/1":
            _fail("format", f"unsupported plan format {fmt!r}")
        _check_keys("plan", d, {f.name for f in dataclasses.fields(cls)})
        nodes = tuple(_build(Node, n, f"nodes[{i}]") for i, n in enumerate(d.get("nodes", [])))
        links = []
        for i, lk in enumerate(d.get("links", [])):
            lk = dict(lk)
            _check_keys(f"links[{i}]", lk, {f.name for f in dataclasses.fields(Link)})
            for side in ("a", "b"):
                lk[side] = _build(LinkEnd, lk.get(side, {}), f"links[{i}].{side}")
            links.append(_build(Link, lk, f"links[{i}]"))
        routes = tuple(_build(Route, r, f"routes[{i}]") for i, r in enumerate(d.get("routes", [])))
        return cls(name=d.get("name", ""), nodes=nodes, links=tuple(links), routes=routes,
                   as_links=tuple(tuple(x) for x in d.get("as_links", [])),
                   params=tuple(sorted(dict(d.get("params", {})).items())))

    @classmethod
    def from_json(cls, text: str) -> "Plan":
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as e:
            raise PlanError(f"plan JSON: {e}") from None

    # ---- validation ----------------------------------------------------------------
    def validate(self) -> None:
        if not self.name or not re.match(r"^[a-z0-9_-]{1,32}$", self.name):
            _fail("name", f"plan name {self.name!r} must be 1-32 of [a-z0-9_-]")
        names = _validate_nodes(self.nodes)
        _validate_links(self.links, names)
        segments = l2_segments(self)
        _validate_subnets(self, segments)
        _validate_routes(self, names)
        _validate_as_links(self)


def _check_keys(where: str, d: dict, allowed: set[str]) -> None:
    unknown = sorted(set(d) - allowed)
    if unknown:
        _fail(where, f"unknown option(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")


def _build(cls, d: dict, where: str):
    if not isinstance(d, dict):
        _fail(where, f"expected an object, got {type(d).__name__}")
    _check_keys(where, d, {f.name for f in dataclasses.fields(cls)})
    try:
        return cls(**d)
    except TypeError as e:
        raise PlanError(f"{where}: {e}") from None


def _validate_nodes(nodes: tuple[Node, ...]) -> dict[str, Node]:
    names: dict[str, Node] = {}
    dpids: dict[int, str] = {}
    for i, n in enumerate(nodes):
        where = f"nodes[{i}] ({n.name!r})"
        if not isinstance(n.name, str) or not _NAME_RE.match(n.name):
            _fail(f"{where}.name", "must match [a-z][a-z0-9]{0,9} (at most 10 characters)")
        if n.name in names:
            _fail(f"{where}.name", f"duplicate node name {n.name!r}")
        if n.kind not in NODE_KINDS:
            _fail(f"{where}.kind", f"{n.kind!r} is not one of {NODE_KINDS}")
        if n.kind == "switch":
            if not n.name.startswith(PREFIX):
                _fail(f"{where}.name", f"switch names must start with {PREFIX!r} (they appear in the root namespace)")
            if not isinstance(n.dpid, int) or isinstance(n.dpid, bool) or not 0 < n.dpid < 2 ** 64:
                _fail(f"{where}.dpid", f"switches need an explicit dpid in 1..2^64-1, got {n.dpid!r}")
            if n.dpid in dpids:
                _fail(f"{where}.dpid", f"dpid {n.dpid} already used by {dpids[n.dpid]!r}")
            dpids[n.dpid] = n.name
        elif n.dpid is not None:
            _fail(f"{where}.dpid", "only switches have a dpid")
        if n.tier not in (None, "embedded", "ixp"):
            _fail(f"{where}.tier", f"{n.tier!r} is not embedded or ixp")
        names[n.name] = n
    return names


def _validate_links(links: tuple[Link, ...], names: dict[str, Node]) -> None:
    ports: set[tuple[str, int]] = set()
    macs: dict[str, str] = {}
    ips: dict[str, str] = {}
    for i, lk in enumerate(links):
        where = f"links[{i}]"
        if lk.cls not in LINK_CLASSES:
            _fail(f"{where}.cls", f"{lk.cls!r} is not one of {LINK_CLASSES}")
        _range(f"{where}.bw_mbps", lk.bw_mbps, 0.001, 100000, low_open=False)
        _range(f"{where}.delay_ms", lk.delay_ms, 0, 2000)
        _range(f"{where}.jitter_ms", lk.jitter_ms, 0, 1000)
        if lk.jitter_ms > lk.delay_ms:
            _fail(f"{where}.jitter_ms", f"jitter {lk.jitter_ms} ms exceeds delay {lk.delay_ms} ms")
        _range(f"{where}.loss_pct", lk.loss_pct, 0, 99.999)
        if not isinstance(lk.queue_pkts, int) or not 1 <= lk.queue_pkts <= 100000:
            _fail(f"{where}.queue_pkts", f"must be an integer in 1..100000, got {lk.queue_pkts!r}")
        if lk.a.node == lk.b.node:
            _fail(where, f"link connects {lk.a.node!r} to itself")
        for side, e in (("a", lk.a), ("b", lk.b)):
            _validate_end(f"{where}.{side}", e, names, ports, macs, ips)


def _range(where: str, v: Any, lo: float, hi: float, low_open: bool = False) -> None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v <= hi:
        _fail(where, f"must be a number in [{lo}, {hi}], got {v!r}")


def _validate_end(where, e: LinkEnd, names, ports, macs, ips) -> None:
    if e.node not in names:
        _fail(f"{where}.node", f"unknown node {e.node!r}")
    if not isinstance(e.port, int) or isinstance(e.port, bool) or not 0 <= e.port <= 999:
        _fail(f"{where}.port", f"must be an integer in 0..999, got {e.port!r}")
    if (e.node, e.port) in ports:
        _fail(f"{where}.port", f"port {e.port} of {e.node!r} is used twice")
    ports.add((e.node, e.port))
    if len(e.intf) > IFNAMSIZ_MAX:
        _fail(f"{where}", f"interface name {e.intf!r} is longer than {IFNAMSIZ_MAX} characters")
    if not isinstance(e.mac, str) or not _MAC_RE.match(e.mac) or int(e.mac[:2], 16) & 1:
        _fail(f"{where}.mac", f"{e.mac!r} is not a lower-case unicast MAC")
    if e.mac in macs:
        _fail(f"{where}.mac", f"{e.mac} already used by {macs[e.mac]}")
    macs[e.mac] = e.intf
    kind = names[e.node].kind
    if kind == "switch" and e.ip is not None:
        _fail(f"{where}.ip", f"switch port {e.intf} must not have an address")
    if kind != "switch":
        if e.ip is None:
            _fail(f"{where}.ip", f"{kind} interface {e.intf} needs an address")
        try:
            if not isinstance(e.ip, str) or "/" not in e.ip:
                raise ValueError
            iface = ipaddress.ip_interface(e.ip)
        except ValueError:
            _fail(f"{where}.ip", f"{e.ip!r} is not an address with prefix length")
        if iface.ip not in ADDRESS_SPACE or iface.network.subnet_of(ADDRESS_SPACE) is False:
            _fail(f"{where}.ip", f"{e.ip} is outside the plan's address space {ADDRESS_SPACE}")
        if iface.ip in (iface.network.network_address, iface.network.broadcast_address) \
                and iface.network.prefixlen < 31:
            _fail(f"{where}.ip", f"{e.ip} is a network or broadcast address")
        if str(iface.ip) in ips:
            _fail(f"{where}.ip", f"{iface.ip} already used by {ips[str(iface.ip)]}")
        ips[str(iface.ip)] = e.intf


def l2_segments(plan: Plan) -> list[list[LinkEnd]]:
    """Group L3 link ends into layer-2 segments (a switch cluster or a point-to-point link)."""
    kinds = {n.name: n.kind for n in plan.nodes}
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def key(e: LinkEnd) -> str:
        return f"sw:{e.node}" if kinds[e.node] == "switch" else f"if:{e.intf}"

    for lk in plan.links:
        parent[find(key(lk.a))] = find(key(lk.b))
    groups: dict[str, list[LinkEnd]] = {}
    for lk in plan.links:
        for e in (lk.a, lk.b):
            if kinds[e.node] != "switch":
                groups.setdefault(find(key(e)), []).append(e)
    return list(groups.values())


def _validate_subnets(plan: Plan, segments: list[list[LinkEnd]]) -> None:
    seen: dict[ipaddress.IPv4Network, str] = {}
    for seg in segments:
        nets = {ipaddress.ip_interface(e.ip).network for e in seg}
        if len(nets) != 1:
            _fail("links", f"segment with {', '.join(e.intf for e in seg)} mixes subnets "
                           f"{', '.join(sorted(map(str, nets)))}")
        net = nets.pop()
        for other, where in seen.items():
            if net.overlaps(other):
                _fail("links", f"subnet {net} overlaps {other}: two segments ({where} and {seg[0].intf})")
        seen[net] = seg[0].intf


def _validate_routes(plan: Plan, names: dict[str, Node]) -> None:
    for i, r in enumerate(plan.routes):
        where = f"routes[{i}]"
        if r.node not in names:
            _fail(f"{where}.node", f"unknown node {r.node!r}")
        if names[r.node].kind == "switch":
            _fail(f"{where}.node", f"switch {r.node!r} cannot have routes")
        if r.dst != "default":
            try:
                net = ipaddress.ip_network(r.dst)
            except ValueError:
                _fail(f"{where}.dst", f"{r.dst!r} is not a CIDR network or 'default'")
            if not net.subnet_of(ADDRESS_SPACE):
                _fail(f"{where}.dst", f"{r.dst} is outside {ADDRESS_SPACE}")
        try:
            via = ipaddress.ip_address(r.via)
        except ValueError:
            _fail(f"{where}.via", f"{r.via!r} is not an address")
        nets = [ipaddress.ip_interface(e.ip).network for lk in plan.links for e in (lk.a, lk.b)
                if e.node == r.node and e.ip]
        if not any(via in n for n in nets):
            _fail(f"{where}.via", f"next hop {r.via} is not on a subnet of {r.node!r}")


def _validate_as_links(plan: Plan) -> None:
    domains = {n.domain for n in plan.nodes}
    for i, x in enumerate(plan.as_links):
        if len(x) != 3 or x[2] not in AS_RELATIONS:
            _fail(f"as_links[{i}]", f"expected (as_a, as_b, one of {AS_RELATIONS}), got {x!r}")
        for d in x[:2]:
            if d not in domains:
                _fail(f"as_links[{i}]", f"unknown domain {d!r}")
