"""Network's state before, during and after a failed start, and the TCP connect probe, without
namespaces: the machine-wide lock is a file under tmp_path, leftovers are not cleaned (other runs
may share this machine), and the netem probe answers as on a kernel without sch_netem."""
from __future__ import annotations

import fcntl
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from emulation import linkemu
from emulation.linkemu import EmulationError, Probe
from topologies.catalog import metro

REPO = Path(__file__).resolve().parent.parent
NO_NETEM = Probe(False, "Error: Specified qdisc kind is unknown.")


@pytest.fixture
def no_machine(tmp_path, monkeypatch):
    """The parts of a start that would touch the machine, replaced; returns the lock file."""
    pytest.importorskip("mininet")
    import emulation.build as build
    lock = tmp_path / "network.lock"
    monkeypatch.setattr(build, "LOCK_FILE", lock)
    monkeypatch.setattr(build, "clean_leftovers", lambda log: {})
    monkeypatch.setattr(linkemu, "probe_netem", lambda: NO_NETEM)
    monkeypatch.setattr(linkemu, "probe_ovs_kernel", lambda: Probe(False, "not probed in unit tests"))
    return lock


def lock_is_free(path: Path) -> bool:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


def test_summary_and_stop_work_before_start(no_machine):
    from emulation.build import Network
    net = Network(metro())
    s = net.summary()
    assert s["started"] is False and s["link_backend"] == "" and s["relays"] == 0
    assert s["timings_s"] == {} and s["plan"] == "metro"
    net.stop()  # nothing started: nothing to stop, and no lock taken
    assert net.summary() == s and lock_is_free(no_machine)


def test_netem_on_a_kernel_without_it_raises_emulation_error_and_summary_says_never_started(no_machine):
    from emulation.build import Network, Options
    net = Network(metro(), Options(link_backend="netem", label="pytest-state"))
    with pytest.raises(EmulationError, match="netem was requested but does not work here"):
        with net:
            pass
    s = net.summary()  # what the runner writes into the failed manifest
    assert s["started"] is False and s["link_backend"] == "" and s["relays"] == 0
    assert net.mn is None and net.ledger is None and lock_is_free(no_machine)
    net.stop()  # a second stop is harmless


def test_a_held_lock_raises_emulation_error_and_summary_still_works(no_machine):
    from emulation.build import Network, Options
    fd = os.open(no_machine, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.pwrite(fd, b"pid 1 other", 0)
    try:
        net = Network(metro(), Options(lock_wait_s=0))
        with pytest.raises(EmulationError, match=r"another ocalab network is running \(pid 1 other\)"):
            net.start()
        assert net.summary()["started"] is False
    finally:
        os.close(fd)
    assert lock_is_free(no_machine)


def test_ocalab_run_with_netem_missing_exits_3_naming_netem_and_leaves_a_failed_manifest(
        no_machine, tmp_path, monkeypatch, capsys):
    """The runner's failure path around a real Network: the user sees the EmulationError (exit
    3), not an AttributeError from summary(), and the failed manifest says why."""
    import ocalab.cli as cli
    monkeypatch.setattr(cli, "_need_root", lambda what: None)
    monkeypatch.setattr("emulation.ledger.install_signal_handlers", lambda: None)
    out = tmp_path / "runs"
    rc = cli.main(["run", "placement", "--quick", "--link-backend", "netem", "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 3, err
    assert "ocalab: emulation failed: netem was requested" in err and "AttributeError" not in err
    (run_dir,) = out.glob("placement-*")
    m = json.loads((run_dir / "manifest.json").read_text())
    assert m["status"] == "failed" and m["error"].startswith("EmulationError: netem was requested")
    assert m["network"]["started"] is False and m["network"]["plan"] == "metro"



@pytest.mark.emulation
def test_ocalab_run_with_netem_on_this_kernel_exits_3_when_netem_is_missing(tmp_path, capsys):
    """The same, end to end as root: the real lock, leftover cleaning and netem probe."""
    import signal

    from conftest import emulation_unavailable
    from ocalab.cli import main
    if emulation_unavailable():
        pytest.skip(emulation_unavailable())
    if linkemu.probe_netem().ok:
        pytest.skip("this kernel has netem: the run would succeed")
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:  # `ocalab run` installs its own
        rc = main(["run", "placement", "--quick", "--link-backend", "netem", "--out", str(tmp_path)])
    finally:
        for sig, h in handlers.items():
            signal.signal(sig, h)
    err = capsys.readouterr().err
    assert rc == 3 and "emulation failed: netem was requested" in err, err
    (run_dir,) = tmp_path.glob("placement-*")
    m = json.loads((run_dir / "manifest.json").read_text())
    assert m["status"] == "failed" and "netem" in m["error"] and m["network"]["started"] is False

# ---- the TCP connect probe ----------------------------------------------------------------
@pytest.fixture
def listener():
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(64)  # the kernel completes handshakes into the backlog: no accept needed
        yield srv.getsockname()[1]


def test_connect_probe_module_prints_one_time_per_connect_in_ms(listener):
    r = subprocess.run([sys.executable, "-m", "emulation.connect_probe", "127.0.0.1", str(listener), "4"],
                       capture_output=True, text=True, timeout=30, cwd=REPO)
    assert r.returncode == 0, r.stderr
    times = json.loads(r.stdout)
    assert len(times) == 4 and all(isinstance(t, float) and 0 < t < 1000 for t in times)


def test_connect_ms_runs_the_module_in_the_host_and_reports_a_refused_port(listener):
    from emulation.probes import connect_ms

    class Host:
        def popen(self, argv, **kw):
            return subprocess.Popen(argv, cwd=REPO, **kw)

    class Net:
        def host(self, name):
            assert name == "i1v1"
            return Host()
    assert len(connect_ms(Net(), "i1v1", "127.0.0.1", listener, count=3)) == 3
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    with pytest.raises(RuntimeError, match="ConnectionRefusedError"):
        connect_ms(Net(), "i1v1", "127.0.0.1", closed, count=1)


def test_connect_probe_burst_prints_kernel_rtts_per_round(listener):
    r = subprocess.run([sys.executable, "-m", "emulation.connect_probe", "127.0.0.1", str(listener), "2",
                        "--burst", "16"], capture_output=True, text=True, timeout=30, cwd=REPO)
    assert r.returncode == 0, r.stderr
    rounds = json.loads(r.stdout)
    assert len(rounds) == 2 and all(len(x) == 16 for x in rounds)
    assert all(isinstance(t, float) and 0 < t < 1000 for x in rounds for t in x)
    bad = subprocess.run([sys.executable, "-m", "emulation.connect_probe", "127.0.0.1", str(listener), "0"],
                         capture_output=True, text=True, timeout=30, cwd=REPO)
    assert bad.returncode == 2 and "count must be at least 1" in bad.stderr
