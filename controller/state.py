"""Controller state shared by the os-ken event loop and the HTTP API threads (no OpenFlow here).

Invariants: every field is read and written under `ControllerState.lock`; the steering view
(controller.steering_view) has its own small lock for its caches and is called with snapshots,
so rankings never hold the state lock while computing.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

from topologies.plan import Plan

from . import anycast as ac
from . import forwarding as fw
from .accounting import Accounting
from .steering_view import SteeringView

LOG = logging.getLogger("ocalab.controller")


@dataclass
class SwitchState:
    name: str
    dpid: int
    connected: bool = False
    ports: dict[str, int] = field(default_factory=dict)  # interface name -> OF port number
    port_up: dict[str, bool] = field(default_factory=dict)  # interface name -> carrier and admin up
    ports_known: bool = False  # a port description arrived on the current connection
    installed_ports: dict[str, int] | None = None  # port map the current flows were built for
    flows_installed: int = 0
    pending_barrier: int | None = None
    pending_count: int = 0
    connects: int = 0
    miss_packets: int | None = None  # counters of the table-miss (drop) flow
    miss_bytes: int | None = None


class ControllerState:
    """Everything the API shows; all access under `lock`."""

    def __init__(self, plan: Plan, anycast_ip: str | None = ac.ANYCAST_IP,
                 relay_links: dict[str, tuple[str, str]] | None = None) -> None:
        self.plan = plan
        self.lock = threading.Lock()
        self.specs = fw.flow_specs(plan)
        self.rules = ac.punt_specs(plan, ac.check_anycast_ip(plan, anycast_ip)) if anycast_ip else {}
        self.plan_ports = fw.switch_ports(plan)
        self.switches = {dpid: SwitchState(name, dpid) for dpid, name in fw.dpid_map(plan).items()}
        self.by_name = {s.name: s for s in self.switches.values()}
        self.accounting = Accounting(plan)
        self.steering = SteeringView(plan, anycast_ip)
        self.link_changed: dict[str, tuple[bool, float]] = {}  # link -> (up, wall time of change)
        names = {lk.name for lk in plan.links}
        unknown = sorted(set(relay_links or {}) - names)
        if unknown:
            raise ValueError(f"relay map names links not in plan {plan.name!r}: {', '.join(unknown)}")
        self.relay_links = dict(relay_links or {})  # link -> relay interfaces (a side, b side)
        self.relay_up: dict[str, bool] = {}  # relay interface -> carrier, from linkwatch
        self.relay_known = False
        self.errors: list[str] = []
        self.started_unix_s = time.time()

    def error(self, msg: str) -> None:
        LOG.error("%s", msg)
        with self.lock:
            self.errors.append(msg)

    def missing_ports(self, sw: SwitchState) -> list[str]:
        return [p for p in self.plan_ports[sw.name] if p not in sw.ports]

    def ready(self, sw: SwitchState) -> bool:
        return sw.connected and sw.pending_barrier is None and sw.installed_ports is not None \
            and sw.installed_ports == self._plan_port_map(sw)

    def _plan_port_map(self, sw: SwitchState) -> dict[str, int]:
        return {p: sw.ports[p] for p in self.plan_ports[sw.name] if p in sw.ports}

    def expected_flows(self, name: str) -> int:
        return len(self.specs[name]) + len(self.rules.get(name, []))

    # ---- link state (call with the lock held) ------------------------------------------
    def link_up(self, lk) -> bool | None:
        """False if a switch port of the link, or a relay end carrying it, is known absent or
        down; None if nothing about the link is known yet; else True."""
        known = False
        ends = self.relay_links.get(lk.name)
        if ends is not None and self.relay_known:
            known = True
            if not all(self.relay_up.get(i, False) for i in ends):
                return False
        for e in (lk.a, lk.b):
            sw = self.by_name.get(e.node)
            if sw is None or not (sw.connected and sw.ports_known):
                continue
            known = True
            if not sw.port_up.get(e.intf, False):
                return False
        return True if known else None

    def down_links(self) -> frozenset[str]:
        return frozenset(lk.name for lk in self.plan.links if self.link_up(lk) is False)

    def relay_update(self, changes: dict[str, bool], wall_s: float) -> list[str]:
        """Fold relay carrier changes in (the first call carries the full state)."""
        self.relay_up.update(changes)
        self.relay_known = True
        touched = [lk for lk in self.plan.links
                   if not set(self.relay_links.get(lk.name, ())).isdisjoint(changes)]
        return self.note_link_changes(touched, wall_s)

    def note_link_changes(self, links, wall_s: float) -> list[str]:
        """Record up/down transitions of `links`; returns log lines."""
        out = []
        for lk in links:
            up = self.link_up(lk)
            if up is None:
                continue
            prev = self.link_changed.get(lk.name)
            if prev is None or prev[0] != up:
                self.link_changed[lk.name] = (up, wall_s)
                if prev is not None or not up:
                    out.append(f"link {lk.name} ({lk.cls}) {'up' if up else 'DOWN'}")
        return out

    # ---- steering (called from the API and the event loop) -----------------------------
    def rank_view(self, viewer_ip: str, title: str | None, now: float, policy: str = "nearest",
                  need_objects: int | None = None) -> dict:
        with self.lock:
            down = self.down_links()
            snap = self.steering.snapshot()
        return self.steering.rank_json(viewer_ip, title, now, down, snap, policy, need_objects)

    def anycast_rank_view(self, viewer_ip: str, title: str | None, now: float) -> dict:
        with self.lock:
            down = self.down_links()
            snap = self.steering.snapshot()
        return self.steering.anycast_rank_json(viewer_ip, title, now, down, snap)

    def ocas_push(self, body, now: float) -> dict:
        with self.lock:
            out = self.steering.ocas.apply(body, now)
        for name, (old, new) in out["changed"].items():  # every health transition, for post-mortems
            LOG.info("oca %s: status %s -> %s", name, old, new)
        return out

    def ocas_view(self) -> dict:
        with self.lock:
            return self.steering.ocas.view(time.time())

    def anycast_view(self) -> dict:
        with self.lock:
            return self.steering.anycast_view()

    # ---- JSON views (called from the API thread) -------------------------------------
    def health(self) -> dict:
        with self.lock:
            ready = sum(self.ready(s) for s in self.switches.values())
            return {"ok": not self.errors, "plan": self.plan.name,
                    "switches_expected": len(self.switches), "switches_ready": ready,
                    "errors": list(self.errors), "uptime_s": round(time.time() - self.started_unix_s, 3)}

    def switches_view(self) -> dict:
        with self.lock:
            return {str(dpid): {"name": s.name, "dpid": dpid, "connected": s.connected,
                                "ready": self.ready(s), "flows_installed": s.flows_installed,
                                "flows_expected": self.expected_flows(s.name), "connects": s.connects,
                                "miss_packets": s.miss_packets, "miss_bytes": s.miss_bytes,
                                "ports": dict(sorted(s.ports.items())),
                                "missing_ports": self.missing_ports(s)}
                    for dpid, s in sorted(self.switches.items())}

    def links_view(self) -> list[dict]:
        with self.lock:
            rows = self.accounting.link_rows()
            for row, lk in zip(rows, self.plan.links):
                ch = self.link_changed.get(lk.name)
                row.update(up=self.link_up(lk), changed_unix_s=ch[1] if ch else None)
            return rows

    def classes_view(self) -> dict:
        with self.lock:
            return self.accounting.class_rows()

    def ports_view(self) -> list[dict]:
        with self.lock:
            rows = []
            for s in sorted(self.switches.values(), key=lambda s: s.name):
                for intf, no in sorted(s.ports.items(), key=lambda kv: kv[1]):
                    pc = self.accounting.ports.get(intf)
                    rows.append({"switch": s.name, "dpid": s.dpid, "port": intf, "port_no": no,
                                 "in_plan": intf in self.plan_ports[s.name],
                                 "up": s.port_up.get(intf),
                                 **(pc.totals if pc else {}),
                                 "tx_mbps": pc.rates_mbps["tx"] if pc else None,
                                 "rx_mbps": pc.rates_mbps["rx"] if pc else None,
                                 "updated_unix_s": pc.wall_s if pc else None})
            return rows
