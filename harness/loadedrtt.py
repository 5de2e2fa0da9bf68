"""Loaded RTT of a run: ping every fidelity pair while the scenario plays, and judge each link
class during the serve phase (emulation.loaded holds the pure parts and the tolerance).

A run folder gets loaded_rtt.csv.gz (one row per probe: unix_s, src, dst, dst_addr, classes,
expected_rtt_ms, jitter_ms, rtt_ms, empty when lost) and loaded_rtt_summary.csv (one row per
arm and link class, only samples inside the arm's sessions); its manifest gets `loaded_rtt`
(ok, worst error) and summary.csv gains loaded_rtt_err_ms and loaded_rtt_ok per arm.
`ocalab report` rebuilds the last three from the saved tables.
"""
from __future__ import annotations

import csv
import gzip
import subprocess
from pathlib import Path

from emulation.linkemu import PROBE_TOS
from emulation.loaded import loaded_tolerance_ms, merge_windows, pair_rows_in, parse_ping_log, rtt_by_class

INTERVAL_S = 0.5  # per pair: ~80 probes/s over metro's 41 pairs, nothing next to a video flow
SAMPLES = "loaded_rtt.csv.gz"
SUMMARY = "loaded_rtt_summary.csv"
COLUMNS = ("unix_s", "src", "dst", "dst_addr", "classes", "expected_rtt_ms", "jitter_ms", "rtt_ms")


class Pinger:
    """Context manager: one `ping -D -O` per fidelity pair of `net`, from the pair's source host,
    logging to files in `log_dir`, until exit; then `samples` holds every probe. The probes ride
    each link's measurement lane (TOS PROBE_TOS, emulation.linkemu), so they measure the path and
    the emulator's contention, not the bottleneck queue the video builds. The pings are
    processes of the network's ledger, so `ocalab clean` ends them after a crash."""

    def __init__(self, net, log_dir: Path, interval_s: float = INTERVAL_S):
        from emulation.fidelity import pairs
        from emulation.ledger import ProcessGroup
        self.net, self.log_dir, self.interval_s = net, Path(log_dir), interval_s
        self.pairs = pairs(net.plan)
        self.procs = ProcessGroup(net.ledger)
        self.samples: list[dict] = []

    def _log(self, p) -> Path:
        return self.log_dir / f"{p.src}-{p.dst_addr}.ping"

    def __enter__(self) -> "Pinger":
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for p in self.pairs:
            with self._log(p).open("wb") as out:
                self.procs.start(f"ping:{p.src}-{p.dst_addr}", [
                    "ping", "-D", "-O", "-n", "-Q", str(PROBE_TOS), "-i", str(self.interval_s), "-W", "2",
                    p.dst_addr],
                    node=self.net.host(p.src), stdout=out, stderr=subprocess.STDOUT)
        return self

    def __exit__(self, *exc) -> bool:
        self.procs.stop_all()
        for p in self.pairs:
            for unix_s, rtt in parse_ping_log(self._log(p).read_text(errors="replace")):
                self.samples.append({"unix_s": unix_s, "src": p.src, "dst": p.dst, "dst_addr": p.dst_addr,
                                     "classes": "+".join(p.classes), "expected_rtt_ms": p.expected_rtt_ms,
                                     "jitter_ms": p.jitter_ms, "rtt_ms": rtt})
        return False


def write_samples(run_dir: Path, samples: list[dict]) -> Path:
    path = Path(run_dir) / SAMPLES
    with gzip.open(path, "wt", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        w.writerows(sorted(samples, key=lambda s: s["unix_s"]))
    return path


def read_samples(run_dir: Path) -> list[dict]:
    with gzip.open(Path(run_dir) / SAMPLES, "rt", newline="") as f:
        return [{**r, "rtt_ms": float(r["rtt_ms"]) if r["rtt_ms"] else None} for r in csv.DictReader(f)]


def read_sessions(run_dir: Path) -> list[dict]:
    """The run folder's sessions table as records (empty when it has none)."""
    import pandas as pd
    from harness.rundir import table_path
    path = table_path(Path(run_dir), "sessions")
    return pd.read_csv(path).to_dict("records") if path.exists() and path.stat().st_size else []


def serve_windows(sessions: list[dict]) -> dict[str, list[tuple[float, float]]]:
    """arm -> merged [started_unix, ended_unix] intervals of its sessions (pure)."""
    by_arm: dict[str, list[tuple[float, float]]] = {}
    for s in sessions:
        try:
            t0, t1 = float(s["started_unix"]), float(s["ended_unix"])
        except (KeyError, TypeError, ValueError):  # a session that never started has no interval
            continue
        by_arm.setdefault(str(s.get("arm", "")), []).append((t0, t1))
    return {arm: merge_windows(iv) for arm, iv in by_arm.items()}


def judge(samples: list[dict], sessions: list[dict]) -> list[dict]:
    """One row per (arm, link class) of the samples inside the arm's sessions (pure)."""
    rows = []
    for arm, windows in sorted(serve_windows(sessions).items()):
        for cls, c in sorted(rtt_by_class(pair_rows_in(samples, windows)).items()):
            rows.append({"arm": arm, "classes": cls, **c})
    return rows


def verdict(rows: list[dict]) -> dict:
    """The run's loaded-RTT verdict from judge()'s rows: ok iff every class of every arm is."""
    worst = max((r for r in rows if r["err_max_ms"] is not None), key=lambda r: abs(r["err_max_ms"]),
                default=None)
    return {"ok": bool(rows) and all(r["ok"] for r in rows), "classes": len(rows),
            "worst_err_ms": worst["err_max_ms"] if worst else None,
            "worst": f"{worst['arm']}/{worst['classes']}" if worst else None,
            "off": sorted(f"{r['arm']}/{r['classes']}" for r in rows if not r["ok"])}


def per_arm(rows: list[dict]) -> dict[str, dict]:
    """arm -> {loaded_rtt_err_ms: worst class error, loaded_rtt_ok} (pure)."""
    out: dict[str, dict] = {}
    for r in rows:
        a = out.setdefault(r["arm"], {"loaded_rtt_err_ms": None, "loaded_rtt_ok": True})
        e = r["err_max_ms"]
        if e is not None and (a["loaded_rtt_err_ms"] is None or abs(e) > abs(a["loaded_rtt_err_ms"])):
            a["loaded_rtt_err_ms"] = e
        a["loaded_rtt_ok"] &= bool(r["ok"])
    return out


def line(v: dict) -> str:
    """One line for the terminal: the verdict and the tolerance it used."""
    head = "loaded RTT during the serve phase"
    if not v["classes"]:
        return f"{head}: no samples inside any session"
    tol = loaded_tolerance_ms(0.0)
    if v["ok"]:
        return f"{head}: every link class within max({tol:g} ms, 5%) of the plan (worst {v['worst_err_ms']} ms, {v['worst']})"
    return (f"WARNING: {head} is off the plan on {', '.join(v['off'])} (worst {v['worst_err_ms']} ms); "
            f"latency figures include emulator contention (see {SUMMARY})")


def annotate(run_dir: Path) -> dict | None:
    """Judge a run folder's saved samples against its sessions: writes loaded_rtt_summary.csv,
    adds loaded_rtt_err_ms / loaded_rtt_ok to summary.csv's rows by arm, returns the verdict.
    None when the folder has no samples (a run from before they were taken)."""
    from harness.rundir import add_arm_columns, write_csv
    run_dir = Path(run_dir)
    if not (run_dir / SAMPLES).exists():
        return None
    rows = judge(read_samples(run_dir), read_sessions(run_dir))
    write_csv(run_dir / SUMMARY, rows)
    add_arm_columns(run_dir / "summary.csv", per_arm(rows), ("loaded_rtt_err_ms", "loaded_rtt_ok"))
    return verdict(rows)
