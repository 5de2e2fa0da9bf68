"""`ocalab clean` after a run killed with SIGKILL (root).

A child process builds metro and is SIGKILLed; `ocalab clean` must then remove every bridge,
root interface, netns and process its ledger names, leave decoys (with and without the prefix,
not in any ledger) alone, and succeed a second time. While cleaning and checking, this test holds
build.py's machine-wide network lock so that no other metro (same names) can start meanwhile.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from conftest import controller_works, emulation_unavailable
from topologies.catalog import metro
from emulation.ledger import LEDGER_DIR, alive, named_netns, ovs_bridges, root_intfs
from emulation.machinelock import LOCK_FILE, MachineLock

pytestmark = pytest.mark.emulation

OCALAB = Path(sys.executable).parent / "ocalab"

CHILD = textwrap.dedent("""
    import sys, time
    from emulation.build import Network, Options
    from topologies.catalog import metro
    net = Network(metro(), Options(controller={controller}, verify=False, label="pytest-clean",
                                   lock_wait_s=150))
    net.start()
    print("UP", net.ledger.path, flush=True)
    time.sleep(600)
""")


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    if check and r.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} failed: {r.stderr.strip()}")
    return r


def gone(pid: int, start: int | None) -> bool:
    """Not running: absent, a different process (pid reused), or a zombie awaiting its reaper."""
    if not alive(pid, start):
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


@pytest.fixture
def decoys():
    if emulation_unavailable():
        pytest.skip(emulation_unavailable())
    pid = os.getpid()
    bridges = [f"decoybr{pid}", f"ocdcy{pid}"]
    netns = [f"decoyns{pid}", f"ocdcyns{pid}"]
    try:
        for br in bridges:  # netdev: the kernel datapath may be missing
            sh("ovs-vsctl", "--timeout=10", "add-br", br, "--", "set", "bridge", br,
               "datapath_type=netdev")
        for ns in netns:
            sh("ip", "netns", "add", ns)
        yield bridges, netns
    finally:
        for br in bridges:
            sh("ovs-vsctl", "--timeout=10", "--if-exists", "del-br", br, check=False)
        for ns in netns:
            sh("ip", "netns", "del", ns, check=False)


def start_and_kill_a_run() -> dict:
    """Build metro in a child, read its ledger once it is up, SIGKILL it; returns the ledger."""
    code = CHILD.format(controller=controller_works())
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, cwd=str(Path(__file__).parent.parent))
    try:
        line = ""
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and child.poll() is None:
            line = child.stdout.readline()
            if line.startswith("UP"):
                break
        assert line.startswith("UP"), f"child did not come up: {child.stderr.read()[-3000:]}"
        ledger_path = Path(line.split(None, 1)[1].strip())
        assert ledger_path.parent == LEDGER_DIR and ledger_path.exists()
        data = json.loads(ledger_path.read_text())
        assert data["owner_pid"] == child.pid
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(10)
        child.stdout.close()
        child.stderr.close()
    assert child.returncode == -signal.SIGKILL
    data["_path"] = str(ledger_path)
    return data


def test_clean_after_sigkill(decoys):
    decoy_bridges, decoy_netns = decoys
    plan = metro()
    switches = {n.name for n in plan.nodes_of(kind="switch")}
    switch_ports = {e.intf for lk in plan.links for e in (lk.a, lk.b) if e.node in switches}

    led = start_and_kill_a_run()
    lock = MachineLock(LOCK_FILE, "pytest-clean-check", wait_s=300)
    lock.acquire()
    try:
        # the ledger names what the run made, and it is still there after SIGKILL
        assert set(led["bridges"]) == switches
        assert switch_ports <= set(led["root_intfs"])
        labels = [p["label"] for p in led["procs"]]
        assert any(lb.startswith("relay:") for lb in labels)
        assert ("controller" in labels) == controller_works()
        assert switches <= set(ovs_bridges())
        live = [p for p in led["procs"] if not gone(p["pid"], p.get("start"))]
        assert live, "a SIGKILLed run should leave processes behind for clean to stop"

        r = subprocess.run([str(OCALAB), "clean"], capture_output=True, text=True, timeout=120)
        print(r.stdout, r.stderr)
        assert r.returncode == 0, r.stderr
        assert not Path(led["_path"]).exists()

        bridges, intfs, netns = set(ovs_bridges()), set(root_intfs()), set(named_netns())
        assert not set(led["bridges"]) & bridges
        assert not set(led["root_intfs"]) & intfs
        assert not set(led["netns"]) & netns
        left = [p for p in led["procs"] if not gone(p["pid"], p.get("start"))]
        assert not left, f"processes of the killed run still running: {left}"
        # names the plan implies, whether or not the ledger knew them (we hold the lock,
        # so no other metro can own them now)
        assert not switches & bridges and not switch_ports & intfs and "ocmgmt0" not in intfs
        # decoys outside any ledger are untouched, with or without the prefix
        assert set(decoy_bridges) <= bridges and set(decoy_netns) <= netns

        r2 = subprocess.run([str(OCALAB), "clean"], capture_output=True, text=True, timeout=120)
        assert r2.returncode == 0, r2.stderr
        assert set(decoy_bridges) <= set(ovs_bridges()) and set(decoy_netns) <= set(named_netns())
    finally:
        lock.release()
