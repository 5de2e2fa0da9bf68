"""emulation.faults without a network: a stand-in Network with the metro plan, a real child
process as a link's relay (signalled by pid), and the netem commands captured, not run."""
from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import pytest

from emulation import faults as faults_mod
from emulation.faults import LinkFaults
from emulation.impair import Impairment, parse_control
from emulation.linkemu import EmulationError
from topologies.catalog import metro

# prints "ready", then one "usr1" line per SIGUSR1 (the handler only records it)
_FAKE_RELAY = """
import signal, sys, time
got = []
signal.signal(signal.SIGUSR1, lambda *_: got.append(1))
print("ready", flush=True)
end = time.monotonic() + 20
while time.monotonic() < end:
    time.sleep(0.01)
    while got:
        got.pop()
        print("usr1", flush=True)
"""


class FakeNode:
    def __init__(self, calls: list) -> None:
        self.calls = calls

    def pexec(self, argv):
        self.calls.append(("node", argv[-1]))
        return "", "", 0


def _net(backend: str, tmp_path, procs=None, calls=None):
    plan = metro()
    calls = calls if calls is not None else []
    link = plan.links[11].name  # i1v1:0-oci1lan:1 (access)
    net = SimpleNamespace(plan=plan, link_backend=backend,
                          relay_control_files={link: tmp_path / "relay-11.control"},
                          relay_procs=lambda: dict(procs or {}),
                          nodes={n.name: FakeNode(calls) for n in plan.nodes})
    return net, link


def test_relay_backend_writes_file_and_signals_the_pid(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", _FAKE_RELAY], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        net, link = _net("relay", tmp_path, procs={})
        net.relay_procs = lambda: {link: proc}
        lf = LinkFaults(net)
        lf.update(link, extra_delay_ms_ab=5.0, extra_delay_ms_ba=5.0)
        assert proc.stdout.readline().strip() == "usr1"
        assert parse_control(net.relay_control_files[link].read_bytes()) == \
            Impairment(extra_delay_ms_ab=5.0, extra_delay_ms_ba=5.0)
        lf.update(link, down=True)
        assert proc.stdout.readline().strip() == "usr1"
        assert lf.current(link) == Impairment(5.0, 5.0, 0.0, 0.0, True)
        lf.clear_all()
        assert proc.stdout.readline().strip() == "usr1"
        assert parse_control(net.relay_control_files[link].read_bytes()) == Impairment()
        assert [e["impairment"]["down"] for e in lf.log] == [False, True, False]
    finally:
        proc.kill()
        proc.wait(5)
    with pytest.raises(EmulationError, match="not running"):
        lf.update(link, down=True)


def test_unknown_link_and_unrelayed_link_are_named(tmp_path):
    net, link = _net("relay", tmp_path, procs={})
    lf = LinkFaults(net)
    with pytest.raises(EmulationError, match="'nosuch:0-link:1'"):
        lf.update("nosuch:0-link:1", down=True)
    other = net.plan.links[0].name
    with pytest.raises(EmulationError, match=f"link {other} has no relay"):
        lf.update(other, down=True)


def test_netem_backend_runs_tc_change_on_both_ends(tmp_path, monkeypatch):
    calls: list = []

    def fake_run(argv, **_):
        calls.append(("root", argv[-1]))
        return subprocess.CompletedProcess(argv, 0, "", "")
    monkeypatch.setattr(faults_mod.subprocess, "run", fake_run)
    net, link = _net("netem", tmp_path, calls=calls)
    LinkFaults(net).update(link, loss_pct_ab=2.0)
    # i1v1 is a host, oci1lan a switch; each end has a data leaf and a measurement lane
    assert [where for where, _ in calls] == ["node", "node", "root", "root"]
    assert calls[0][1].startswith("tc qdisc change dev i1v1-0 parent 1:10 handle 10: netem ")
    assert calls[1][1].startswith("tc qdisc change dev i1v1-0 parent 1:5 handle 5: netem ")
    assert calls[0][1].endswith(" delay 3ms loss 2%") and calls[2][1].endswith(" delay 3ms")
