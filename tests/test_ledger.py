"""Ledger, ProcessGroup and clean() on real processes (no root; ledgers in a tmp dir).

Invariants: ProcessGroup stops its children newest first, terminate then kill; the ledger
refuses system names without the prefix; pid reuse is detected by kernel start time; clean()
removes what a dead run's ledger names, leaves live runs and other processes alone, and is
idempotent.
"""
from __future__ import annotations

import json
import os
import subprocess
import threading
import time

import pytest

from emulation import ledger as L
from emulation.ledger import Ledger, ProcessGroup, alive, clean, proc_start_time


@pytest.fixture
def ledger_dir(tmp_path, monkeypatch):
    d = tmp_path / "ledger"
    monkeypatch.setattr(L, "LEDGER_DIR", d)
    return d


@pytest.fixture
def procs():
    """Child processes a test starts; reaped by a thread as soon as they exit; killed at teardown."""
    started: list[subprocess.Popen] = []

    def start(argv: list[str], cls=subprocess.Popen) -> subprocess.Popen:
        p = cls(argv, stdin=subprocess.DEVNULL)
        started.append(p)
        return p

    def reap_in_background(p: subprocess.Popen) -> None:
        threading.Thread(target=p.wait, daemon=True).start()

    start.reap_in_background = reap_in_background
    yield start
    for p in started:
        if p.poll() is None:
            p.kill()
            p.wait(5)


def wait_gone(pid: int, start: int | None, timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not alive(pid, start):
            return True
        time.sleep(0.02)
    return False


class RecordingPopen(subprocess.Popen):
    """A real Popen that records the order of terminate/kill calls."""
    calls: list[tuple[str, int]] = []

    def terminate(self):
        RecordingPopen.calls.append(("terminate", self.pid))
        super().terminate()

    def kill(self):
        RecordingPopen.calls.append(("kill", self.pid))
        super().kill()


STUBBORN = ["sh", "-c", 'trap "" TERM; exec sleep 60']  # exec keeps SIGTERM ignored


# ---- ProcessGroup ---------------------------------------------------------------------------
def test_process_group_stops_in_reverse_order_and_kills_the_stubborn(procs):
    RecordingPopen.calls = []
    group = ProcessGroup(None)
    first = group.track("first", procs(["sleep", "60"], RecordingPopen))
    stubborn = group.track("stubborn", procs(STUBBORN, RecordingPopen))
    last = group.track("last", procs(["sleep", "60"], RecordingPopen))
    time.sleep(0.2)  # let sh install the trap and exec
    killed = group.stop_all(timeout_s=1.0)
    assert killed == ["stubborn"]
    terms = [pid for what, pid in RecordingPopen.calls if what == "terminate"]
    assert terms == [last.pid, stubborn.pid, first.pid]
    assert ("kill", stubborn.pid) in RecordingPopen.calls
    assert ("kill", first.pid) not in RecordingPopen.calls
    assert first.returncode == -15 and last.returncode == -15 and stubborn.returncode == -9
    assert group.procs == []
    assert group.stop_all() == []  # a second stop is harmless


def test_process_group_records_procs_in_ledger(ledger_dir, procs):
    led = Ledger.create("t")
    group = ProcessGroup(led)
    p = group.start("sleeper", ["sleep", "60"])
    data = json.loads(led.path.read_text())
    assert data["procs"] == [{"pid": p.pid, "start": proc_start_time(p.pid), "label": "sleeper"}]
    assert data["owner_pid"] == os.getpid() and data["owner_start"] == proc_start_time(os.getpid())
    group.stop_all()
    assert p.returncode is not None
    led.close()
    assert not led.path.exists()


# ---- Ledger ---------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["bridges", "root_intfs", "netns"])
def test_ledger_refuses_names_without_prefix(ledger_dir, kind):
    led = Ledger.create("t")
    with pytest.raises(ValueError, match="prefix"):
        led.add(kind, "br0")
    led.add(kind, "octest0")
    assert json.loads(led.path.read_text())[kind] == ["octest0"]
    led.close()


def test_ledger_is_written_on_create(ledger_dir):
    led = Ledger.create("lbl")
    assert led.path.parent == ledger_dir and led.path.exists()
    assert led.run_id.startswith("lbl-") and led.run_id.endswith(f"-{os.getpid()}")
    assert not list(ledger_dir.glob("*.tmp"))
    led.close()


# ---- pid reuse guard --------------------------------------------------------------------------
def test_proc_start_time_and_alive_guard_pid_reuse(procs):
    p = procs(["sleep", "60"])
    st = proc_start_time(p.pid)
    assert isinstance(st, int) and st >= proc_start_time(os.getpid())
    assert alive(p.pid, st) and alive(p.pid, None)
    assert not alive(p.pid, st + 1)  # same pid, different process start: not ours
    p.kill()
    p.wait()
    assert proc_start_time(p.pid) is None and not alive(p.pid, st)


def test_proc_start_time_with_parentheses_in_comm(tmp_path, procs):
    odd = tmp_path / "a) (b c)"
    odd.symlink_to("/bin/sleep")
    p = procs([str(odd), "60"])
    time.sleep(0.1)
    with open(f"/proc/{p.pid}/stat") as f:
        assert ") (b" in f.read()
    ticks_now = float(open("/proc/uptime").read().split()[0]) * os.sysconf("SC_CLK_TCK")
    st = proc_start_time(p.pid)
    assert proc_start_time(os.getpid()) <= st <= ticks_now + 1


# ---- clean ----------------------------------------------------------------------------------
def dead_owner(procs) -> tuple[int, int]:
    p = procs(["true"])
    st = proc_start_time(p.pid)
    p.wait()
    return p.pid, st


def write_ledger(d, name: str, owner: tuple[int, int | None], procs_: list[dict], **extra) -> None:
    d.mkdir(parents=True, exist_ok=True)
    data = {"run_id": name, "owner_pid": owner[0], "owner_start": owner[1], "bridges": [],
            "root_intfs": [], "netns": [], "procs": procs_, "dirs": [], **extra}
    (d / f"{name}.json").write_text(json.dumps(data))


def test_clean_removes_procs_of_a_dead_run_and_is_idempotent(ledger_dir, procs):
    victim = procs(["sleep", "60"])
    stubborn = procs(STUBBORN)
    for p in (victim, stubborn):
        procs.reap_in_background(p)
    time.sleep(0.2)
    bystander = procs(["sleep", "60"])
    entries = [{"pid": p.pid, "start": proc_start_time(p.pid), "label": "x"} for p in (victim, stubborn)]
    entries.append({"pid": bystander.pid, "start": proc_start_time(bystander.pid) + 7, "label": "reused"})
    write_ledger(ledger_dir, "dead-run", dead_owner(procs), entries,
                 bridges=["ocnosuchbr9"], netns=["ocnosuchns9"], root_intfs=["ocnosuchif9"])
    logs: list[str] = []
    removed = clean(log=logs.append)
    assert removed["ledgers"] == 1 and removed["procs"] == 2
    assert removed["bridges"] == removed["netns"] == removed["root_intfs"] == 0
    assert wait_gone(victim.pid, entries[0]["start"]) and wait_gone(stubborn.pid, entries[1]["start"])
    assert bystander.poll() is None, "clean signalled a process whose start time did not match"
    assert not list(ledger_dir.glob("*.json"))
    assert clean(log=logs.append) == {"procs": 0, "bridges": 0, "root_intfs": 0, "netns": 0,
                                      "dirs": 0, "ledgers": 0}


def test_clean_leaves_a_live_run_alone_unless_forced(ledger_dir, procs):
    owner = procs(["sleep", "60"])
    procs.reap_in_background(owner)
    child = procs(["sleep", "60"])
    procs.reap_in_background(child)
    entry = {"pid": child.pid, "start": proc_start_time(child.pid), "label": "child"}
    write_ledger(ledger_dir, "live-run", (owner.pid, proc_start_time(owner.pid)), [entry])
    logs: list[str] = []
    assert clean(log=logs.append)["ledgers"] == 0
    assert any("still running" in line for line in logs)
    assert alive(child.pid, entry["start"]) and (ledger_dir / "live-run.json").exists()
    removed = clean(force=True, log=logs.append)
    assert removed["ledgers"] == 1 and removed["procs"] == 1
    assert wait_gone(child.pid, entry["start"])
    assert alive(owner.pid, proc_start_time(owner.pid))  # the owner is not in its own ledger


def test_clean_skips_unreadable_ledgers(ledger_dir):
    ledger_dir.mkdir(parents=True)
    (ledger_dir / "broken.json").write_text("{not json")
    logs: list[str] = []
    assert clean(log=logs.append)["ledgers"] == 0
    assert any("broken.json" in line for line in logs)
    assert (ledger_dir / "broken.json").exists()


def test_clean_without_ledger_dir(ledger_dir):
    assert not ledger_dir.exists()
    assert sum(clean(log=lambda *_: None).values()) == 0


def test_clean_removes_recorded_scratch_folders_and_nothing_else(ledger_dir, procs, tmp_path):
    scratch = tmp_path / "ocalab-services-x1"
    (scratch / "store" / "t0001").mkdir(parents=True)
    (scratch / "store" / "t0001" / "seg").write_bytes(b"x" * 10)
    run_folder = tmp_path / "placement-1"  # not named ocalab-*: a damaged ledger must not remove it
    run_folder.mkdir()
    link = tmp_path / "ocalab-link"
    link.symlink_to(run_folder)
    write_ledger(ledger_dir, "dead-run", dead_owner(procs), [],
                 dirs=[str(scratch), str(run_folder), str(link), str(tmp_path / "ocalab-gone")])
    removed = clean(log=lambda *_: None)
    assert removed["dirs"] == 1 and not scratch.exists()
    assert run_folder.is_dir() and link.is_symlink()
