"""The machine-wide lock that lets one emulated network run at a time.

Node, bridge and interface names come from the plan, so two networks on one machine would
collide. The lock is an flock on LOCK_FILE, which also names its holder for whoever waits.
"""
from __future__ import annotations

import fcntl
import os
import sys
import time
from pathlib import Path

from emulation.linkemu import EmulationError

LOCK_FILE = Path("/run/ocalab/network.lock")


class MachineLock:
    """An exclusive flock on `path`; `acquire` waits up to wait_s for another holder, and
    `release` is safe to call when not held."""

    def __init__(self, path: Path, label: str, wait_s: float) -> None:
        self.path, self.label, self.wait_s = path, label, wait_s
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + self.wait_s
        told = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = os.pread(fd, 64, 0).decode(errors="replace").strip()
                if time.monotonic() > deadline:
                    os.close(fd)
                    raise EmulationError(f"another ocalab network is running ({holder}); "
                                         f"waited {self.wait_s:g} s") from None
                if not told:
                    print(f"ocalab: waiting for another ocalab network to finish ({holder})", file=sys.stderr)
                    told = True
                time.sleep(0.5)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} {self.label}".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
