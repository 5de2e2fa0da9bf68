"""Text and PNG views of a plan (no root)."""
from __future__ import annotations

from pathlib import Path

from topologies.bgp import asns, oca_sessions, route_server, sessions
from topologies.plan import ROUTE_SERVER_ROLE, Plan
from topologies.routes import l3_path

# column of each role in the drawing, left (viewers) to right (cloud)
_COLUMN = {"viewer": 0, "oca": 1, "lan": 1.5, "border": 2, "fabric": 3, "site": 3.6,
           "transit": 3, "routeserver": 3, "cloud": 4.5, "control": 5.5, "origin": 5.5}
_COLOR = {"access": "#4c72b0", "internal": "#8c8c8c", "peering": "#55a868",
          "transit": "#c44e52", "backbone": "#8172b2"}


def describe(plan: Plan) -> str:
    out = [f"plan {plan.name}  hash {plan.plan_hash()}  {len(plan.nodes)} nodes, {len(plan.links)} links",
           "params: " + ", ".join(f"{k}={v}" for k, v in plan.params), "", "nodes:"]
    for n in plan.nodes:
        addrs = ", ".join(e.ip for e in plan.ends_of(n.name) if e.ip)
        extra = f" dpid={n.dpid:#x}" if n.dpid else (f" tier={n.tier}" if n.tier else "")
        out.append(f"  {n.name:10s} {n.kind:6s} {n.role:8s} {n.domain:8s}{extra} {addrs}")
    out += ["", "links:  (delay one way)"]
    for lk in plan.links:
        out.append(f"  {lk.a.intf:>11s} <-> {lk.b.intf:<11s} {lk.cls:9s} {lk.bw_mbps:7g} Mbit/s "
                   f"{lk.delay_ms:5g} ms  jitter {lk.jitter_ms:g} ms  loss {lk.loss_pct:g}%  "
                   f"queue {lk.queue_pkts}")
    if plan.as_links:
        out += ["", "BGP sessions with --routing bgp (speaker AS: peer address AS, what the peer is):"]
        asn, rs = asns(plan), route_server(plan)
        for r, ss in sessions(plan).items():
            own = rs.asn if rs is not None and r == rs.node else asn[plan.node(r).domain]
            out.append(f"  {r:6s} AS{own}: "
                       + ", ".join(f"{s.peer} {s.peer_addr} AS{s.peer_asn} {s.relation}" for s in ss))
        if rs is not None:
            out.append(f"  route server {rs.node} on {rs.subnet}: transparent (route-server-client) for "
                       f"{', '.join(c for c, _ in rs.clients)}; their peer routes pass it with the "
                       "announcer's next hop and AS path")
        out.append("  OCAs (receive-only; the prefixes their router announces them):")
        for o in oca_sessions(plan).values():
            out.append(f"  {o.oca:8s} AS{o.oca_asn} {o.oca_addr} <- {o.router} {o.router_addr}: {' '.join(o.prefixes)}")
    out += ["", "paths from the first viewer (L3 hops as traceroute shows them):"]
    viewers = plan.nodes_of(role="viewer")
    if viewers:
        v = viewers[0].name
        for n in plan.nodes:
            if n.kind == "host" and n.role not in ("viewer", ROUTE_SERVER_ROLE) or n.name == (viewers[-1].name if len(viewers) > 1 else ""):
                path = l3_path(plan, v, plan.primary_ip(n.name))
                out.append(f"  {v} -> {n.name:8s} {len(path)} hops: {' '.join(path)}")
    return "\n".join(out)


def _positions(plan: Plan) -> dict[str, tuple[float, float]]:
    rows: dict[float, int] = {}
    pos = {}
    for n in plan.nodes:
        x = _COLUMN.get(n.role, 3)
        if n.domain == "netflix" and n.role in ("oca", "lan"):
            x = 4.2 if n.role == "oca" else 3.9
        if n.domain == "transit" and n.kind == "switch":
            x = 3.3
        if n.domain == "netflix" and n.kind == "switch" and n.role == "lan" and n.name != "ocnfx":
            x = 4.0
        rows[x] = rows.get(x, 0) + 1
        pos[n.name] = (x, -rows[x])
    return pos


def draw_png(plan: Plan, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    pos = _positions(plan)
    fig, ax = plt.subplots(figsize=(12, 0.45 * max(12, len(plan.nodes) / 2)))
    for lk in plan.links:
        (x1, y1), (x2, y2) = pos[lk.a.node], pos[lk.b.node]
        ax.plot([x1, x2], [y1, y2], color=_COLOR[lk.cls], lw=1.5, zorder=1)
        if lk.delay_ms:
            ax.text((x1 + x2) / 2, (y1 + y2) / 2, f"{lk.delay_ms:g}ms", fontsize=6, color=_COLOR[lk.cls])
    for n in plan.nodes:
        x, y = pos[n.name]
        marker = {"switch": "s", "router": "D", "host": "o"}[n.kind]
        ax.scatter([x], [y], marker=marker, s=120, color="white", edgecolor="black", zorder=2)
        ax.text(x, y - 0.35, n.name, ha="center", fontsize=7)
    for cls, color in _COLOR.items():
        ax.plot([], [], color=color, label=cls)
    ax.legend(loc="lower left", fontsize=7)
    ax.set_title(f"{plan.name} ({plan.plan_hash()})")
    ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
