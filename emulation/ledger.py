"""The ledger of everything a run creates on the machine, and the processes it starts.

Invariants:
- a resource is written to the ledger *before* it is created, so a run killed with SIGKILL at
  any point leaves a ledger that names every leftover;
- a process is recorded with its pid and kernel start time, so `clean` never signals a
  process that merely reused a pid;
- `clean` only touches what some ledger names and what carries the ocalab prefix; it never
  matches processes by name and never removes another program's bridges or namespaces.
Ledgers live in LEDGER_DIR (on tmpfs: a reboot clears them together with what they name).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from topologies.plan import PREFIX

LEDGER_DIR = Path(os.environ.get("OCALAB_LEDGER_DIR", "/run/ocalab/ledger"))


def proc_start_time(pid: int) -> int | None:
    """Kernel start time (clock ticks since boot) of `pid`, or None if it does not exist."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # comm may contain spaces and parentheses: split after the last ')'
    return int(stat.rsplit(")", 1)[1].split()[19])


def alive(pid: int, start_time: int | None) -> bool:
    """True if `pid` runs and is the process started at `start_time` (zombies are not alive)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return fields[0] != "Z" and (start_time is None or int(fields[19]) == start_time)


@dataclass
class Ledger:
    """Append-only record of one run's resources, rewritten atomically on every change."""
    run_id: str
    path: Path
    owner_pid: int = field(default_factory=os.getpid)
    entries: dict = field(default_factory=lambda: {"bridges": [], "root_intfs": [], "netns": [],
                                                   "procs": [], "dirs": []})

    @classmethod
    def create(cls, label: str) -> "Ledger":
        LEDGER_DIR.mkdir(parents=True, exist_ok=True)
        run_id = f"{label}-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
        led = cls(run_id, LEDGER_DIR / f"{run_id}.json")
        led._write()
        return led

    def _write(self) -> None:
        data = {"run_id": self.run_id, "owner_pid": self.owner_pid,
                "owner_start": proc_start_time(self.owner_pid), **self.entries}
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1))
        os.replace(tmp, self.path)

    def add(self, kind: str, value) -> None:
        if kind in ("bridges", "root_intfs", "netns") and not str(value).startswith(PREFIX):
            raise ValueError(f"ledger: {kind} name {value!r} lacks the {PREFIX!r} prefix")
        self.entries[kind].append(value)
        self._write()

    def add_proc(self, pid: int, label: str) -> None:
        self.add("procs", {"pid": pid, "start": proc_start_time(pid), "label": label})

    def close(self) -> None:
        """The run ended cleanly: its ledger is no longer needed."""
        self.path.unlink(missing_ok=True)


class ProcessGroup:
    """Processes started by a run, tracked by handle and stopped in reverse start order."""

    def __init__(self, ledger: Ledger | None) -> None:
        self.ledger = ledger
        self.procs: list[tuple[str, subprocess.Popen]] = []

    def track(self, label: str, proc: subprocess.Popen) -> subprocess.Popen:
        if self.ledger:
            self.ledger.add_proc(proc.pid, label)
        self.procs.append((label, proc))
        return proc

    def start(self, label: str, argv: list[str], node=None, **kw) -> subprocess.Popen:
        """Start argv in the root namespace, or inside Mininet `node`'s namespace."""
        kw.setdefault("stdin", subprocess.DEVNULL)
        proc = node.popen(argv, **kw) if node is not None else subprocess.Popen(argv, **kw)
        return self.track(label, proc)

    def stop_all(self, timeout_s: float = 3.0) -> list[str]:
        """terminate, wait, kill, newest first; returns labels that had to be killed."""
        killed = []
        for label, proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + timeout_s
        for label, proc in reversed(self.procs):
            try:
                proc.wait(max(0.05, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(2)
                killed.append(label)
        self.procs.clear()
        return killed


class Interrupted(BaseException):
    """Raised in the main thread on SIGTERM/SIGHUP so that cleanup `finally` blocks run."""


def install_signal_handlers() -> None:
    def handler(signum, _frame):
        raise Interrupted(f"signal {signal.Signals(signum).name}")
    for s in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, handler)


# ---- clean ---------------------------------------------------------------------------
def _run(argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=20)


def ovs_bridges() -> list[str]:
    r = _run(["ovs-vsctl", "--timeout=5", "list-br"]) if _have("ovs-vsctl") else None
    return r.stdout.split() if r and r.returncode == 0 else []


def root_intfs() -> list[str]:
    r = _run(["ip", "-o", "link", "show"])
    return [line.split(":")[1].strip().split("@")[0] for line in r.stdout.splitlines() if ":" in line]


def named_netns() -> list[str]:
    r = _run(["ip", "netns", "list"])
    return [line.split()[0] for line in r.stdout.splitlines() if line.strip()]


def _have(cmd: str) -> bool:
    from shutil import which
    return which(cmd) is not None


def clean(force: bool = False, log=print) -> dict:
    """Remove every leftover named by a ledger whose owner is gone (or all with force).

    Returns counts of what was removed. Safe to run twice; touches nothing without the prefix.
    """
    removed = {"procs": 0, "bridges": 0, "root_intfs": 0, "netns": 0, "dirs": 0, "ledgers": 0}
    if not LEDGER_DIR.exists():
        return removed
    for path in sorted(LEDGER_DIR.glob("*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            log(f"ocalab clean: skipping unreadable ledger {path}: {e}")
            continue
        if not force and data.get("owner_pid") != os.getpid() and \
                alive(data.get("owner_pid", -1), data.get("owner_start")):
            log(f"ocalab clean: {data['run_id']} is still running (pid {data['owner_pid']}); "
                "left alone (use --force to remove it anyway)")
            continue
        _clean_one(data, removed, log)
        path.unlink(missing_ok=True)
        removed["ledgers"] += 1
    return removed


def _clean_one(data: dict, removed: dict, log) -> None:
    procs = [p for p in data.get("procs", []) if alive(p["pid"], p.get("start"))]
    for p in reversed(procs):
        _signal(p["pid"], signal.SIGTERM)
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and any(alive(p["pid"], p.get("start")) for p in procs):
        time.sleep(0.05)
    for p in procs:
        if alive(p["pid"], p.get("start")):
            _signal(p["pid"], signal.SIGKILL)
        removed["procs"] += 1
    existing = set(ovs_bridges())
    for br in data.get("bridges", []):
        if br.startswith(PREFIX) and br in existing:
            r = _run(["ovs-vsctl", "--timeout=10", "--if-exists", "del-br", br])
            if r.returncode != 0:
                log(f"ocalab clean: could not delete bridge {br}: {r.stderr.strip()}")
            else:
                removed["bridges"] += 1
    present = set(root_intfs())
    for intf in data.get("root_intfs", []):
        if intf.startswith(PREFIX) and intf in present:
            if _run(["ip", "link", "del", intf]).returncode == 0:
                removed["root_intfs"] += 1
    ns_present = set(named_netns())
    for ns in data.get("netns", []):
        if ns.startswith(PREFIX) and ns in ns_present:
            if _run(["ip", "netns", "del", ns]).returncode == 0:
                removed["netns"] += 1
    for d in data.get("dirs", []):
        _remove_scratch(Path(d), removed, log)


def _remove_scratch(path: Path, removed: dict, log) -> None:
    """Remove a scratch folder the run recorded; only real folders named ocalab-* (never a
    link, never a run folder), so a damaged ledger cannot point clean at anything else."""
    if not path.name.startswith("ocalab-") or path.is_symlink() or not path.is_dir():
        return
    try:
        shutil.rmtree(path)
        removed["dirs"] += 1
    except OSError as e:
        log(f"ocalab clean: could not remove {path}: {e}")


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass
