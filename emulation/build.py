"""Realize a Plan as a Mininet network: the one module that imports mininet.

`Network` is a context manager. Start order: ledger -> nodes -> links (relayed where the backend
is `relay`) -> addresses, offloads, shaping, sysctls, routes -> relays -> controller -> switches ->
wait for forwarding -> fidelity gate. Stop order is the reverse, and also runs on Ctrl-C, SIGTERM
or any error during start. Every command is checked: a failure raises EmulationError.
"""
from __future__ import annotations

import json
import select
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field, replace
from pathlib import Path

from mininet.link import Link as MnLink
from mininet.log import setLogLevel
from mininet.net import Mininet
from mininet.node import Host, Node, OVSSwitch

from contracts.deployment import OCA_PORT
from emulation import linkemu
from emulation.faults import LinkFaults
from emulation.impair import Impairment
from emulation.ledger import Ledger, ProcessGroup
from emulation.ledger import clean as clean_leftovers
from emulation.linkemu import EmulationError
from emulation.linkfit import COMPENSATION_BUDGET_MS
from emulation.linkfit import as_rows as link_rows
from emulation.machinelock import LOCK_FILE, MachineLock
from topologies.plan import PREFIX, Plan

RELAY_NODE = f"{PREFIX}rly"
CALIBRATION_ROUNDS = 3  # measure-correct rounds before the fidelity gate's verdict
# calibration goes on (up to CALIBRATION_ROUNDS) while a pair's error exceeds this fraction of its
# tolerance: aiming inside the verdict leaves the noise of the verdict's own measurement a margin
CALIBRATION_AIM = 0.5
# ... and up to this many while a pair reads early: only too much compensation does that
MAX_CALIBRATION_ROUNDS = 5
ROUTING_MODES = ("static", "bgp")  # Options.routing: the plan's static routes, or FRR (emulation.frr)
# Management link: root namespace <-> control-plane host, outside every switch (so outside the
# data-plane byte accounting). The controller API listens on MGMT_ROOT_ADDR besides 127.0.0.1.
MGMT_ROOT_INTF, MGMT_ROOT_ADDR, MGMT_HOST_ADDR, MGMT_PREFIX_LEN = f"{PREFIX}mgmt0", "198.19.255.1", "198.19.255.2", 30


@dataclass
class Options:
    link_backend: str = "auto"      # auto | netem | relay
    datapath: str = "auto"          # auto | kernel | user
    controller: bool = True
    verify: bool = True             # run the fidelity gate after the build
    work_dir: Path | None = None    # logs and plan file; a temp dir when None
    label: str = "net"
    lock_wait_s: float = 900.0      # wait this long for another ocalab network to finish
    # break links on purpose: link name -> extra one-way delay (ms) a->b and b->a, applied to the
    # realized link only (the plan, and so the gate's expectation, unchanged); recorded in summary()
    skew_ms: dict[str, tuple[float, float]] = field(default_factory=dict)
    # relays count the TCP payload from this source port apart (the content servers' responses)
    payload_sport: int = OCA_PORT
    routing: str = "static"         # static: the plan's routes | bgp: FRR on every router (emulation.frr)
    # TCP's initial window (segments) on every route of every host; None: the kernel's (10). A
    # model scale sets it (harness.modelscale), so that slow start takes the world's round trips
    initcwnd: int | None = None


@dataclass
class _Ctl:
    """What OVSSwitch.start needs to know of a controller (no extra shell process)."""
    port: int
    name: str = "c0"
    protocol: str = "tcp"

    def IP(self) -> str:  # noqa: N802 (Mininet's name)
        return "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_ready(proc: subprocess.Popen, label: str, timeout_s: float) -> str:
    """Wait for the READY line a service prints; raise with its stderr if it dies or hangs."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        r, _, _ = select.select([proc.stdout], [], [], 0.2)
        if r:
            line = proc.stdout.readline().decode(errors="replace").strip()
            if line.startswith("READY"):
                return line
            if not line and proc.poll() is not None:
                break
        elif proc.poll() is not None:
            break
    err = proc.stderr.read().decode(errors="replace")[-2000:] if proc.stderr else ""
    raise EmulationError(f"{label} did not become ready (exit {proc.poll()}): {err.strip()}")


class Network:
    """A Plan realized on this machine. Every attribute exists from construction (empty until
    start() fills it in), so stop() and summary() work before, during and after a failed start."""

    def __init__(self, plan: Plan, opts: Options | None = None) -> None:
        self.plan = plan
        self.opts = opts or Options()
        self.started = False  # start() completed
        self._machine_lock = MachineLock(LOCK_FILE, self.opts.label, self.opts.lock_wait_s)
        # chosen and made by _prepare
        self.link_backend, self.datapath = "", ""
        self.reasons: dict[str, str] = {}
        self.work_dir: Path | None = None
        self.ledger: Ledger | None = None
        self.procs: ProcessGroup | None = None
        self.child_groups: list[ProcessGroup] = []  # e.g. services; stopped before the network
        # the emulated nodes and links
        self.mn: Mininet | None = None
        self.nodes: dict[str, Node] = {}
        self.relay: Node | None = None  # the namespace of every link relay (relay backend)
        self._relay_ports: dict[str, tuple[str, str]] = {}  # link name -> its two relay interfaces
        self._relay_procs: dict[str, subprocess.Popen] = {}
        self.relay_control_files: dict[str, Path] = {}  # link name -> its relay's control file
        self.relay_stats_files: dict[str, Path] = {}  # link name -> its relay's stats file
        self.faults = LinkFaults(self)  # run-time faults: impair(), link_down(), ...
        # the controller; the same argv restarts it on the same ports
        self.controller_argv: list[str] = []
        self.of_port: int | None = None
        self.api_url: str | None = None
        self.mgmt_url: str | None = None  # the controller API, from the control host
        # the fidelity gate
        self.fidelity: list = []
        self.compensation_ms: dict[str, float] = {}
        self.calibration_rounds = 0
        self.cpu_busy_at_gate: list[float] = []  # busy fraction before each measurement
        self.settle_remeasured: list[int] = []  # pairs measured again per settle round
        self.link_verdict: list = []  # emulation.linkfit.Unit per link or inseparable group
        self.timings_s: dict[str, float] = {}
        if self.opts.routing not in ROUTING_MODES:
            raise EmulationError(f"routing: {self.opts.routing!r} is not one of {', '.join(ROUTING_MODES)}")
        self.bgp = None  # emulation.frr.BgpRouting when Options.routing is "bgp"
        if self.opts.routing == "bgp":
            from emulation.frr import BgpRouting
            self.bgp = BgpRouting(self)

    def __enter__(self) -> "Network":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---- lifecycle -------------------------------------------------------------------
    def start(self) -> None:
        self._machine_lock.acquire()
        t0 = time.monotonic()
        try:
            self._prepare()
            self.mn = Mininet(topo=None, build=False, controller=None, autoSetMacs=False,
                              autoStaticArp=False, ipBase="198.18.0.0/15", waitConnected=False)
            self._add_nodes()
            self._add_links()
            self._configure()
            self._add_mgmt_link()
            self._start_relays()
            if self.opts.controller:
                self._start_controller()
            self._start_switches()
            self.timings_s["build"] = time.monotonic() - t0
            if self.opts.verify:
                self.verify()
            if self.bgp is not None:  # after the gate: its relay restarts would expire hold timers
                self.bgp.start()
            self.started = True
        except BaseException:
            self.stop()
            raise

    def _prepare(self) -> None:
        setLogLevel("error")
        # We hold the machine-wide lock, so ledgers of dead owners are leftovers of crashed runs.
        removed = clean_leftovers(log=lambda m: print(m, file=sys.stderr))
        if any(removed.values()):
            print("ocalab: removed leftovers of a crashed run: "
                  + ", ".join(f"{v} {k}" for k, v in removed.items() if v), file=sys.stderr)
        self.link_backend, self.reasons["link_backend"] = linkemu.choose(
            self.opts.link_backend, linkemu.probe_netem(), "netem", "relay")
        self.datapath, self.reasons["datapath"] = linkemu.choose(
            self.opts.datapath, linkemu.probe_ovs_kernel(), "kernel", "user")
        self._check_skew()
        self.work_dir = Path(self.opts.work_dir or tempfile.mkdtemp(prefix="ocalab-net-"))
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.ledger = Ledger.create(self.opts.label)
        self.procs = ProcessGroup(self.ledger)

    def _check_skew(self) -> None:
        """Options.skew_ms names plan links, with two numbers no faster than the link's delay; on
        the relay backend only relayed (impaired) links can be skewed."""
        by_name = {lk.name: lk for lk in self.plan.links}
        for name, skew in self.opts.skew_ms.items():
            lk = by_name.get(name)
            if lk is None:
                raise EmulationError(f"skew_ms: {name!r} is not a link of plan {self.plan.name!r}")
            if len(skew) != 2 or min(skew) < -lk.delay_ms:
                raise EmulationError(f"skew_ms[{name!r}]: want (a->b, b->a) ms each >= -{lk.delay_ms:g}, got {skew!r}")
            if self.link_backend == "relay" and not lk.impaired:
                raise EmulationError(f"skew_ms[{name!r}]: the link has no delay line on the relay backend")

    def _realized(self, lk, node: str):
        """The link as `node`'s end shapes its egress (direction node -> other end), skew included."""
        skew = self.opts.skew_ms.get(lk.name)
        if not skew or self.link_backend != "netem":
            return lk
        return replace(lk, delay_ms=lk.delay_ms + skew[0 if node == lk.a.node else 1])

    def stop(self) -> None:
        """Stop everything this network started; safe to call twice, and after a failed start."""
        if self.mn is None and self.procs is None:
            self._machine_lock.release()
            return
        t0 = time.monotonic()
        for group in reversed(self.child_groups):
            group.stop_all()
        if self.procs is not None:
            self.procs.stop_all()
        if self.bgp is not None:
            self.bgp.finish()
        if self.mn is not None:
            if self.mn.switches:
                OVSSwitch.batchShutdown(self.mn.switches)
            for h in self.mn.hosts:
                h.terminate()
            if self.relay is not None:
                self.relay.terminate()
            for intf in self.ledger.entries["root_intfs"]:
                subprocess.run(["ip", "link", "del", intf], capture_output=True)
            self.mn.hosts, self.mn.switches = [], []
            self.mn = None
        self.procs = None
        if self.ledger is not None:
            self.ledger.close()
        self.timings_s["teardown"] = time.monotonic() - t0
        self._machine_lock.release()

    # ---- building ------------------------------------------------------------------
    def _add_nodes(self) -> None:
        for n in self.plan.nodes:
            if n.kind == "switch":
                self.ledger.add("bridges", n.name)
                sw = self.mn.addSwitch(n.name, cls=OVSSwitch, dpid=f"{n.dpid:016x}",
                                       failMode="secure" if self.opts.controller else "standalone",
                                       datapath=self.datapath, protocols="OpenFlow13")
                self.ledger.add_proc(sw.pid, f"shell:{n.name}")
                self.nodes[n.name] = sw
            else:
                h = self.mn.addHost(n.name, cls=Host, ip=None)
                self.ledger.add_proc(h.pid, f"shell:{n.name}")
                self.nodes[n.name] = h
        if self.link_backend == "relay" and any(lk.impaired for lk in self.plan.links):
            self.relay = Node(RELAY_NODE, inNamespace=True)
            self.ledger.add_proc(self.relay.pid, f"shell:{RELAY_NODE}")

    def _port(self, end) -> int:
        # Mininet skips OpenFlow port 0 on switches: switch ports are plan port + 1.
        return end.port + 1 if self.plan.node(end.node).kind == "switch" else end.port

    def _add_links(self) -> None:
        for i, lk in enumerate(self.plan.links):
            a, b = lk.a, lk.b
            for e in (a, b):
                if self.plan.node(e.node).kind == "switch":
                    self.ledger.add("root_intfs", e.intf)
            na, nb = self.nodes[a.node], self.nodes[b.node]
            if self.relay is not None and lk.impaired:
                ra, rb = f"{RELAY_NODE}-{2 * i}", f"{RELAY_NODE}-{2 * i + 1}"
                MnLink(na, self.relay, port1=self._port(a), port2=2 * i, intfName1=a.intf,
                       intfName2=ra, addr1=a.mac, addr2=_relay_mac(2 * i))
                MnLink(self.relay, nb, port1=2 * i + 1, port2=self._port(b), intfName1=rb,
                       intfName2=b.intf, addr1=_relay_mac(2 * i + 1), addr2=b.mac)
                self._relay_ports[lk.name] = (ra, rb)
            else:
                MnLink(na, nb, port1=self._port(a), port2=self._port(b), intfName1=a.intf,
                       intfName2=b.intf, addr1=a.mac, addr2=b.mac)

    def _configure(self) -> None:
        """Addresses, offloads, shaping, sysctls and routes, one checked script per node."""
        scripts: dict[str, list[str]] = {n.name: [] for n in self.plan.nodes}
        for lk in self.plan.links:
            for e in (lk.a, lk.b):
                s = scripts[e.node]
                s.append(linkemu.offload_script(e.intf, relay_end=False))
                if self.plan.node(e.node).kind != "switch":  # switch ports: after add-port
                    s.append(linkemu.shaping_script(e.intf, self._realized(lk, e.node), self.link_backend))
                if e.ip:
                    s.append(f"ip addr add {e.ip} dev {e.intf}")
                s.append(f"ip link set {e.intf} up")
        for n in self.plan.nodes:
            if n.kind == "switch":
                continue
            s = scripts[n.name]
            s[:0] = ["ip link set lo up", "sysctl -qw net.ipv6.conf.all.disable_ipv6=1",
                     "sysctl -qw net.ipv4.conf.all.send_redirects=0",
                     "sysctl -qw net.ipv4.conf.all.accept_redirects=0",
                     "sysctl -qw net.ipv4.conf.default.send_redirects=0",
                     f"sysctl -qw net.ipv4.ip_forward={1 if n.kind == 'router' else 0}"]
            for r in self.plan.routes:
                if r.node == n.name:
                    s.append(f"ip route replace {r.dst} via {r.via}")
            if n.kind == "host" and self.opts.initcwnd is not None:
                s += initcwnd_script(self.opts.initcwnd)
        for name, lines in scripts.items():
            node = self.nodes[name]
            script = "set -e\n" + "\n".join(lines)
            if self.plan.node(name).kind == "switch":
                r = subprocess.run(["sh", "-c", script], capture_output=True, text=True)
                out, err, rc = r.stdout, r.stderr, r.returncode
            else:
                out, err, rc = node.pexec(["sh", "-c", script])
            if rc != 0:
                raise EmulationError(f"configuring {name} failed: {(err or out).strip()}")
        if self.relay is not None:
            lines = ["set -e", "ip link set lo up", "sysctl -qw net.ipv6.conf.all.disable_ipv6=1"]
            for ra, rb in self._relay_ports.values():
                for intf in (ra, rb):
                    lines += [linkemu.offload_script(intf, relay_end=True), f"ip link set {intf} up"]
            out, err, rc = self.relay.pexec(["sh", "-c", "\n".join(lines)])
            if rc != 0:
                raise EmulationError(f"configuring relay node failed: {(err or out).strip()}")

    def _add_mgmt_link(self) -> None:
        """A veth from the root namespace to the control-plane host, if the plan has one."""
        ctl = self.plan.nodes_of(role="control")
        if not ctl:
            return
        host = self.nodes[ctl[0].name]
        self.ledger.add("root_intfs", MGMT_ROOT_INTF)
        intf = f"{ctl[0].name}-mgmt"
        r = subprocess.run(["sh", "-c", f"set -e; ip link add {MGMT_ROOT_INTF} type veth peer name {intf} "
                            f"netns {host.pid}; ip addr add {MGMT_ROOT_ADDR}/{MGMT_PREFIX_LEN} dev {MGMT_ROOT_INTF}; "
                            f"ip link set {MGMT_ROOT_INTF} up"], capture_output=True, text=True)
        out, err, rc = host.pexec(["sh", "-c", f"set -e; ip addr add {MGMT_HOST_ADDR}/{MGMT_PREFIX_LEN} dev {intf}; "
                                   f"ip link set {intf} up"]) if r.returncode == 0 else ("", r.stderr, 1)
        if rc != 0:
            raise EmulationError(f"management link to {ctl[0].name} failed: {(err or out).strip()}")

    def _start_relays(self, only: dict[str, float] | None = None) -> None:
        """Start one relay per impaired link (or restart those in `only`, with the given
        compensation in ms taken off their delay) and wait until each is ready."""
        if self.relay is None:
            return
        pending = []
        for i, lk in enumerate(self.plan.links):
            if lk.name not in self._relay_ports or (only is not None and lk.name not in only):
                continue
            ra, rb = self._relay_ports[lk.name]
            # compensation off both directions, Options.skew_ms on; a delay line is never below 0
            delay_ms = lk.delay_ms - (only or {}).get(lk.name, 0.0)
            skew_ab, skew_ba = self.opts.skew_ms.get(lk.name, (0.0, 0.0))
            ab, ba = max(delay_ms + skew_ab, 0.0), max(delay_ms + skew_ba, 0.0)
            ready = self.work_dir / f"relay-{i}.ready"
            ready.unlink(missing_ok=True)
            control = self.relay_control_files.setdefault(lk.name, self.work_dir / f"relay-{i}.control")
            self.relay_stats_files[lk.name] = self.work_dir / f"relay-{i}.stats.json"
            argv = [sys.executable, "-m", "emulation.relay", "--a", ra, "--b", rb,
                    "--control-file", str(control),
                    "--delay-ms-ab", f"{ab:g}", "--delay-ms-ba", f"{ba:g}",
                    "--jitter-ms", f"{lk.jitter_ms:g}", "--loss-pct", f"{lk.loss_pct:g}",
                    "--seed", str(1000 + i), "--ready-file", str(ready),
                    "--payload-sport", str(self.opts.payload_sport),
                    "--stats-file", str(self.relay_stats_files[lk.name])]
            log = open(self.work_dir / f"relay-{i}.log", "ab")
            proc = self.procs.start(f"relay:{lk.name}", argv, node=self.relay, stdout=log, stderr=log)
            self._relay_procs[lk.name] = proc
            pending.append((i, lk, ready, proc))
        deadline = time.monotonic() + 20
        for i, lk, ready, proc in pending:
            while not ready.exists():
                if proc.poll() is not None or time.monotonic() > deadline:
                    log = (self.work_dir / f"relay-{i}.log").read_text()[-1500:]
                    raise EmulationError(f"relay for {lk.name} failed to start: {log.strip()}")
                time.sleep(0.02)

    def verify(self, raise_on_fail: bool = True, settle_rounds: int | None = None) -> list:
        """The fidelity gate; pair results kept in self.fidelity, the per-link verdict
        (emulation.linkfit) in self.link_verdict. With relays: measure, take the emulator's own
        latency off each relayed link (at most linkfit.COMPENSATION_BUDGET_MS one way), and measure
        again while a pair or link is off by more than CALIBRATION_AIM of its tolerance (at most
        CALIBRATION_ROUNDS rounds, MAX_CALIBRATION_ROUNDS while one reads early; the last
        measurement is the verdict). Every measurement waits for a quiet machine and measures
        suspects once more (fidelity.measure); before the verdict, suspects get settle_rounds
        (default SETTLE_ROUNDS) more tries (fidelity.remeasure), counted in self.settle_remeasured."""
        from emulation.fidelity import SETTLE_BUSY_FRAC, SETTLE_PAUSE_S, SETTLE_ROUNDS, check_links, remeasure, wait_quiet
        from emulation.linkfit import judge_links
        t1 = time.monotonic()
        relayed = set(self._relay_ports)
        self.cpu_busy_at_gate = [round(wait_quiet(), 3)]
        results = self._measure()
        self.calibration_rounds = 0
        while self.relay is not None and self.calibration_rounds < MAX_CALIBRATION_ROUNDS:
            results, go_on = self._calibrate_once(results, relayed)
            if not go_on:
                break
        self.settle_remeasured = []
        results = remeasure(self, results, SETTLE_ROUNDS if settle_rounds is None else settle_rounds,
                            SETTLE_PAUSE_S, SETTLE_BUSY_FRAC, log=self.settle_remeasured, plan=self.plan,
                            compensation_ms=self.compensation_ms, relayed=relayed)
        self.fidelity = results
        self.link_verdict = judge_links(self.plan, results, self.compensation_ms, relayed)
        self.timings_s["fidelity"] = time.monotonic() - t1
        if raise_on_fail:
            check_links(self.link_verdict, results)
        return results

    def _measure(self) -> list:
        from emulation.fidelity import measure
        return measure(self, plan=self.plan, compensation_ms=self.compensation_ms, relayed=set(self._relay_ports))

    def _calibrate_once(self, results: list, relayed: set[str]) -> tuple[list, bool]:
        """One calibration round of verify(): (results, whether to go on). Stops when every pair and
        link is within CALIBRATION_AIM of its tolerance (after a first round), after
        CALIBRATION_ROUNDS unless one reads early, or when nothing would change."""
        from emulation.fidelity import early, measured_error_ms, wait_quiet
        from emulation.linkfit import calibrate, early_unit, judge_links
        units = judge_links(self.plan, results, self.compensation_ms, relayed)
        rounds = self.calibration_rounds
        if rounds and all(measured_error_ms(m) <= CALIBRATION_AIM * m.tolerance_ms for m in results) \
                and all(u.error_ms <= CALIBRATION_AIM * u.tolerance_ms for u in units):
            return results, False
        if rounds >= CALIBRATION_ROUNDS and not any(early(m) for m in results) and not any(map(early_unit, units)):
            return results, False
        comp = calibrate(units, self.plan, relayed, base=self.compensation_ms)
        changed = {k: comp.get(k, 0.0) for k in set(comp) | set(self.compensation_ms)
                   if comp.get(k, 0.0) != self.compensation_ms.get(k, 0.0)}
        if not changed:
            return results, False
        self._restart_relays(changed)
        self.compensation_ms = comp
        self.calibration_rounds += 1
        self.cpu_busy_at_gate.append(round(wait_quiet(), 3))
        return self._measure(), True

    def _restart_relays(self, comp: dict[str, float]) -> None:
        """Restart the relays of the links in `comp` with that compensation (ms) off their delay."""
        for name in comp:
            proc = self._relay_procs.pop(name)
            proc.terminate()
            proc.wait(5)
        self._start_relays(only=comp)

    def _start_controller(self) -> None:
        plan_file = self.work_dir / "plan.json"
        plan_file.write_text(self.plan.to_json())
        of_port, api_port = free_port(), free_port()
        argv = [sys.executable, "-m", "controller.launcher", "--plan", str(plan_file),
                "--of-port", str(of_port), "--api-port", str(api_port),
                "--log", str(self.work_dir / "controller.log")]
        if self.plan.nodes_of(role="control"):  # _add_mgmt_link made the management veth
            argv += ["--mgmt-host", MGMT_ROOT_ADDR]
        if self.relay is not None and self._relay_ports:  # far-end link failures hide behind relays
            relay_map = self.work_dir / "relay-map.json"
            relay_map.write_text(json.dumps({"netns": f"/proc/{self.relay.pid}/ns/net",
                                             "links": {k: list(v) for k, v in self._relay_ports.items()}}))
            argv += ["--relay-map", str(relay_map)]
        proc = self.procs.start("controller", argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        read_ready(proc, "controller", 30)
        self.controller_argv = argv
        self.of_port = of_port
        self.api_url = f"http://127.0.0.1:{api_port}"
        if self.plan.nodes_of(role="control"):
            self.mgmt_url = f"http://{MGMT_ROOT_ADDR}:{api_port}"

    def _start_switches(self) -> None:
        ctls = [_Ctl(self.of_port)] if self.opts.controller else []
        for sw in self.mn.switches:
            sw.start(ctls)
        self._shape_switch_ports()
        if not self.opts.controller:
            return
        self._wait_switches_ready(30)

    def _wait_switches_ready(self, timeout_s: float) -> None:
        n = len(self.mn.switches)
        deadline = time.monotonic() + timeout_s
        health: dict = {}
        while time.monotonic() < deadline:
            health = self.api("/health")
            if health.get("switches_ready") == n:
                return
            time.sleep(0.2)
        raise EmulationError(f"controller did not program all {n} switches in {timeout_s:g} s: {health}")

    def controller_proc(self) -> subprocess.Popen:
        """The running (newest) controller process of this network, by its handle."""
        procs = [p for label, p in (self.procs.procs if self.procs else []) if label == "controller"]
        if not procs:
            raise EmulationError("this network has no controller")
        return procs[-1]

    def restart_controller(self, timeout_s: float = 30) -> None:
        """Start the controller again (same argv, same OpenFlow and API ports) once the old one
        has ended; returns when it has programmed every switch again (it first deletes the flows
        with its cookies, so no stale entry survives: controller.app)."""
        if self.controller_proc().poll() is None:
            raise EmulationError("restart_controller: the controller is still running")
        proc = self.procs.start("controller", self.controller_argv, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        read_ready(proc, "controller", timeout_s)
        self._wait_switches_ready(timeout_s)

    def fail_modes(self) -> dict[str, str]:
        """Each OVS bridge's fail mode (`ovs-vsctl get-fail-mode`): secure keeps the installed
        flows and adds none while the controller is away; standalone falls back to L2 learning."""
        out = {}
        for sw in self.mn.switches:
            r = subprocess.run(["ovs-vsctl", "get-fail-mode", sw.name], capture_output=True, text=True)
            if r.returncode != 0:
                raise EmulationError(f"ovs-vsctl get-fail-mode {sw.name}: {r.stderr.strip()}")
            out[sw.name] = r.stdout.strip() or "standalone"  # unset means standalone (ovs-vsctl(8))
        return out

    def flow_tables(self) -> dict[str, list[str]]:
        """Each bridge's flows without counters (`ovs-ofctl dump-flows --no-stats`), sorted."""
        out = {}
        for sw in self.mn.switches:
            r = subprocess.run(["ovs-ofctl", "-O", "OpenFlow13", "dump-flows", sw.name, "--no-stats"],
                               capture_output=True, text=True, timeout=20)
            if r.returncode != 0:
                raise EmulationError(f"ovs-ofctl dump-flows {sw.name}: {r.stderr.strip()}")
            out[sw.name] = sorted(ln.strip() for ln in r.stdout.splitlines()
                                  if ln.strip() and "reply" not in ln)
        return out

    # ---- run-time faults (emulation.faults) -------------------------------------------
    def impair(self, link_name: str, extra_delay_ms: float = 0.0, loss_pct: float = 0.0, *,
               extra_delay_ms_ba: float | None = None, loss_pct_ba: float | None = None) -> Impairment:
        """Extra one-way delay and loss on a link, a->b (and b->a: the same unless given), on
        top of its plan; replaces earlier delay and loss, keeps a down link down."""
        return self.faults.update(
            link_name, extra_delay_ms_ab=extra_delay_ms, loss_pct_ab=loss_pct,
            extra_delay_ms_ba=extra_delay_ms if extra_delay_ms_ba is None else extra_delay_ms_ba,
            loss_pct_ba=loss_pct if loss_pct_ba is None else loss_pct_ba)

    def link_down(self, link_name: str) -> Impairment:
        """Drop every frame on the link, both ways (carrier stays up: a black hole)."""
        return self.faults.update(link_name, down=True)

    def link_up(self, link_name: str) -> Impairment:
        """Undo link_down (injected delay and loss stay)."""
        return self.faults.update(link_name, down=False)

    def clear_impairments(self) -> None:
        """Every link back to its plan."""
        self.faults.clear_all()

    def relay_stats(self, timeout_s: float = 5.0) -> dict[str, dict]:
        """Every running relay's counters now (emulation.relay.live_stats), by link name; {}
        without relays."""
        from emulation.relay import live_stats
        return live_stats({name: (proc, self.relay_stats_files[name])
                           for name, proc in self._relay_procs.items()}, timeout_s)

    def relay_procs(self) -> dict[str, subprocess.Popen]:
        """The running relay of each relayed link (replaced when calibration restarts one)."""
        return dict(self._relay_procs)

    # ---- helpers for callers ---------------------------------------------------------
    def _shape_switch_ports(self) -> None:
        """Shape switch ports once OVS has them: `add-port` replaces a port's root qdisc."""
        lines = ["set -e"]
        for lk in self.plan.links:
            for e in (lk.a, lk.b):
                if self.plan.node(e.node).kind == "switch":
                    lines.append(linkemu.shaping_script(e.intf, self._realized(lk, e.node), self.link_backend))
        r = subprocess.run(["sh", "-c", "\n".join(lines)], capture_output=True, text=True)
        if r.returncode != 0:
            raise EmulationError(f"shaping switch ports failed: {r.stderr.strip()}")
        self.verify_shaping()

    def verify_shaping(self) -> None:
        """Read back every link end's qdisc: an HTB class at the plan's rate must be there."""
        bad = []
        for lk in self.plan.links:
            for e in (lk.a, lk.b):
                node = self.plan.node(e.node)
                cmd = f"tc class show dev {e.intf}"
                out = subprocess.run(["sh", "-c", cmd], capture_output=True, text=True).stdout \
                    if node.kind == "switch" else self.nodes[e.node].cmd(cmd)
                if not linkemu.shaped_at(out, lk.bw_mbps):
                    bad.append(f"{e.intf} (plan {lk.bw_mbps:g} Mbit/s): {out.strip() or 'no HTB class'}")
        if bad:
            raise EmulationError("link shaping is not in place on: " + "; ".join(bad[:6]))

    def api(self, path: str) -> dict:
        try:
            with urllib.request.urlopen(self.api_url + path, timeout=2) as r:
                return json.loads(r.read())
        except OSError as e:
            return {"error": str(e)}

    def process_group(self) -> ProcessGroup:
        """A group of processes stopped before the network's own (services, players)."""
        group = ProcessGroup(self.ledger)
        self.child_groups.append(group)
        return group

    def host(self, name: str):
        return self.nodes[name]

    def relay_engines(self) -> dict[str, int]:
        """How many relays run each engine (emulation.relay chooses it the same way)."""
        from emulation.delayline import LineParams
        from emulation.relay import choose_engine, native_binary
        built = native_binary() is not None
        out: dict[str, int] = {}
        for lk in self.plan.links:
            if lk.name in self._relay_ports:
                p = LineParams(delay_ms=lk.delay_ms, jitter_ms=lk.jitter_ms, loss_pct=lk.loss_pct)
                engine = choose_engine("auto", p, p, built)
                out[engine] = out.get(engine, 0) + 1
        return out

    def summary(self) -> dict:
        """What the manifest records of the network; `started` is False after a failed start."""
        return {"plan": self.plan.name, "plan_hash": self.plan.plan_hash(), "started": self.started,
                "routing": self.opts.routing, "initcwnd": self.opts.initcwnd,
                "bgp_session_drops_at_ready": self.bgp.drops_at_ready if self.bgp is not None else None,
                "link_backend": self.link_backend, "switch_datapath": self.datapath,
                "reasons": self.reasons, "timings_s": self.timings_s,
                "relays": len(self._relay_ports), "relay_engines": self.relay_engines(),
                "compensation_ms": self.compensation_ms,
                "compensation_budget_ms": COMPENSATION_BUDGET_MS,
                "skew_ms": {k: list(v) for k, v in self.opts.skew_ms.items()},
                "link_verdict": link_rows(self.link_verdict),
                "calibration_rounds": self.calibration_rounds,
                "cpu_busy_at_gate": self.cpu_busy_at_gate,
                "settle_remeasured": self.settle_remeasured}


def initcwnd_script(segments: int) -> list[str]:
    """Shell lines that set TCP's initial window on every IPv4 route of a host and fail (set -e)
    unless every route then carries it."""
    if not isinstance(segments, int) or isinstance(segments, bool) or not 1 <= segments <= 100:
        raise EmulationError(f"initcwnd must be an integer in 1..100, got {segments!r}")
    return [f"ip -4 route show | while read -r r; do ip route change $r initcwnd {segments}; done",
            f'test -z "$(ip -4 route show | grep -v " initcwnd {segments}")"']


def _relay_mac(i: int) -> str:
    return f"02:0d:00:00:{i >> 8:02x}:{i & 255:02x}"
