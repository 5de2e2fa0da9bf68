"""The os-ken OpenFlow 1.3 app: thin handlers around forwarding.py and accounting.py.

Started only by controller.launcher, which calls `configure()` before os-ken instantiates the
app. Invariants:
- every handler and the poll thread run under `fatal_on_exception`: an exception logs one line
  `CONTROLLER FATAL: <handler>: <exception>` (plus traceback) and ends the process with exit 70;
- a switch gets flows only when every plan port is present in its port descriptions; it is
  "ready" after the barrier that follows the install; on every (re)install this app first
  deletes all flows with its cookies, so a restarted controller leaves no stale entries;
- the poll thread only posts an event; requests are sent from the event loop;
- shared state lives in ControllerState (controller.state) behind one lock (the HTTP API reads
  it from its threads);
- a plan link is down as soon as a port status (or port description) shows one of its switch
  ports absent, administratively down or without carrier, on a switch whose ports are known;
  steering (GET /rank and anycast) leaves out every location whose path crosses a down link;
- anycast: a SYN punted by the anycast rule gets per-connection rules (controller.anycast) and
  is sent on with the forward rule's actions; anything else punted is counted and dropped.
"""
from __future__ import annotations

import functools
import logging
import os
import sys
import threading
import time
import traceback
from dataclasses import dataclass

from os_ken.base import app_manager
from os_ken.controller import event, ofp_event
from os_ken.controller.handler import CONFIG_DISPATCHER, DEAD_DISPATCHER, MAIN_DISPATCHER, set_ev_cls
from os_ken.lib.packet import ipv4, packet, tcp
from os_ken.ofproto import ofproto_v1_3

from . import anycast as ac
from . import forwarding as fw
from .accounting import COUNTERS
from .state import ControllerState, SwitchState  # noqa: F401 - ControllerState is this module's API too

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
            sw.port_up, sw.ports_known = {}, False
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
            ofp = ev.msg.datapath.ofproto
            self._set_ports(ev.msg.datapath, {_port_name(p): p.port_no for p in body},
                            {_port_name(p): _is_up(ofp, p) for p in body})

    @set_ev_cls(ofp_event.EventOFPPortStatus, MAIN_DISPATCHER)
    @fatal_on_exception("port_status")
    def port_status_handler(self, ev):
        msg, dp = ev.msg, ev.msg.datapath
        sw = self.st.switches.get(dp.id)
        if sw is None:
            return
        ports, up = dict(sw.ports), dict(sw.port_up)
        name = _port_name(msg.desc)
        if msg.reason == dp.ofproto.OFPPR_DELETE:
            ports.pop(name, None)
            up.pop(name, None)
        else:
            ports[name] = msg.desc.port_no
            up[name] = _is_up(dp.ofproto, msg.desc)
        self._set_ports(dp, ports, up)

    def _set_ports(self, dp, ports: dict[str, int], up: dict[str, bool]) -> None:
        sw = self.st.switches.get(dp.id)
        if sw is None:
            return
        with self.st.lock:
            sw.ports, sw.port_up, sw.ports_known = ports, up, True
            changes = self.st.note_link_changes(self.st.plan.links_of(sw.name), time.time())
            missing = self.st.missing_ports(sw)
            current = self.st._plan_port_map(sw)
            stale = sw.installed_ports != current and sw.pending_barrier is None
        for line in changes:
            LOG.warning("switch %s: %s", sw.name, line)
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
        for rule in self.st.rules.get(sw.name, []):
            dp.send_msg(rule_mod(dp, rule, ports))
        barrier = parser.OFPBarrierRequest(dp)
        dp.send_msg(barrier)
        n = self.st.expected_flows(sw.name)
        with self.st.lock:
            sw.installed_ports, sw.pending_barrier, sw.pending_count = ports, barrier.xid, n
        LOG.info("switch %s: installing %d flows (barrier xid %s)", sw.name, n, barrier.xid)

    @set_ev_cls(ofp_event.EventOFPBarrierReply, MAIN_DISPATCHER)
    @fatal_on_exception("barrier")
    def barrier_handler(self, ev):
        sw = self.st.switches.get(ev.msg.datapath.id)
        if sw is None or sw.pending_barrier != ev.msg.xid:
            return
        with self.st.lock:
            sw.flows_installed, sw.pending_barrier = sw.pending_count, None
        LOG.info("switch %s: %d flows installed", sw.name, sw.flows_installed)
        self._set_ports(ev.msg.datapath, sw.ports, sw.port_up)  # reinstall if ports changed meanwhile

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

    # ---- anycast ---------------------------------------------------------------------
    @set_ev_cls(ofp_event.EventOFPPacketIn, MAIN_DISPATCHER)
    @fatal_on_exception("packet_in")
    def packet_in_handler(self, ev):
        msg, dp = ev.msg, ev.msg.datapath
        sw = self.st.switches.get(dp.id)
        if sw is None or msg.cookie != ac.COOKIE_ANYCAST_PUNT:
            return
        pkt = packet.Packet(msg.data)
        ip4, seg = pkt.get_protocol(ipv4.ipv4), pkt.get_protocol(tcp.tcp)
        if ip4 is None or seg is None or not seg.bits & tcp.TCP_SYN or seg.bits & tcp.TCP_ACK:
            with self.st.lock:
                self.st.steering.count("dropped_not_syn")
            return
        conn = ac.Conn(ip4.src, seg.src_port, ip4.dst, seg.dst_port)
        with self.st.lock:
            down = self.st.down_links()
            snap = self.st.steering.snapshot()
            ports = dict(sw.ports)
        rules = self.st.steering.anycast_rules(sw.name, conn, time.time(), down, snap, self.st.specs)
        if rules is None:  # logged and counted by the view (unknown viewer, no OCA state yet)
            return
        missing = [a[1] for r in rules for a in r.actions if a[0] == "out" and a[1] not in ports]
        if missing:  # the way out is a port that is gone (its link failed): no steering possible
            LOG.warning("anycast: %s:%d on %s: ports %s are gone", conn.viewer_ip, conn.viewer_port,
                        sw.name, ", ".join(missing))
            with self.st.lock:
                self.st.steering.count("no_port")
            return
        for rule in rules:
            dp.send_msg(rule_mod(dp, rule, ports))
        ofp, parser = dp.ofproto, dp.ofproto_parser
        dp.send_msg(parser.OFPPacketOut(dp, ofp.OFP_NO_BUFFER, msg.match["in_port"],
                                        _actions(dp, rules[0], ports), msg.data))


def _is_up(ofp, desc) -> bool:
    return not (desc.config & ofp.OFPPC_PORT_DOWN or desc.state & ofp.OFPPS_LINK_DOWN)


def _actions(dp, rule: ac.RuleSpec, ports: dict[str, int]) -> list:
    ofp, parser = dp.ofproto, dp.ofproto_parser
    out = []
    for a in rule.actions:
        if a[0] == "set":
            out.append(parser.OFPActionSetField(**{a[1]: a[2]}))
        elif a[1] == ac.CONTROLLER:
            out.append(parser.OFPActionOutput(ofp.OFPP_CONTROLLER, ofp.OFPCML_NO_BUFFER))
        else:
            out.append(parser.OFPActionOutput(ports[a[1]]))
    return out


def rule_mod(dp, rule: ac.RuleSpec, ports: dict[str, int]):
    """OFPFlowMod (add) for one anycast RuleSpec."""
    ofp, parser = dp.ofproto, dp.ofproto_parser
    actions = _actions(dp, rule, ports)
    inst = [parser.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, actions)] if actions else []
    return parser.OFPFlowMod(dp, cookie=rule.cookie, priority=rule.priority,
                             match=parser.OFPMatch(**dict(rule.match)), instructions=inst,
                             idle_timeout=rule.idle_timeout_s, command=ofp.OFPFC_ADD)


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
