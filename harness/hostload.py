"""How busy the machine running the emulation was, second by second, during a scenario's arms.

Every emulated host, relay, switch and appliance shares this machine's CPUs. When they are
saturated, latency and startup figures measure the emulator's contention as well as the network,
so each run records it: `host_cpu.csv` (one row per second: unix_s, busy_frac of all CPUs and
steal_frac, the part of it the hypervisor gave to other guests) and a
summary in manifest.json (`host_cpu`). What is judged is the serve phase: the seconds inside
the viewing sessions (`serve`, and per arm in summary.csv's `cpu_saturated_pct`), since a
busy fill or build does not bias what viewers measured. `saturated` is true when the CPUs were
saturated for more than SATURATED_WARN_SHARE of the serve phase (of the whole run when it had
no sessions); the run and `ocalab report` then print a warning.
"""
from __future__ import annotations

import csv
import threading
import time
from pathlib import Path

from emulation.fidelity import cpu_fracs
from emulation.loaded import inside, merge_windows
from harness.loadedrtt import read_sessions, serve_windows

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


def rows_in(rows: list[dict], windows: list[tuple[float, float]]) -> list[dict]:
    """The samples whose second ends inside one of `windows` (sorted, disjoint) (pure)."""
    return [r for r in rows if inside(float(r["unix_s"]), windows)]


def serve_summary(rows: list[dict], arm_windows: dict[str, list[tuple[float, float]]]) -> dict:
    """cpu_summary of the serve phase: every arm's session windows together (pure)."""
    return cpu_summary(rows_in(rows, merge_windows([w for ws in arm_windows.values() for w in ws])))


def run_summary(rows: list[dict], arm_windows: dict[str, list[tuple[float, float]]]) -> dict:
    """The manifest's `host_cpu`: the whole run's summary, its serve phase's (`serve`) and the
    verdict `saturated` on the serve phase (on the whole run when it had no sessions) (pure)."""
    out = cpu_summary(rows)
    serve = serve_summary(rows, arm_windows)
    if serve["seconds"]:
        out["serve"] = serve
    out["saturated"] = saturated(out)
    return out


def per_arm(rows: list[dict], arm_windows: dict[str, list[tuple[float, float]]]) -> dict[str, dict]:
    """arm -> {cpu_saturated_pct: % of its serve seconds saturated, cpu_saturated: > the
    warning share}; an arm without a sampled second is left out (pure)."""
    out = {}
    for arm, windows in arm_windows.items():
        s = cpu_summary(rows_in(rows, windows))
        if s["seconds"]:
            out[arm] = {"cpu_saturated_pct": round(100 * s["saturated_share"], 1),
                        "cpu_saturated": s["saturated_share"] > SATURATED_WARN_SHARE}
    return out


def judged(summary: dict) -> tuple[dict, str]:
    """The part of a `host_cpu` summary the verdict reads, and its name: the serve phase when
    the run recorded one, else the whole run (a run from before serve phases were kept)."""
    serve = summary.get("serve")
    return (serve, "serve phase") if serve and serve.get("seconds") else (summary, "run")


def saturated(summary: dict) -> bool:
    """Whether the CPUs were saturated for more than SATURATED_WARN_SHARE of the serve phase (pure)."""
    part, _ = judged(summary)
    return part.get("saturated_share", 0.0) > SATURATED_WARN_SHARE


def warning(summary: dict) -> str | None:
    """A one-line warning when the CPUs were saturated for too much of the serve phase, else None."""
    if not saturated(summary):
        return None
    part, name = judged(summary)
    return (f"WARNING: the host CPUs were saturated (>= {SATURATED_FRAC:.0%} busy) for "
            f"{part['saturated_share']:.0%} of the {name}; latency and startup figures include "
            "emulator contention (see host_cpu.csv and summary.csv's cpu_saturated_pct)")


def read_rows(run_dir: Path) -> list[dict]:
    """host_cpu.csv's rows (empty when the folder has none)."""
    path = Path(run_dir) / "host_cpu.csv"
    if not path.exists() or not path.stat().st_size:
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def annotate(run_dir: Path) -> dict | None:
    """Judge a run folder's host_cpu.csv against its sessions table: adds cpu_saturated_pct and
    cpu_saturated to summary.csv's rows by arm and returns run_summary(); None without samples."""
    from harness.rundir import add_arm_columns
    rows = read_rows(run_dir)
    if not rows:
        return None
    windows = serve_windows(read_sessions(run_dir))
    add_arm_columns(Path(run_dir) / "summary.csv", per_arm(rows, windows), ("cpu_saturated_pct", "cpu_saturated"))
    return run_summary(rows, windows)
