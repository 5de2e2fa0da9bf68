"""The controller against a real OVS userspace bridge: two namespaces oct<pid>a/b on bridge oct<pid>.

Integration tests (no root) check the launcher contract on 127.0.0.1; emulation tests (root, OVS
running) check secure-mode blocking, flow install, byte accounting against the kernel's counters,
a clean flow table after a restart, and that a failing handler ends the process loudly.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from controller import forwarding as fw
from controller.anycast import ANYCAST_IP, punt_specs
from topologies.plan import Link, LinkEnd, Node, Plan

PID = os.getpid()
S, T, U = (f"oc{PID}{x}" for x in "stu")  # a triangle of bridges: S-T and S-U on the flood tree
SWITCHES = (S, T, U)
NS = {"a": f"oc{PID}a", "b": f"oc{PID}b"}
HOST_DEV = {"a": f"oc{PID}ha", "b": f"oc{PID}hb"}
ADDR = {"a": "198.18.251.1", "b": "198.18.251.2"}
DPID_BASE = 0x0CC7_0000_0000 + (PID << 4)
DPIDS = {sw: DPID_BASE + i for i, sw in enumerate(SWITCHES)}
TRANSFER_BYTES = 24 * 1024 * 1024
RECEIVER = """
import socket, sys
s = socket.socket(); s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(1)
print("listening", flush=True)
c, _ = s.accept(); n = 0
while True:
    d = c.recv(1 << 16)
    if not d: break
    n += len(d)
print(n, flush=True)
"""
SENDER = """
import socket, sys
s = socket.socket(); s.settimeout(20); s.connect((sys.argv[1], int(sys.argv[2])))
chunk = b"x" * (1 << 16); left = int(sys.argv[3])
while left > 0:
    s.sendall(chunk[:left]); left -= min(left, len(chunk))
s.close()
"""


def tiny_plan() -> Plan:
    """ha on S, hb on T, and the three switches in a cycle (links in this order)."""
    nodes = tuple(Node(sw, "switch", "lan", "isp1", dpid=DPIDS[sw]) for sw in SWITCHES) + (
        Node("ha", "host", "viewer", "isp1"), Node("hb", "host", "viewer", "isp1"))
    mac = lambda i: f"02:cc:00:00:01:{i:02x}"  # noqa: E731
    links = (Link(LinkEnd("ha", 0, "02:cc:00:00:00:0a", f"{ADDR['a']}/24"), LinkEnd(S, 0, mac(0)),
                  "access", 1000.0, 0.0),
             Link(LinkEnd("hb", 0, "02:cc:00:00:00:0b", f"{ADDR['b']}/24"), LinkEnd(T, 0, mac(1)),
                  "peering", 1000.0, 0.0),
             Link(LinkEnd(S, 1, mac(2)), LinkEnd(T, 1, mac(3)), "backbone", 1000.0, 0.0),
             Link(LinkEnd(S, 2, mac(4)), LinkEnd(U, 0, mac(5)), "backbone", 1000.0, 0.0),
             Link(LinkEnd(T, 2, mac(6)), LinkEnd(U, 1, mac(7)), "backbone", 1000.0, 0.0))
    return Plan("ctltest", nodes, links)


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(args, check=check, capture_output=True, text=True, timeout=30)


def get(api_port: int, path: str):
    with urllib.request.urlopen(f"http://127.0.0.1:{api_port}{path}", timeout=5) as r:
        return json.loads(r.read())


class Controller:
    """One launcher process, stopped by handle."""

    def __init__(self, plan_file: Path, of_port: int = 0, env: dict | None = None,
                 log: Path | None = None):
        args = [sys.executable, "-m", "controller.launcher", "--plan", str(plan_file),
                "--of-port", str(of_port), "--api-port", "0", "--stats-interval-s", "0.5"]
        if log:
            args += ["--log", str(log)]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env={**os.environ, **(env or {})})
        line = self.proc.stdout.readline()
        m = re.fullmatch(r"READY of=(\d+) api=(\d+)\n", line)
        if not m:
            self.stop()
            raise AssertionError(f"no READY line, got {line!r}; stderr: {self.proc.stderr.read()}")
        self.of_port, self.api_port = int(m[1]), int(m[2])

    def wait_ready(self, timeout_s: float = 20.0) -> dict:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            h = get(self.api_port, "/health")
            if h["switches_ready"] == h["switches_expected"]:
                return h
            assert self.proc.poll() is None, f"controller died: {self.proc.stderr.read()}"
            time.sleep(0.2)
        raise AssertionError(f"switches not ready after {timeout_s} s: {h}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


@pytest.fixture(scope="module")
def plan_file(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("ctl") / "plan.json"
    p.write_text(tiny_plan().to_json())
    return p


# ---- integration: the launcher contract, no switch needed ------------------------------

@pytest.mark.integration
def test_launcher_ready_line_and_api(plan_file):
    c = Controller(plan_file)
    try:
        h = get(c.api_port, "/health")
        assert h == {**h, "ok": True, "switches_expected": 3, "switches_ready": 0, "errors": []}
        sw = get(c.api_port, "/switches")[str(DPIDS[S])]
        assert sw["name"] == S and not sw["connected"] and sw["missing_ports"] == [f"{S}-{i}" for i in range(3)]
        links = get(c.api_port, "/links")
        assert [(r["cls"], r["port"]) for r in links] == [
            ("access", f"{S}-0"), ("peering", f"{T}-0"), ("backbone", f"{S}-1"), ("backbone", f"{S}-2"),
            ("backbone", f"{T}-2")]
        with pytest.raises(urllib.error.HTTPError) as e:
            get(c.api_port, "/nope")
        assert e.value.code == 404
    finally:
        assert c.stop() == 0


@pytest.mark.integration
def test_api_routes_errors_and_extension():
    from controller.api import ApiError, ApiServer

    api = ApiServer(0)
    api.add_view("/x", lambda: {"v": 1})
    api.add_route("POST", "/echo", lambda q, body: {"q": q, "len": len(body)})
    api.add_route("GET", "/teapot", lambda q, body: (_ for _ in ()).throw(ApiError(418, "short and stout")))
    api.add_view("/boom", lambda: 1 / 0)
    with pytest.raises(ValueError, match="already defined"):
        api.add_view("/x", dict)
    assert api.dispatch("GET", "/x/", b"") == (200, {"v": 1})
    assert api.dispatch("POST", "/echo?a=1", b"abc") == (200, {"q": {"a": ["1"]}, "len": 3})
    assert api.dispatch("GET", "/echo", b"")[0] == 405
    assert api.dispatch("GET", "/teapot", b"") == (418, {"error": "short and stout"})
    assert api.dispatch("GET", "/boom", b"") == (500, {"error": "ZeroDivisionError: division by zero"})
    api.start()
    try:
        assert get(api.port, "/x") == {"v": 1}
    finally:
        api.stop()


@pytest.mark.integration
def test_launcher_rejects_bad_plan(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"format": "ocalab-plan/9"}))
    r = subprocess.run([sys.executable, "-m", "controller.launcher", "--plan", str(bad),
                        "--of-port", "0", "--api-port", "0"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and r.stdout == ""
    assert "invalid plan" in r.stderr and "ocalab-plan/9" in r.stderr


@pytest.mark.integration
@pytest.mark.parametrize("args,msg", [(["--mgmt-host", "nope"], "--mgmt-host must be an IP address"),
                                      (["--anycast-ip", "198.18.251.7"], "on the subnet of")])
def test_launcher_rejects_bad_mgmt_and_anycast_addresses(plan_file, args, msg):
    r = subprocess.run([sys.executable, "-m", "controller.launcher", "--plan", str(plan_file),
                        "--of-port", "0", "--api-port", "0", *args], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and r.stdout == "" and msg in r.stderr, r.stderr


def post(api_port: int, path: str, body: bytes):
    req = urllib.request.Request(f"http://127.0.0.1:{api_port}{path}", data=body, method="POST")
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.loads(r.read())


@pytest.mark.integration
def test_rank_and_oca_push_over_http(plan_file):
    c = Controller(plan_file)
    try:
        codes = {}
        for path in ("/rank?viewer=198.18.251.1", "/rank", "/rank?viewer=198.18.251.9"):
            with pytest.raises(urllib.error.HTTPError) as e:
                get(c.api_port, path)
            codes[path] = e.value.code
        assert codes == {"/rank?viewer=198.18.251.1": 503, "/rank": 400, "/rank?viewer=198.18.251.9": 400}
        with pytest.raises(urllib.error.HTTPError) as e:
            post(c.api_port, "/ocas", b"{not json")
        assert e.value.code == 400
        body = {"origin": {"name": "origin", "url": f"http://{ADDR['b']}:8080"},
                "ocas": [{"name": "o1", "tier": "embedded", "url": f"http://{ADDR['b']}:8081", "serves": None,
                          "probe": {"ok": True}, "health": {"status": "ok", "load": 0.5}},
                         {"name": "o2", "tier": "ixp", "url": f"http://{ADDR['b']}:8082", "serves": None,
                          "probe": {"ok": False, "error": "refused"}, "health": None}]}
        assert post(c.api_port, "/ocas", json.dumps(body).encode()) == {
            "ok": True, "ocas": 2, "changed": {"o1": [None, "ok"], "o2": [None, "unreachable"]},
            "unreachable": ["o2"]}
        ranked = get(c.api_port, f"/rank?viewer={ADDR['a']}&title=t0001")
        assert [(x["name"], x["base_url_root"]) for x in ranked["locations"]] == [
            ("o1", f"http://{ADDR['b']}:8081"), ("origin", f"http://{ADDR['b']}:8080")]
        assert ranked["excluded"] == [{"name": "o2", "tier": "ixp", "why": "no_heartbeat"}]  # never probed ok
        assert [o["status"] for o in get(c.api_port, "/ocas")["ocas"]] == ["ok", "unreachable"]
        assert get(c.api_port, "/anycast")["address"] == ANYCAST_IP
    finally:
        assert c.stop() == 0


@pytest.mark.integration
def test_poll_thread_fault_is_fatal(plan_file, tmp_path):
    log = tmp_path / "ctl.log"
    c = Controller(plan_file, env={"OCALAB_CONTROLLER_FAULT": "poll"}, log=log)
    assert c.proc.wait(timeout=15) == 70
    assert "CONTROLLER FATAL: poll: RuntimeError: injected fault" in c.proc.stderr.read()
    assert "CONTROLLER FATAL: poll:" in log.read_text() and "Traceback" in log.read_text()


# ---- emulation: real namespaces and an OVS netdev bridge -----------------------------

def _ovs_running() -> bool:
    try:
        return sh("ovs-vsctl", "--timeout=5", "show", check=False).returncode == 0
    except FileNotFoundError:
        return False


@pytest.fixture(scope="module")
def lab():
    """The plan's bridges, veths and namespaces; everything is removed afterwards."""
    if not _ovs_running():
        pytest.fail("Open vSwitch is not running (ovs-vsctl show failed); run `sudo make setup`")
    plan = tiny_plan()
    try:
        for sw in SWITCHES:
            sh("ovs-vsctl", "--timeout=10", "add-br", sw, "--", "set", "bridge", sw,
               "datapath_type=netdev", "fail_mode=secure", "protocols=OpenFlow13",
               f"other-config:datapath-id={DPIDS[sw]:016x}")
        for side in "ab":
            sh("ip", "netns", "add", NS[side])
        for lk in plan.links:
            if lk.a.node in ("ha", "hb"):
                side = lk.a.node[1]
                _veth(lk.b.intf, HOST_DEV[side], NS[side], lk.a)
            else:
                _veth(lk.a.intf, lk.b.intf)
            for e in (lk.a, lk.b):
                if e.node in SWITCHES:
                    sh("ovs-vsctl", "--timeout=10", "add-port", e.node, e.intf)
        yield plan
    finally:
        for sw in SWITCHES:
            sh("ovs-vsctl", "--timeout=10", "--if-exists", "del-br", sw, check=False)
        for lk in plan.links:
            sh("ip", "link", "del", (lk.a if lk.a.node in SWITCHES else lk.b).intf, check=False)
        for side in "ab":
            sh("ip", "netns", "del", NS[side], check=False)


def _quiet_up(dev: str, netns: str | None = None) -> None:
    """IPv6 off (no stray ND/MLD frames), TX checksum offload off (OVS userspace), link up."""
    nx = ("ip", "netns", "exec", netns) if netns else ()
    if Path("/proc/sys/net/ipv6").exists():
        sh(*nx, "sysctl", "-q", "-w", f"net.ipv6.conf.{dev}.disable_ipv6=1")
    sh(*nx, "ethtool", "-K", dev, "tx", "off")
    sh(*nx, "ip", "link", "set", dev, "up")


def _veth(root_dev: str, peer_dev: str, netns: str | None = None, host_end=None) -> None:
    sh("ip", "link", "add", root_dev, "type", "veth", "peer", "name", peer_dev)
    if netns:
        sh("ip", "link", "set", peer_dev, "netns", netns)
        nx = ("ip", "netns", "exec", netns)
        sh(*nx, "ip", "link", "set", peer_dev, "address", host_end.mac)
        sh(*nx, "ip", "addr", "add", host_end.ip, "dev", peer_dev)
        sh(*nx, "ip", "link", "set", "lo", "up")
    _quiet_up(root_dev)
    _quiet_up(peer_dev, netns)


@pytest.fixture(scope="module")
def controllers(lab):
    """Tracks every launcher started by the emulation tests; all stopped at the end."""
    started: list[Controller] = []
    yield started
    for c in started:
        c.stop()


def connect(of_port: int) -> None:
    for sw in SWITCHES:
        sh("ovs-vsctl", "--timeout=10", "set-controller", sw, f"tcp:127.0.0.1:{of_port}")
        sh("ovs-vsctl", "--timeout=10", "set", "controller", sw, "max_backoff=1000",
           "connection_mode=out-of-band")


def ping(side: str, dst: str) -> bool:
    return sh("ip", "netns", "exec", NS[side], "ping", "-c", "2", "-i", "0.2", "-W", "1", dst,
              check=False).returncode == 0


def dump_flows() -> list[str]:
    """Flows of our bridges without volatile fields (durations, counters, ages)."""
    lines = []
    for sw in SWITCHES:
        for ln in sh("ovs-ofctl", "-O", "OpenFlow13", "dump-flows", sw).stdout.splitlines():
            if "cookie=" in ln:
                ln = re.sub(r"\b(duration|n_packets|n_bytes|idle_age|hard_age)=[^ ,]+,? ?", "", ln.strip())
                lines.append(f"{sw}: {ln}")
    return sorted(lines)


def kernel_counter(intf: str, name: str) -> int:
    return int(Path(f"/sys/class/net/{intf}/statistics/{name}").read_text())


def expected_flows(sw: str) -> int:
    """Forwarding flows plus the anycast punt rule on switches with viewers (on by default)."""
    return len(fw.flow_specs(tiny_plan())[sw]) + len(punt_specs(tiny_plan(), ANYCAST_IP).get(sw, []))


def expected_flow_count() -> int:
    return sum(expected_flows(sw) for sw in SWITCHES)


@pytest.mark.emulation
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root for namespaces and OVS")
def test_secure_mode_blocks_until_controller_installs(lab, plan_file, controllers):
    assert not ping("a", ADDR["b"]), "secure-mode bridges without flows must not forward"
    c = Controller(plan_file)
    controllers.append(c)
    connect(c.of_port)
    h = c.wait_ready()
    assert h["ok"] and h["errors"] == [] and h["switches_ready"] == 3
    for sw in SWITCHES:
        view = get(c.api_port, "/switches")[str(DPIDS[sw])]
        assert view["connected"] and view["flows_installed"] == view["flows_expected"] == expected_flows(sw)
        assert view["missing_ports"] == []
    assert ping("a", ADDR["b"]) and ping("b", ADDR["a"])
    # frames to a MAC the plan does not know hit S's table-miss drop, which is counted
    sh("ip", "netns", "exec", NS["a"], "ip", "neigh", "replace", "198.18.251.99",
       "lladdr", "02:cc:00:00:00:99", "dev", HOST_DEV["a"])
    miss_before = get(c.api_port, "/switches")[str(DPIDS[S])]["miss_packets"] or 0
    assert not ping("a", "198.18.251.99")
    deadline = time.monotonic() + 5
    while (get(c.api_port, "/switches")[str(DPIDS[S])]["miss_packets"] or 0) < miss_before + 2:
        assert time.monotonic() < deadline, "table-miss drops were not counted"
        time.sleep(0.2)


@pytest.mark.emulation
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root for namespaces and OVS")
def test_broadcast_does_not_loop_on_the_cycle(lab, controllers):
    c = _current(controllers)
    for side in "ab":  # fresh ARP broadcasts both ways
        sh("ip", "netns", "exec", NS[side], "ip", "neigh", "flush", "dev", HOST_DEV[side])
    assert ping("a", ADDR["b"]) and ping("b", ADDR["a"])
    time.sleep(1.5)  # at least two polls: a storm would show up as a huge packet count
    rows = {r["name"]: r for r in get(c.api_port, "/links")}
    core = [r for r in rows.values() if r["cls"] == "backbone"]
    assert all(r["samples"] >= 2 for r in core)
    assert sum(r["tx_packets"] + r["rx_packets"] for r in core) < 100
    non_tree = rows[f"{T}:2-{U}:1"]
    assert non_tree["tx_packets"] == 0 and non_tree["rx_packets"] == 0
    st = rows[f"{S}:1-{T}:1"]
    assert st["tx_packets"] > 0 and st["rx_packets"] > 0  # the shortest path a <-> b


def _current(controllers) -> Controller:
    assert controllers and controllers[-1].proc.poll() is None, "needs the controller of the first test"
    return controllers[-1]


@pytest.mark.emulation
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root for namespaces and OVS")
def test_link_bytes_agree_with_kernel_counters(lab, controllers):
    c = _current(controllers)
    pa, pb = f"{S}-0", f"{T}-0"  # the switch ports facing a and b
    rx = subprocess.Popen(["ip", "netns", "exec", NS["b"], sys.executable, "-c", RECEIVER, ADDR["b"], "5001"],
                          stdout=subprocess.PIPE, text=True)
    try:
        assert rx.stdout.readline().strip() == "listening"
        before_api = {r["port"]: r for r in get(c.api_port, "/links")}
        kb = {"tx": kernel_counter(pb, "tx_bytes"), "rx": kernel_counter(pa, "rx_bytes")}
        sh("ip", "netns", "exec", NS["a"], sys.executable, "-c", SENDER, ADDR["b"], "5001", str(TRANSFER_BYTES))
        assert int(rx.stdout.readline()) == TRANSFER_BYTES
        assert rx.wait(timeout=10) == 0
    finally:
        if rx.poll() is None:
            rx.kill()
            rx.wait()
    t_done = time.time()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # wait for two samples taken after the transfer
        rows = {r["port"]: r for r in get(c.api_port, "/links")}
        if all((r["updated_unix_s"] or 0) > t_done + 0.6 for r in rows.values()):
            break
        time.sleep(0.2)
    ka = {"tx": kernel_counter(pb, "tx_bytes"), "rx": kernel_counter(pa, "rx_bytes")}
    api_tx = rows[pb]["tx_bytes"] - before_api[pb]["tx_bytes"]
    api_rx = rows[pa]["rx_bytes"] - before_api[pa]["rx_bytes"]
    k_tx, k_rx = ka["tx"] - kb["tx"], ka["rx"] - kb["rx"]
    drops = {p: {k: rows[p][k] - before_api[p][k] for k in ("tx_dropped", "rx_dropped")} for p in (pa, pb)}
    print(f"\nbytes toward b: api {api_tx} kernel {k_tx}; from a: api {api_rx} kernel {k_rx}; "
          f"drops {drops}")
    assert k_tx >= TRANSFER_BYTES and k_rx >= TRANSFER_BYTES
    assert abs(api_tx - k_tx) <= 0.01 * k_tx
    assert abs(api_rx - k_rx) <= 0.01 * k_rx
    assert rows[pb]["cls"] == "peering" and rows[pa]["cls"] == "access"
    classes = get(c.api_port, "/classes")
    assert classes["peering"]["tx_bytes"] == rows[pb]["tx_bytes"]


@pytest.mark.emulation
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root for namespaces and OVS")
def test_restart_leaves_same_flow_table_without_stale_cookies(lab, plan_file, controllers):
    c = _current(controllers)
    fresh = dump_flows()
    assert len(fresh) == expected_flow_count()
    # a stale entry in our cookie space must go; a foreign one must stay
    sh("ovs-ofctl", "-O", "OpenFlow13", "add-flow", S, "cookie=0xc05,priority=5,ip,actions=drop")
    sh("ovs-ofctl", "-O", "OpenFlow13", "add-flow", S, "cookie=0x77,priority=6,ip,actions=drop")
    assert c.stop() == 0
    c2 = Controller(plan_file, of_port=c.of_port)
    controllers.append(c2)
    c2.wait_ready()
    after = dump_flows()
    assert not any("cookie=0xc05" in ln for ln in after)
    assert [ln for ln in after if "cookie=0x77" in ln], "foreign cookie flows must be left alone"
    sh("ovs-ofctl", "-O", "OpenFlow13", "del-flows", S, "cookie=0x77/-1")
    assert dump_flows() == fresh
    assert ping("a", ADDR["b"])


@pytest.mark.emulation
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root for namespaces and OVS")
def test_far_end_down_is_a_port_status_and_a_down_link(lab, controllers):
    """The host side of ha's veth goes down: S's port loses carrier, OVS sends a port status,
    and the plan link is reported down (then up again) without any polling."""
    c = _current(controllers)
    link = lambda: get(c.api_port, "/links")[0]  # noqa: E731 - ha's access link, measured at S-0
    assert link()["up"] is True
    t0 = time.monotonic()
    sh("ip", "netns", "exec", NS["a"], "ip", "link", "set", HOST_DEV["a"], "down")
    try:
        while link()["up"] is not False:
            assert time.monotonic() - t0 < 5, "port status for the downed far end never arrived"
            time.sleep(0.005)
        print(f"\nfar end down -> link down in the API after {(time.monotonic() - t0) * 1000:.1f} ms")
        assert [p["up"] for p in get(c.api_port, "/ports") if p["port"] == f"{S}-0"] == [False]
    finally:
        sh("ip", "netns", "exec", NS["a"], "ip", "link", "set", HOST_DEV["a"], "up")
    deadline = time.monotonic() + 5
    while link()["up"] is not True:
        assert time.monotonic() < deadline, "link never came back up"
        time.sleep(0.01)
    assert ping("a", ADDR["b"])


@pytest.mark.emulation
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root for namespaces and OVS")
def test_failing_port_stats_handler_exits_nonzero(lab, plan_file, controllers, tmp_path):
    of_port = _current(controllers).of_port
    assert controllers[-1].stop() == 0
    log = tmp_path / "fault.log"
    c = Controller(plan_file, of_port=of_port, env={"OCALAB_CONTROLLER_FAULT": "port_stats"}, log=log)
    controllers.append(c)
    assert c.proc.wait(timeout=20) == 70
    line = "CONTROLLER FATAL: port_stats: RuntimeError: injected fault (OCALAB_CONTROLLER_FAULT=port_stats)"
    assert line in c.proc.stderr.read()
    assert line in log.read_text()
