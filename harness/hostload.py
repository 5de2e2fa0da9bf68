"""How busy the machine running the emulation was, second by second, during a scenario's arms.

Every emulated host, relay, switch and appliance shares this machine's CPUs. When they are
saturated, latency and startup figures measure the emulator's contention as well as the network,
so each run records it: `host_cpu.csv` (one row per second: unix_s, busy_frac of all CPUs and
steal_frac, the part of it the hypervisor gave to other guests) and a
summary in manifest.json (`host_cpu`, with `saturated` true when the CPUs were saturated for
more than SATURATED_WARN_SHARE of it); the run and `ocalab report` then print a warning.
"""
from __future__ import annotations

import threading
import time

from emulation.fidelity import cpu_fracs

SATURATED_FRAC = 0.95  # a second with the CPUs at least this busy counts as saturated
SATURATED_WARN_SHARE = 0.05  # more than this share of saturated seconds: the run says so


class CpuSampler:
    """Context manager: a thread samples the CPUs' busy fraction every `interval_s` until exit."""

    def __init__(self, interval_s: float = 1.0):
        self.interval_s = interval_s
        self.rows: list[dict] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="cpu-sampler", daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            busy, steal = cpu_fracs(self.interval_s)
            self.rows.append({"unix_s": round(time.time(), 3), "busy_frac": round(busy, 4),
                              "steal_frac": round(steal, 4)})

    def __enter__(self) -> "CpuSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> bool:
        self._stop.set()
        self._thread.join(self.interval_s + 1.0)
        return False


def cpu_summary(rows: list[dict]) -> dict:
    """mean, p95 and max busy fraction, the share of saturated seconds, and the mean and max
    steal fraction when the rows have it (pure)."""
    xs = sorted(float(r["busy_frac"]) for r in rows)
    if not xs:
        return {"seconds": 0}
    out = {"seconds": len(xs), "mean": round(sum(xs) / len(xs), 3),
           "p95": xs[min(len(xs) - 1, int(0.95 * len(xs)))], "max": xs[-1],
           "saturated_share": round(sum(x >= SATURATED_FRAC for x in xs) / len(xs), 3)}
    steal = [float(r["steal_frac"]) for r in rows if r.get("steal_frac") not in (None, "")]
    if steal:
        out.update(steal_mean=round(sum(steal) / len(steal), 3), steal_max=max(steal))
    return out


def saturated(summary: dict) -> bool:
    """Whether the CPUs were saturated for more than SATURATED_WARN_SHARE of the run (pure)."""
    return summary.get("saturated_share", 0.0) > SATURATED_WARN_SHARE


def warning(summary: dict) -> str | None:
    """A one-line warning when the CPUs were saturated for too much of the run, else None."""
    share = summary.get("saturated_share", 0.0)
    if not saturated(summary):
        return None
    return (f"WARNING: the host CPUs were saturated (>= {SATURATED_FRAC:.0%} busy) for {share:.0%} of "
            "the run; latency and startup figures include emulator contention (see host_cpu.csv)")
