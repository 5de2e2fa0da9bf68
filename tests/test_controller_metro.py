"""The controller in `metro` with the services running (root): steering per ISP, failover on a
link going down and on an OCA process dying, SDN anycast, byte counters against the kernel's,
and a clean flow table after a controller restart. One network for the module; the tests run
in file order and each fails a different ISP's OCA (i1: link, i2: process, i3: anycast).

Measured figures are printed (run with -s); the 1 s exclusion deadlines are the issue's.
"""
from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import emulation_unavailable

pytestmark = pytest.mark.emulation

EXCLUSION_DEADLINE_S = 1.0
TITLE = "t0001"
ISPS = (1, 2, 3)

# Runs in a viewer: log in, then fetch manifests over one keep-alive connection until NAME is
# absent from PATHWAY-PRIORITY (or LIMIT_S passes); one JSON line per manifest.
MANIFEST_POLLER = r"""
import http.client, json, sys, time
host, port, title, name, limit_s = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], float(sys.argv[5])
c = http.client.HTTPConnection(host, port, timeout=5)
c.request("POST", "/login", json.dumps({"account": "ctltest"}), {"Content-Type": "application/json"})
tok = json.loads(c.getresponse().read())["account_token"]
end = None
while True:
    t_send = time.time()
    c.request("GET", f"/play/{title}?segments=1", headers={"Authorization": "Bearer " + tok})
    doc = json.loads(c.getresponse().read())["steering"]
    t_recv = time.time()
    ranked = doc["PATHWAY-PRIORITY"]
    print(json.dumps({"t_send": t_send, "t_recv": t_recv, "ranked": ranked,
                      "policy": doc["locations"][0]["reason"].get("policy")}), flush=True)
    if name not in ranked or (end is not None and time.time() > end):
        break
    if end is None:
        end = time.time() + limit_s
    time.sleep(0.02)
"""

# Runs in a viewer: fetch URL with a fresh TCP connection each time, for LIMIT_S or until
# STOP_AFTER_OK successes (0: no such stop); one JSON line per attempt.
ANYCAST_FETCHER = r"""
import json, sys, time, urllib.request
url, limit_s, stop_after_ok = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
end, oks = time.time() + limit_s, 0
while time.time() < end and (stop_after_ok == 0 or oks < stop_after_ok):
    t = time.time()
    try:
        with urllib.request.urlopen(url, timeout=0.5) as r:
            n = len(r.read())
        oks += 1
        rec = {"t": t, "t_done": time.time(), "ok": True, "status": r.status, "bytes": n}
    except Exception as e:
        rec = {"t": t, "t_done": time.time(), "ok": False, "error": f"{type(e).__name__}: {e}"[:120]}
    print(json.dumps(rec), flush=True)
    time.sleep(0.02)
"""


@dataclass
class Env:
    net: object
    svc: object
    fresh_flows: dict
    run_dir: Path


def dump_flows(bridge: str) -> list[str]:
    r = subprocess.run(["ovs-ofctl", "-O", "OpenFlow13", "dump-flows", bridge, "--no-stats"],
                       capture_output=True, text=True, timeout=20, check=True)
    return sorted(ln.strip() for ln in r.stdout.splitlines() if ln.strip() and "reply" not in ln)


def all_flows(net) -> dict[str, list[str]]:
    return {n.name: dump_flows(n.name) for n in net.plan.nodes_of(kind="switch")}


def api(net, path: str):
    with urllib.request.urlopen(net.api_url + path, timeout=5) as r:
        return json.loads(r.read())


def rank_names(net, viewer_ip: str, title: str | None = None) -> list[str]:
    """Ranked names; without a title, so content misses (titles cached meanwhile) play no part."""
    q = f"/rank?viewer={viewer_ip}" + (f"&title={title}" if title else "")
    return [loc["name"] for loc in api(net, q)["locations"]]


def viewer_ip(k: int) -> str:
    return f"198.18.{k}.10"


def proc_of(group, label: str) -> subprocess.Popen:
    """The newest process named `label` in a emulation.ledger.ProcessGroup."""
    return [p for lbl, p in group.procs if lbl == label][-1]


def run_in(net, node: str, argv: list[str], timeout_s: float = 30) -> str:
    p = net.host(node).popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = p.communicate(timeout=timeout_s)
    except BaseException:
        p.kill()
        p.wait(5)
        raise
    assert p.returncode == 0, f"{argv[:3]} in {node} exited {p.returncode}: {err.decode()[-800:]}"
    return out.decode()


def wait_for(pred, timeout_s: float, what: str, step_s: float = 0.005):
    """Poll pred() until truthy; returns (value, seconds waited)."""
    t0 = time.monotonic()
    while True:
        v = pred()
        if v:
            return v, time.monotonic() - t0
        if time.monotonic() - t0 > timeout_s:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(step_s)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    reason = emulation_unavailable()
    if reason:
        pytest.skip(reason)
    from harness.services import ServiceOptions, Services
    from emulation.build import Network, Options
    from topologies.catalog import metro

    net = Network(metro(), Options(verify=False, label="ctltest"))
    net.start()
    svc = None
    try:
        fresh = all_flows(net)
        run_dir = tmp_path_factory.mktemp("ctlmetro")
        svc = Services(net, run_dir, ServiceOptions(
            arm="embedded", catalog={"seed": 1, "n_titles": 20, "duration_s": 40}, capacity_mb=200,
            miss="proxy"))  # empty stores that pull through: these tests are about steering
        svc.start()
        wait_for(lambda: [o for o in api(net, "/ocas")["ocas"] if o["status"] == "ok"] and all(
            o["status"] == "ok" for o in api(net, "/ocas")["ocas"]), 20, "every OCA probed ok")
        yield Env(net, svc, fresh, run_dir)
    finally:
        if svc is not None:  # removes the OCAs' scratch folder (stores, token key)
            svc.stop()
        net.stop()


def test_ranking_per_isp_matches_plan_and_reaches_manifests(env):
    net = env.net
    assert net.mgmt_url == f"http://198.19.255.1:{net.api_url.rsplit(':', 1)[1]}"
    assert len(api(net, "/ocas")["ocas"]) == 4
    for k in ISPS:
        want = [f"i{k}oca1", "nfxoca1", "origin"]
        body = api(net, f"/rank?viewer={viewer_ip(k)}&title={TITLE}")
        assert [loc["name"] for loc in body["locations"]] == want and body["excluded"] == []
        hops = [loc["reason"]["hops"] for loc in body["locations"]]
        assert hops == sorted(hops) and hops[0] == 1, hops  # own OCA one hop away
        # the control plane asks the controller for every manifest (reason policy "nearest")
        out = run_in(net, f"i{k}v1", [sys.executable, "-c", MANIFEST_POLLER, "198.19.10.10", "8000",
                                      TITLE, "none-absent", "0"])
        doc = json.loads(out.splitlines()[0])
        assert doc["ranked"] == want and doc["policy"] == "nearest", doc


def test_oca_link_down_changes_ranking_within_deadline(env):
    net, oca, intf = env.net, env.net.host("i1oca1"), "i1oca1-0"
    assert rank_names(net, viewer_ip(1))[0] == "i1oca1"
    t0 = time.monotonic()
    oca.cmd(f"ip link set {intf} down")
    try:
        _, waited = wait_for(lambda: "i1oca1" not in rank_names(net, viewer_ip(1)), 5, "exclusion")
        print(f"\nlink down -> i1oca1 excluded from /rank after {waited * 1000:.1f} ms")
        assert waited < EXCLUSION_DEADLINE_S
        link = next(r for r in api(net, "/links") if r["name"] == "i1oca1:0-oci1lan:3")
        assert link["up"] is False
        assert rank_names(net, viewer_ip(1)) == ["nfxoca1", "origin"]
        assert rank_names(net, viewer_ip(2))[0] == "i2oca1"  # other ISPs unaffected
    finally:
        # an administratively down interface loses its routes: put the plan's back
        routes = "; ".join(f"ip route replace {r.dst} via {r.via}" for r in net.plan.routes if r.node == "i1oca1")
        oca.cmd(f"ip link set {intf} up; {routes}")
    _, back = wait_for(lambda: rank_names(net, viewer_ip(1))[0] == "i1oca1" and next(
        o for o in api(net, "/ocas")["ocas"] if o["name"] == "i1oca1")["probe"]["ok"], 10, "recovery")
    print(f"link up -> i1oca1 first again (and probed ok) after {back * 1000:.1f} ms")


def test_oca_process_death_leaves_next_manifest_within_deadline(env):
    net, svc = env.net, env.svc
    poller = net.host("i2v1").popen([sys.executable, "-c", MANIFEST_POLLER, "198.19.10.10", "8000",
                                     TITLE, "i2oca1", "10"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        first = json.loads(poller.stdout.readline())
        assert first["ranked"][0] == "i2oca1", first
        time.sleep(0.3)
        t_kill = time.time()
        proc_of(svc.procs, "i2oca1").send_signal(signal.SIGKILL)
        _, waited = wait_for(lambda: "i2oca1" not in rank_names(net, viewer_ip(2)), 5, "exclusion", 0.002)
        out, err = poller.communicate(timeout=20)
    finally:
        if poller.poll() is None:
            poller.kill()
            poller.wait(5)
    last = json.loads(out.splitlines()[-1])
    assert last["ranked"] == ["nfxoca1", "origin"], (last, err.decode()[-500:])
    prev = [json.loads(ln) for ln in out.splitlines()[:-1]]
    bound = last["t_recv"] - t_kill
    print(f"\nOCA killed -> excluded from /rank after {waited * 1000:.1f} ms; first manifest without "
          f"it received {bound * 1000:.1f} ms after the kill (previous one sent "
          f"{(prev[-1]['t_send'] - t_kill) * 1000 if prev else float('nan'):.1f} ms after)")
    assert waited < EXCLUSION_DEADLINE_S and bound < EXCLUSION_DEADLINE_S
    ocas = {o["name"]: o for o in api(net, "/ocas")["ocas"]}
    assert ocas["i2oca1"]["status"] == "unreachable" and ocas["i3oca1"]["status"] == "ok", ocas


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()] if path.exists() else []


def test_anycast_serves_from_embedded_oca_then_fails_over(env):
    from appliances import tokens
    net, svc = env.net, env.svc
    key = tokens.load_key(svc.key_file)
    query = tokens.sign(key, f"/v/{TITLE}/", "198.18.3.0/24", int(time.time()) + 600)
    url = f"http://198.19.254.1:8080/v/{TITLE}/235/0?{query}"
    out = run_in(net, "i3v1", [sys.executable, "-c", ANYCAST_FETCHER, url, "10", "1"])
    rec = json.loads(out.splitlines()[-1])
    assert rec["ok"] and rec["status"] == 200 and rec["bytes"] > 0, out
    recent = api(net, "/anycast")["recent"]
    assert recent[-1]["viewer"] == viewer_ip(3) and recent[-1]["location"] == "i3oca1", recent[-3:]
    log = read_jsonl(svc.logs / "i3oca1.access.jsonl")
    assert any(TITLE in json.dumps(r) and viewer_ip(3) in json.dumps(r) for r in log), log[-3:]
    # warm the next location, so the failover figure is about steering, not a cache fill
    run_in(net, "i3v1", [sys.executable, "-c", ANYCAST_FETCHER, url.replace("198.19.254.1", "198.19.1.10"),
                         "10", "1"])
    fetcher = net.host("i3v1").popen([sys.executable, "-c", ANYCAST_FETCHER, url, "5", "0"],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        head = fetcher.stdout.readline().decode()  # fetching is under way before the kill
        assert json.loads(head)["ok"], head
        t_kill = time.time()
        proc_of(svc.procs, "i3oca1").send_signal(signal.SIGKILL)
        out, err = fetcher.communicate(timeout=30)
        out = head.encode() + out
    finally:
        if fetcher.poll() is None:
            fetcher.kill()
            fetcher.wait(5)
    recs = [json.loads(ln) for ln in out.splitlines()]
    for r in recs:
        if -0.3 < r["t"] - t_kill < 1.0:
            print(f"  attempt at {(r['t'] - t_kill) * 1e3:+.0f} ms, done {(r['t_done'] - t_kill) * 1e3:+.0f} ms: "
                  f"{'ok' if r['ok'] else r['error']}")
    after = [r for r in recs if r["t"] >= t_kill]
    first_ok = next((r for r in after if r["ok"]), None)
    assert first_ok is not None, f"no fetch succeeded in the 5 s after the kill: {after[-3:]}"
    failed = [r for r in after if not r["ok"]]
    print(f"\nanycast: OCA killed -> first new connection served elsewhere started "
          f"{(first_ok['t'] - t_kill) * 1000:.1f} ms after the kill, done after "
          f"{(first_ok['t_done'] - t_kill) * 1000:.1f} ms; {len(failed)} failed attempts in between")
    assert first_ok["t"] - t_kill < EXCLUSION_DEADLINE_S  # the new connection was steered elsewhere
    recent = [c for c in api(net, "/anycast")["recent"] if c["viewer"] == viewer_ip(3)]
    assert recent[-1]["location"] == "nfxoca1", recent[-3:]
    log = read_jsonl(svc.logs / "nfxoca1.access.jsonl")
    assert any(TITLE in json.dumps(r) and viewer_ip(3) in json.dumps(r) for r in log), log[-3:]


# Runs in a viewer: log in, get a manifest, fetch segment 0 at 235 kbps from the first location.
MANIFEST_FETCH = r"""
import json, sys, urllib.request
ctl, title = sys.argv[1], sys.argv[2]
req = urllib.request.Request(ctl + "/login", data=json.dumps({"account": "ctltest"}).encode(),
                             headers={"Content-Type": "application/json"})
tok = json.loads(urllib.request.urlopen(req, timeout=5).read())["account_token"]
req = urllib.request.Request(f"{ctl}/play/{title}?segments=1", headers={"Authorization": "Bearer " + tok})
loc = json.loads(urllib.request.urlopen(req, timeout=5).read())["steering"]["locations"][0]
with urllib.request.urlopen(loc["base_url"] + "235/0?" + loc["query"], timeout=5) as r:
    print(json.dumps({"location": loc, "status": r.status, "bytes": len(r.read())}))
"""


def test_control_plane_in_anycast_mode_hands_out_the_anycast_address(env):
    net, svc = env.net, env.svc
    ctl_ip = net.plan.primary_ip("ctl")
    svc._start("control-anycast", "ctl", [
        "appliances.control", "--listen", f"{ctl_ip}:8001", "--deployment", str(svc.logs.parent / "deployment.json"),
        "--token-key", str(svc.key_file), "--steering", f"{net.mgmt_url}/anycast", "--warm-titles", "0"])
    before = api(net, "/anycast")["counts"].get("to:i1oca1", 0)
    out = json.loads(run_in(net, "i1v1", [sys.executable, "-c", MANIFEST_FETCH, f"http://{ctl_ip}:8001", TITLE]))
    loc = out["location"]
    assert loc["pathway"] == "anycast" and loc["base_url"].startswith("http://198.19.254.1:8080/")
    assert loc["tier"] == "embedded" and loc["reason"]["now_choice"] == "i1oca1"
    assert out["status"] == 200 and out["bytes"] > 0
    assert api(net, "/anycast")["counts"]["to:i1oca1"] == before + 1  # served by its embedded OCA


def test_port_byte_counters_agree_with_kernel(env):
    net = env.net
    name, host, intf = "origin:0-occld:2", net.host("origin"), "origin-0"
    addr = net.plan.primary_ip("origin")

    def kernel() -> dict:
        text = host.cmd(f"cat /sys/class/net/{intf}/statistics/rx_bytes /sys/class/net/{intf}/statistics/tx_bytes")
        rx, tx = map(int, text.split())
        return {"rx": rx, "tx": tx}

    def link_row() -> dict:
        return next(r for r in api(net, "/links") if r["name"] == name)

    def settled() -> tuple[dict, dict]:
        t = time.time()
        wait_for(lambda: (link_row()["updated_unix_s"] or 0) > t + 0.05, 5, "a fresh port-stats sample", 0.05)
        return link_row(), kernel()

    srv = host.popen(["iperf3", "-s", "-1", "-B", addr, "-p", "5202"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        time.sleep(0.5)
        row0, k0 = settled()
        out = run_in(net, "cldr", ["iperf3", "-c", addr, "-p", "5202", "-n", "200M", "-J"], timeout_s=120)
        srv.wait(10)
    finally:
        if srv.poll() is None:
            srv.terminate()
            srv.wait(5)
    time.sleep(0.3)
    row1, k1 = settled()
    moved = json.loads(out[out.index("{"):])["end"]["sum_received"]["bytes"]
    # the switch port's tx is what the origin's interface received, and vice versa
    d_api, d_kern = row1["tx_bytes"] - row0["tx_bytes"], k1["rx"] - k0["rx"]
    d_api_r, d_kern_r = row1["rx_bytes"] - row0["rx_bytes"], k1["tx"] - k0["tx"]
    err, err_r = abs(d_api - d_kern) / d_kern, abs(d_api_r - d_kern_r) / max(d_kern_r, 1)
    print(f"\ncounters over {moved / 1e6:.0f} MB of iperf3 payload: port stats {d_api} B vs kernel "
          f"{d_kern} B toward origin ({err * 100:.4f}% apart); reverse {d_api_r} vs {d_kern_r} B "
          f"({err_r * 100:.4f}%)")
    assert d_kern >= 100e6 and moved >= 100e6
    assert err < 0.01 and err_r < 0.01
    health = api(net, "/health")  # no OpenFlow error so far (link failures, anycast rules, ...)
    assert health["ok"] and health["errors"] == [], health


def test_controller_restart_leaves_fresh_flow_tables(env):
    from emulation.build import read_ready
    net = env.net
    old = proc_of(net.procs, "controller")
    old.terminate()
    assert old.wait(10) == 0
    new = net.procs.start("controller", net.controller_argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    read_ready(new, "controller", 30)
    n = len(net.plan.nodes_of(kind="switch"))
    _, waited = wait_for(lambda: api(net, "/health")["switches_ready"] == n, 30, "switches ready", 0.1)
    print(f"\nrestarted controller programmed all {n} switches after {waited:.1f} s")
    after = all_flows(net)
    assert after == env.fresh_flows
    assert any("0xc11" in ln for ln in after["oci1lan"])  # the anycast punt rule is there
    # steering resumes once the prober's next push arrives
    _, waited = wait_for(lambda: rank_names(net, viewer_ip(1))[:1] == ["i1oca1"], 5, "steering after restart", 0.05)
    print(f"steering back {waited:.2f} s after the switches were ready")
    health = api(net, "/health")
    assert health["ok"] and health["errors"] == [], health
