"""Named topologies. `metro` is the default: ISPs, an IXP with a Netflix site, transit, a cloud region.

Address plan (all inside 198.18.0.0/15):
  ISP k LAN            198.18.k.0/24   border .1, viewers .10+, embedded OCAs .100+
  IXP fabric (ocixp)   198.19.0.0/24   ISP k border .k, Netflix site router .250, route server .254
  Netflix site LAN     198.19.1.0/24   site router .1, IXP OCAs .10+
  transit LAN (octrn)  198.19.2.0/24   ISP k border .k, cloud router .253, transit router .254
  backbone (ocbb)      198.19.3.0/24   Netflix site router .1, cloud router .2
  cloud LAN            198.19.10.0/24  router .1, control plane .10, origin .11
The route server `ixprs` (domain ixp, a host that sends no data traffic and has no route off the
fabric) carries the IXP members' peer sessions under --routing bgp (topologies.bgp).
Every inter-domain link ends on an OVS switch, so the controller's port counters see the
bytes of every link class. Routes (routes.py) keep the transit LAN from being a shortcut:
ISPs reach the cloud through the transit router, as they would over a paid transit link.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from topologies.plan import ROUTE_SERVER_ROLE, SWITCH_PORT_DELAY_MS, Link, LinkEnd, Node, Plan, PlanError, l2_segments
from topologies.routes import compute_routes


@dataclass(frozen=True)
class MetroParams:
    """Parameters of `metro`; delays are one way, in milliseconds."""
    isps: int = 3
    viewers_per_isp: int = 2
    ocas_per_isp: int = 1
    ixp_ocas: int = 1
    access_delay_ms: float = 3.0      # 2-5 ms is realistic; ISP k adds 0.5 ms * (k-1)
    access_bw_mbps: float = 50.0
    internal_delay_ms: float = 1.0    # ISP LAN to border router
    lan_delay_ms: float = SWITCH_PORT_DELAY_MS  # hosts and routers on a LAN or exchange switch
                                      # port: the switch alone realizes it, no delay line (a real
                                      # LAN hop takes tens of us); a value over it gets a relay, and
                                      # then >= 0.5 keeps the relay's own ~0.3 ms compensable
    peering_delay_ms: float = 7.0     # ISP border to IXP fabric (5-10 ms)
    transit_delay_ms: float = 15.0    # ISP border to transit provider (10-20 ms)
    transit_bw_mbps: float = 200.0
    cloud_delay_ms: float = 30.0      # transit provider to cloud region (25-40 ms)
    backbone_delay_ms: float = 20.0   # Netflix site to cloud region
    core_bw_mbps: float = 1000.0
    jitter_ms: float = 0.0
    loss_pct: float = 0.0
    queue_pkts: int = 1000            # every link's drop-tail queue: 240 ms at 50 Mbit/s, 60 ms at
                                      # 200, 12 ms at 1000 (a model scale keeps these times)
    route_server: int = 1             # 1: the IXP runs a route server (ixprs) that carries its
                                      # members' peer sessions under --routing bgp; 0: bilateral

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            want = (int,) if f.type in (int, "int") else (int, float)
            if isinstance(v, bool) or not isinstance(v, want):
                raise PlanError(f"metro.{f.name}: must be {'an integer' if want == (int,) else 'a number'}, got {v!r}")
        if self.jitter_ms > self.access_delay_ms:
            raise PlanError(f"metro.jitter_ms: {self.jitter_ms} ms exceeds access_delay_ms {self.access_delay_ms} ms "
                            "(jitter applies to access links)")
        if not 1 <= self.isps <= 9:
            raise PlanError(f"metro.isps: must be 1..9, got {self.isps}")
        if not 1 <= self.viewers_per_isp <= 80:
            raise PlanError(f"metro.viewers_per_isp: must be 1..80, got {self.viewers_per_isp}")
        if not 0 <= self.ocas_per_isp <= 9 or not 0 <= self.ixp_ocas <= 9:
            raise PlanError("metro.ocas_per_isp / metro.ixp_ocas: must be 0..9")
        if self.route_server not in (0, 1):
            raise PlanError(f"metro.route_server: must be 0 or 1, got {self.route_server}")

    @classmethod
    def from_overrides(cls, overrides: dict[str, str]) -> "MetroParams":
        """Build from `--set key=value` strings; unknown keys are an error naming them."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        kw = {}
        for k, v in overrides.items():
            if k not in fields:
                raise PlanError(f"metro: unknown parameter {k!r}; known: {', '.join(sorted(fields))}")
            typ = int if fields[k].type in (int, "int") else float
            try:
                kw[k] = typ(v)
            except ValueError:
                raise PlanError(f"metro.{k}: {v!r} is not a valid {typ.__name__}") from None
        return cls(**kw)


class _Builder:
    """Accumulates nodes and links with deterministic ports and MACs."""

    def __init__(self) -> None:
        self.nodes: list[Node] = []
        self.links: list[Link] = []
        self._ports: dict[str, int] = {}
        self._dpid = 0x0C00

    def add(self, name, kind, role, domain, tier=None) -> str:
        dpid = None
        if kind == "switch":
            self._dpid += 1
            dpid = self._dpid
        self.nodes.append(Node(name, kind, role, domain, dpid=dpid, tier=tier))
        self._ports[name] = 0
        return name

    def _end(self, node: str, ip: str | None) -> LinkEnd:
        port = self._ports[node]
        self._ports[node] += 1
        idx = [n.name for n in self.nodes].index(node)
        mac = f"02:0c:{idx >> 8:02x}:{idx & 255:02x}:{port >> 8:02x}:{port & 255:02x}"
        return LinkEnd(node, port, mac, ip)

    def link(self, a, a_ip, b, b_ip, cls, bw_mbps, delay_ms, p: MetroParams) -> None:
        # jitter and loss model the last mile: they apply to access links only
        self.links.append(Link(self._end(a, a_ip), self._end(b, b_ip), cls, float(bw_mbps),
                               float(delay_ms), jitter_ms=p.jitter_ms if cls == "access" else 0.0,
                               loss_pct=p.loss_pct if cls == "access" else 0.0, queue_pkts=p.queue_pkts))


def metro(params: MetroParams | None = None) -> Plan:
    """The default topology; see the module docstring for the address plan."""
    p = params or MetroParams()
    b = _Builder()
    as_links: list[tuple[str, str, str]] = []
    b.add("ocixp", "switch", "fabric", "ixp")
    b.add("nfxr", "router", "site", "netflix")
    b.add("ocnfx", "switch", "lan", "netflix")
    b.add("trr", "router", "transit", "transit")
    b.add("cldr", "router", "cloud", "cloud")
    b.add("occld", "switch", "lan", "cloud")
    b.add("ctl", "host", "control", "cloud")
    b.add("origin", "host", "origin", "cloud")
    core = p.core_bw_mbps
    b.link("nfxr", "198.19.0.250/24", "ocixp", None, "peering", core, p.lan_delay_ms, p)
    b.link("nfxr", "198.19.1.1/24", "ocnfx", None, "internal", core, p.lan_delay_ms, p)
    for m in range(1, p.ixp_ocas + 1):
        b.add(f"nfxoca{m}", "host", "oca", "netflix", tier="ixp")
        b.link(f"nfxoca{m}", f"198.19.1.{9 + m}/24", "ocnfx", None, "internal", core, p.lan_delay_ms, p)
    b.add("octrn", "switch", "lan", "transit")
    b.add("ocbb", "switch", "lan", "netflix")
    b.link("trr", "198.19.2.254/24", "octrn", None, "transit", core, p.lan_delay_ms, p)
    b.link("cldr", "198.19.2.253/24", "octrn", None, "transit", core, p.cloud_delay_ms, p)
    b.link("nfxr", "198.19.3.1/24", "ocbb", None, "backbone", core, p.backbone_delay_ms, p)
    b.link("cldr", "198.19.3.2/24", "ocbb", None, "backbone", core, p.lan_delay_ms, p)
    b.link("cldr", "198.19.10.1/24", "occld", None, "internal", core, p.lan_delay_ms, p)
    b.link("ctl", "198.19.10.10/24", "occld", None, "internal", core, p.lan_delay_ms, p)
    b.link("origin", "198.19.10.11/24", "occld", None, "internal", core, p.lan_delay_ms, p)
    as_links += [("cloud", "transit", "customer"), ("netflix", "cloud", "peer")]
    for k in range(1, p.isps + 1):
        isp, lan, br = f"isp{k}", f"oci{k}lan", f"i{k}br"
        b.add(lan, "switch", "lan", isp)
        b.add(br, "router", "border", isp)
        b.link(br, f"198.18.{k}.1/24", lan, None, "internal", core, p.internal_delay_ms, p)
        for j in range(1, p.viewers_per_isp + 1):
            b.add(f"i{k}v{j}", "host", "viewer", isp)
            b.link(f"i{k}v{j}", f"198.18.{k}.{9 + j}/24", lan, None, "access",
                   p.access_bw_mbps, p.access_delay_ms + 0.5 * (k - 1), p)
        for m in range(1, p.ocas_per_isp + 1):
            b.add(f"i{k}oca{m}", "host", "oca", isp, tier="embedded")
            b.link(f"i{k}oca{m}", f"198.18.{k}.{99 + m}/24", lan, None, "internal", core, p.lan_delay_ms, p)
        b.link(br, f"198.19.0.{k}/24", "ocixp", None, "peering", core, p.peering_delay_ms, p)
        b.link(br, f"198.19.2.{k}/24", "octrn", None, "transit", p.transit_bw_mbps,
               p.transit_delay_ms, p)
        as_links += [(isp, "transit", "customer"), (isp, "netflix", "peer")]
        as_links += [(f"isp{j}", isp, "peer") for j in range(1, k)]
    if p.route_server:  # last, so every other node keeps its MACs and ports
        b.add("ixprs", "host", ROUTE_SERVER_ROLE, "ixp")
        b.link("ixprs", "198.19.0.254/24", "ocixp", None, "internal", core, p.lan_delay_ms, p)
    return _finish("metro", b, as_links, dataclasses.asdict(p))


def _finish(name: str, b: _Builder, as_links, params: dict) -> Plan:
    draft = Plan(name, tuple(b.nodes), tuple(b.links), (), tuple(as_links), tuple(sorted(params.items())))
    routes = compute_routes(draft.nodes, draft.links, draft.as_links, l2_segments(draft))
    return dataclasses.replace(draft, routes=routes)


CATALOG = {"metro": metro}


def by_name(name: str, overrides: dict[str, str] | None = None) -> Plan:
    """A catalog topology with `--set` overrides applied; unknown names are an error."""
    if name == "metro":
        return metro(MetroParams.from_overrides(overrides or {}))
    raise PlanError(f"unknown topology {name!r}; known: {', '.join(sorted(CATALOG))}")
