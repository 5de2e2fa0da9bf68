"""The os-ken OpenFlow 1.3 app: thin handlers around forwarding.py and accounting.py.

Started only by controller.launcher, which calls `configure()` before os-ken instantiates the
app. Invariants:
- every handler and the poll thread run under `fatal_on_exception`: an exception logs one line
  `CONTROLLER FATAL: <handler>: <exception>` (plus traceback) and ends the process with exit 70;
- a switch gets flows only when every plan port is present in its port descriptions; it is
  "ready" after the barrier that follows the install; on every (re)install this app first
  deletes all flows with its cookies, so a restarted controller leaves no stale entries;
- the poll thread only posts an event; requests are sent from the event loop;
- shared state lives in ControllerState behind one lock (the HTTP API reads it from its thread).
"""
from __future__ import annotations

import functools
import logging
import os
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field

from os_ken.base import app_manager
from os_ken.controller import event, ofp_event
from os_ken.controller.handler import CONFIG_DISPATCHER, DEAD_DISPATCHER, MAIN_DISPATCHER, set_ev_cls
from os_ken.ofproto import ofproto_v1_3

from topologies.plan import Plan

from . import forwarding as fw
from .accounting import COUNTERS, Accounting

LOG = logging.getLogger("ocalab.controller")
FATAL_EXIT_CODE = 70
FAULT_ENV = "OCALAB_CONTROLLER_FAULT"


def fatal_exit(where: str, exc: BaseException) -> None:
    """Log the FATAL line with traceback, flush every log handler, and end the process."""
    LOG.critical("CONTROLLER FATAL: %s: %s: %s\n%s", where, type(exc).__name__, exc,
                 "".join(traceback.format_exception(exc)).rstrip())
    for h in logging.getLogger().handlers + LOG.handlers:
        h.flush()
    sys.stderr.flush()
    os._exit(FATAL_EXIT_CODE)


def fatal_on_exception(name: str):
    """Decorator: run the function; on any exception call fatal_exit(name). Also injects the
    fault named in $OCALAB_CONTROLLER_FAULT (comma-separated handler names) for tests."""
    def deco(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            try:
                if name in os.environ.get(FAULT_ENV, "").split(","):
                    raise RuntimeError(f"injected fault ({FAULT_ENV}={name})")
                return fn(*args, **kwargs)
            except BaseException as e:  # noqa: BLE001 - fail loudly, never swallow
                fatal_exit(name, e)
        return wrapper
    return deco


@dataclass
class SwitchState:
    name: str
    dpid: int
    connected: bool = False
    ports: dict[str, int] = field(default_factory=dict)  # interface name -> OF port number
    installed_ports: dict[str, int] | None = None  # port map the current flows were built for
    flows_installed: int = 0
    pending_barrier: int | None = None
    pending_count: int = 0
    connects: int = 0
    miss_packets: int | None = None  # counters of the table-miss (drop) flow
    miss_bytes: int | None = None


class ControllerState:
    """Everything the API shows; all access under `lock`."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.lock = threading.Lock()
        self.specs = fw.flow_specs(plan)
        self.plan_ports = fw.switch_ports(plan)
        self.switches = {dpid: SwitchState(name, dpid) for dpid, name in fw.dpid_map(plan).items()}
        self.accounting = Accounting(plan)
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
                                "flows_expected": len(self.specs[s.name]), "connects": s.connects,
                                "miss_packets": s.miss_packets, "miss_bytes": s.miss_bytes,
                                "ports": dict(sorted(s.ports.items())),
                                "missing_ports": self.missing_ports(s)}
                    for dpid, s in sorted(self.switches.items())}

    def links_view(self) -> list[dict]:
        with self.lock:
            return self.accounting.link_rows()

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
                                 **(pc.totals if pc else {}),
                                 "tx_mbps": pc.rates_mbps["tx"] if pc else None,
                                 "rx_mbps": pc.rates_mbps["rx"] if pc else None,
                                 "updated_unix_s": pc.wall_s if pc else None})
            return rows


@dataclass
class Runtime:
    state: ControllerState
    stats_interval_s: float = 1.0


RUNTIME: Runtime | None = None


def configure(runtime: Runtime) -> None:
    """Called by the launcher before os-ken instantiates OcalabController."""
    global RUNTIME
    RUNTIME = runtime


class EventPollStats(event.EventBase):
    """Posted by the poll thread once per interval."""


def _port_name(p) -> str:
    name = p.name
    return name.decode("utf-8", "replace").rstrip("\0") if isinstance(name, bytes) else str(name)


class OcalabController(app_manager.OSKenApp):
    OFP_VERSIONS = [ofproto_v1_3.OFP_VERSION]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if RUNTIME is None:
            raise RuntimeError("controller.app must be started by controller.launcher (configure() not called)")
        self.st = RUNTIME.state
        self.interval_s = RUNTIME.stats_interval_s
        self.dps: dict[int, object] = {}
        self._multipart: dict[tuple[int, str], list] = {}

    def start(self):
        t = super().start()
        threading.Thread(target=self._poll_loop, name="ocalab-stats-poll", daemon=True).start()
        return t

    @fatal_on_exception("poll_loop")
    def _poll_loop(self) -> None:
        while True:
            time.sleep(self.interval_s)
            self._poll_tick()

    @fatal_on_exception("poll")
    def _poll_tick(self) -> None:
        self.send_event(self.name, EventPollStats())

    # ---- connection life cycle ---------------------------------------------------------
    @set_ev_cls(ofp_event.EventOFPSwitchFeatures, CONFIG_DISPATCHER)
    @fatal_on_exception("features")
    def features_handler(self, ev):
        dpid = ev.msg.datapath.id
        if dpid not in self.st.switches:
            self.st.error(f"switch with dpid {dpid:#x} connected but is not in plan {self.st.plan.name!r}")

    @set_ev_cls(ofp_event.EventOFPStateChange, [MAIN_DISPATCHER, DEAD_DISPATCHER])
    @fatal_on_exception("state_change")
    def state_change_handler(self, ev):
        dp = ev.datapath
        sw = self.st.switches.get(dp.id)
        if sw is None or (ev.state == DEAD_DISPATCHER and self.dps.get(dp.id) is not dp):
            return  # not ours, or the death of a connection already replaced by a newer one
        with self.st.lock:
            sw.connected = ev.state == MAIN_DISPATCHER
            sw.pending_barrier, sw.installed_ports, sw.ports, sw.flows_installed = None, None, {}, 0
            sw.connects += sw.connected
        if ev.state == MAIN_DISPATCHER:
            LOG.info("switch %s (dpid %#x) connected", sw.name, dp.id)
            self.dps[dp.id] = dp
            dp.send_msg(dp.ofproto_parser.OFPPortDescStatsRequest(dp, 0))
        else:
            LOG.warning("switch %s (dpid %#x) disconnected", sw.name, dp.id)
            self.dps.pop(dp.id, None)

    def _collect(self, ev, kind: str) -> list | None:
        """Join multipart replies; returns the full body on the last part, else None."""
        msg = ev.msg
        key = (msg.datapath.id, kind)
        self._multipart.setdefault(key, []).extend(msg.body)
        if msg.flags & msg.datapath.ofproto.OFPMPF_REPLY_MORE:
            return None
        return self._multipart.pop(key)

    @set_ev_cls(ofp_event.EventOFPPortDescStatsReply, MAIN_DISPATCHER)
    @fatal_on_exception("port_desc")
    def port_desc_handler(self, ev):
        body = self._collect(ev, "port_desc")
        if body is not None:
            self._set_ports(ev.msg.datapath, {_port_name(p): p.port_no for p in body})

    @set_ev_cls(ofp_event.EventOFPPortStatus, MAIN_DISPATCHER)
    @fatal_on_exception("port_status")
    def port_status_handler(self, ev):
        msg, dp = ev.msg, ev.msg.datapath
        sw = self.st.switches.get(dp.id)
        if sw is None:
            return
        ports = dict(sw.ports)
        name = _port_name(msg.desc)
        if msg.reason == dp.ofproto.OFPPR_DELETE:
            ports.pop(name, None)
        else:
            ports[name] = msg.desc.port_no
        self._set_ports(dp, ports)

    def _set_ports(self, dp, ports: dict[str, int]) -> None:
        sw = self.st.switches.get(dp.id)
        if sw is None:
            return
        with self.st.lock:
            sw.ports = ports
            missing = self.st.missing_ports(sw)
            current = self.st._plan_port_map(sw)
            stale = sw.installed_ports != current and sw.pending_barrier is None
        if missing:
            LOG.info("switch %s: waiting for ports %s", sw.name, ", ".join(missing))
        elif stale:
            self._install(dp, sw, current)

    def _install(self, dp, sw: SwitchState, ports: dict[str, int]) -> None:
        ofp, parser = dp.ofproto, dp.ofproto_parser
        specs = self.st.specs[sw.name]
        dp.send_msg(parser.OFPFlowMod(
            dp, cookie=fw.APP_COOKIE, cookie_mask=fw.APP_COOKIE_MASK, table_id=ofp.OFPTT_ALL,
            command=ofp.OFPFC_DELETE, out_port=ofp.OFPP_ANY, out_group=ofp.OFPG_ANY))
        for spec in specs:
            dp.send_msg(flow_mod(dp, spec, ports))
        barrier = parser.OFPBarrierRequest(dp)
        dp.send_msg(barrier)
        with self.st.lock:
            sw.installed_ports, sw.pending_barrier, sw.pending_count = ports, barrier.xid, len(specs)
        LOG.info("switch %s: installing %d flows (barrier xid %s)", sw.name, len(specs), barrier.xid)

    @set_ev_cls(ofp_event.EventOFPBarrierReply, MAIN_DISPATCHER)
    @fatal_on_exception("barrier")
    def barrier_handler(self, ev):
        sw = self.st.switches.get(ev.msg.datapath.id)
        if sw is None or sw.pending_barrier != ev.msg.xid:
            return
        with self.st.lock:
            sw.flows_installed, sw.pending_barrier = sw.pending_count, None
        LOG.info("switch %s: %d flows installed", sw.name, sw.flows_installed)
        self._set_ports(ev.msg.datapath, sw.ports)  # reinstall if ports changed meanwhile

    @set_ev_cls(ofp_event.EventOFPErrorMsg, [CONFIG_DISPATCHER, MAIN_DISPATCHER])
    @fatal_on_exception("error_msg")
    def error_msg_handler(self, ev):
        msg = ev.msg
        self.st.error(f"switch dpid {msg.datapath.id:#x} reported OpenFlow error "
                      f"type={msg.type} code={msg.code} xid={msg.xid}")

    # ---- statistics ----------------------------------------------------------------
    @set_ev_cls(EventPollStats)
    @fatal_on_exception("poll_event")
    def poll_handler(self, ev):
        for dp in list(self.dps.values()):
            ofp, parser = dp.ofproto, dp.ofproto_parser
            dp.send_msg(parser.OFPPortStatsRequest(dp, 0, ofp.OFPP_ANY))
            dp.send_msg(parser.OFPFlowStatsRequest(
                dp, 0, ofp.OFPTT_ALL, ofp.OFPP_ANY, ofp.OFPG_ANY, fw.COOKIE_MISS,
                0xFFFF_FFFF_FFFF_FFFF, parser.OFPMatch()))

    @set_ev_cls(ofp_event.EventOFPFlowStatsReply, MAIN_DISPATCHER)
    @fatal_on_exception("flow_stats")
    def flow_stats_handler(self, ev):
        body = self._collect(ev, "flow_stats")
        sw = self.st.switches.get(ev.msg.datapath.id)
        if body is None or sw is None:
            return
        miss = [f for f in body if f.cookie == fw.COOKIE_MISS]
        with self.st.lock:
            sw.miss_packets = sum(f.packet_count for f in miss) if miss else None
            sw.miss_bytes = sum(f.byte_count for f in miss) if miss else None

    @set_ev_cls(ofp_event.EventOFPPortStatsReply, MAIN_DISPATCHER)
    @fatal_on_exception("port_stats")
    def port_stats_handler(self, ev):
        body = self._collect(ev, "port_stats")
        sw = self.st.switches.get(ev.msg.datapath.id)
        if body is None or sw is None:
            return
        t_s, wall_s = time.monotonic(), time.time()
        with self.st.lock:
            names = {no: name for name, no in sw.ports.items()}
            for s in body:
                name = names.get(s.port_no)
                if name is not None:
                    values = {c: getattr(s, c) for c in COUNTERS}
                    self.st.accounting.update(name, values, t_s, wall_s)


def flow_mod(dp, spec: fw.FlowSpec, ports: dict[str, int]):
    """OFPFlowMod (add) for one FlowSpec; port names are resolved through `ports`."""
    ofp, parser = dp.ofproto, dp.ofproto_parser
    fields = {}
    if spec.in_port is not None:
        fields["in_port"] = ports[spec.in_port]
    if spec.eth_dst is not None:
        fields["eth_dst"] = (spec.eth_dst, spec.eth_dst_mask) if spec.eth_dst_mask else spec.eth_dst
    actions = [parser.OFPActionOutput(ports[p]) for p in spec.outputs]
    inst = [parser.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, actions)] if actions else []
    return parser.OFPFlowMod(dp, cookie=spec.cookie, priority=spec.priority,
                             match=parser.OFPMatch(**fields), instructions=inst,
                             command=ofp.OFPFC_ADD)
