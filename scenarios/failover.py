"""Scenario `failover`: viewers of one ISP play while their embedded OCA is SIGKILLed, later the
IXP OCA too. Two arms on one verified network, each with fresh services: `manifest` (the control
plane ranks OCA URLs; the player falls back along the manifest) and `anycast` (one anycast
address; the SDN controller steers every new connection).

Saved tidy tables (every row has `arm`): chunks.csv (per-viewer timeline: time, server, tier,
kbps, buffer_s, rebuffer_s, fallback; `pathway` is what the player asked, `server` who really
sent the bytes, resolved for anycast from the OCA and origin access logs), access.csv (segment
requests in the access logs), events.csv (kills), phases.csv (kernel byte counters per link class
per phase: pre, after each kill), sessions.csv. `summarize(run_dir)` writes summary.csv and
failover.png from them (no root).
"""
from __future__ import annotations

import signal
import time
from pathlib import Path

import pandas as pd

from harness.rundir import table_path, write_csv
from harness.runner import Scenario
from scenarios.logs import of_arm, read_table, viewer_tables
from scenarios.traffic import bytes_by_class, counter_delta
from harness import progress
from harness.modelscale import ModelScale, apply

ARMS = ("manifest", "anycast")
ISP = "isp1"
VICTIMS = (("embedded_kill", "i1oca1"), ("ixp_kill", "nfxoca1"))
PHASES = ("pre", "embedded_kill", "ixp_kill")
CLOCK_SKEW_S = 0.05  # the kill and the chunk times come from two processes' wall clocks


# full size: 50 viewers on each of the ISP's 2 hosts (100 sessions per arm) at the ladder / 10
FULL_SCALE = ModelScale(bitrate_divisor=10, viewer_factor=50 / 3)


def _settings(quick: bool) -> dict:
    if quick:
        return {"viewers_per_host": 2, "segments": 17, "kill_embedded_s": 8.0, "kill_ixp_s": 22.0,
                "catalog": {"seed": 1, "n_titles": 4, "duration_s": 68}}
    reference = {"viewers_per_host": 3, "segments": 30, "kill_embedded_s": 25.0, "kill_ixp_s": 55.0,
                 "catalog": {"seed": 1, "n_titles": 12, "duration_s": 120}}
    return apply(reference, FULL_SCALE, sessions=("viewers_per_host",))


def body(net, run_dir: Path, cfg: dict, seed: int, tables: dict) -> None:
    for arm in ARMS:
        print(f"failover: arm {arm} ...", flush=True)
        progress.phase(f"arm {arm}")
        _run_arm(net, run_dir, arm, cfg, seed, tables)


def check_plan(plan) -> None:
    for _, victim in VICTIMS:
        plan.node(victim)  # a clear PlanError if the topology lacks the OCAs this scenario kills


def _run_arm(net, run_dir: Path, arm: str, cfg: dict, seed: int, tables: dict) -> None:
    from emulation.probes import link_counters
    from harness.services import STEADY_STATE, ServiceOptions, Services
    arm_dir = run_dir / "arms" / arm
    # steady state: the OCAs hold their fill plans (staged) before the clock, as after a night's fill
    svc = Services(net, arm_dir, ServiceOptions(
        arm="embedded", catalog=cfg["catalog"], capacity_rules=cfg["capacity"], miss=cfg["miss"],
        stage_tiers=STEADY_STATE,
        history={"seed": seed}, fill_segments_per_title=cfg["segments"], steering=arm, abr=cfg["abr"]))
    viewers = [v.name for v in net.plan.nodes_of(role="viewer") if v.domain == ISP]
    try:
        svc.start()
        marks = [(time.time(), link_counters(net))]
        procs = [svc.play(v, cfg["viewers_per_host"], cfg["segments"], seed * 1000 + i)
                 for i, v in enumerate(viewers)]
        for (event, victim), at_s in zip(VICTIMS, (cfg["kill_embedded_s"], cfg["kill_ixp_s"])):
            time.sleep(max(0.0, marks[0][0] + at_s - time.time()))
            proc = next(p for label, p in svc.procs.procs if label == victim)
            proc.send_signal(signal.SIGKILL)
            marks.append((time.time(), link_counters(net)))
            tables["events"].append({"arm": arm, "event": event, "victim": victim,
                                     "tier": net.plan.node(victim).tier, "t_unix": marks[-1][0]})
            print(f"failover: {arm}: SIGKILL {victim} at +{marks[-1][0] - marks[0][0]:.1f} s", flush=True)
        svc.wait_players(procs, 300)
        marks.append((time.time(), link_counters(net)))
        for phase, (t0, c0), (t1, c1) in zip(PHASES, marks, marks[1:]):
            by = bytes_by_class(counter_delta(c0, c1), net.plan)
            tables["phases"].append({"arm": arm, "phase": phase, "t_start": t0, "t_end": t1,
                                     "duration_s": round(t1 - t0, 3),
                                     **{f"{k}_bytes": v for k, v in sorted(by.items())}})
    finally:
        svc.stop()
    viewer_tables(svc, arm, viewers, tables)


# ---- pure summary --------------------------------------------------------------------------

def recovery(chunks: list[dict], t_kill: float, victim: str, t_end: float) -> list[dict]:
    """Per viewer whose last chunk before the kill came from `victim`: recover_s (kill to the
    first chunk completed from another server; None if none before t_end), rebuffer_s and
    fallback chunks of its chunks in [t_kill, t_end). Pure; chunk values may be strings."""
    by_viewer: dict[str, list[dict]] = {}
    for c in sorted(chunks, key=lambda c: float(c["time"])):
        by_viewer.setdefault(c["viewer"], []).append(c)
    out = []
    for viewer, cs in sorted(by_viewer.items()):
        before = [c for c in cs if float(c["time"]) < t_kill]
        if not before or before[-1]["server"] != victim:
            continue
        after = [c for c in cs if t_kill <= float(c["time"]) < t_end]
        first = next((c for c in after if c["server"] != victim), None)
        out.append({"viewer": viewer,
                    "recover_s": round(float(first["time"]) - t_kill, 3) if first else None,
                    "first_server": first["server"] if first else None,
                    "rebuffer_s": round(sum(float(c["rebuffer_s"]) for c in after), 3),
                    "fallback_chunks": sum(int(c["fallback"]) for c in after)})
    return out


def requested_unix(chunk: dict) -> float:
    """When the player sent the chunk's (last) request: its `request_unix`, or in runs saved
    before that column, completion time minus download time."""
    if _num(chunk.get("request_unix")):
        return float(chunk["request_unix"])
    return float(chunk["time"]) - _num(chunk.get("download_ms")) / 1000


def _num(x) -> float:
    """A table cell as a number; 0 for an empty one (None, "" or NaN)."""
    return 0.0 if x is None or x == "" or pd.isna(x) else float(x)


def summarize(run_dir: Path) -> list[dict]:
    """summary.csv (one row per arm and kill) and failover.png; needs no root and no network."""
    chunks, events, phases = (read_table(table_path(run_dir, n), optional=False) for n in ("chunks", "events", "phases"))
    rows = []
    for arm in ARMS:
        ev = of_arm(events, arm)
        ph = {p["phase"]: p for p in of_arm(phases, arm).to_dict("records")}
        ch = of_arm(chunks, arm)
        if not ev.empty and not ch.empty and "pre" in ph:
            rows += _arm_rows(ch, ev.sort_values("t_unix", kind="stable").to_dict("records"), ph)
    write_csv(run_dir / "summary.csv", rows)
    if not chunks.empty:
        _figure(chunks.to_dict("records"), events.to_dict("records"), run_dir / "failover.png")
    return rows


def _arm_rows(ch: pd.DataFrame, ev: list[dict], ph: dict[str, dict]) -> list[dict]:
    """One summary row per kill of one arm (events `ev` in time order, phases `ph` by name)."""
    pre = ph["pre"]
    # viewers' bytes from the origin (they cross transit) per second before the first kill
    pre_origin = int(ch.loc[(ch["tier"] == "origin") & (ch["time"] < float(ev[0]["t_unix"])), "bytes"].sum())
    pre_rate = pre_origin / float(pre["duration_s"])
    rows = []
    for i, e in enumerate(ev):
        t_end = float(ev[i + 1]["t_unix"]) if i + 1 < len(ev) else float("inf")
        p = ph.get(e["event"], {})
        window = ch[(ch["time"] >= float(e["t_unix"])) & (ch["time"] < t_end)]
        origin_bytes = int(window.loc[window["tier"] == "origin", "bytes"].sum())
        rows.append({"arm": e["arm"], "event": e["event"], "victim": e["victim"],
                     **_kill_figures(ch, window, e["victim"], float(e["t_unix"]), t_end),
                     "pre_transit_mb": round(_num(pre.get("transit_bytes")) / 1e6, 2),
                     "transit_mb_after": round(_num(p.get("transit_bytes")) / 1e6, 2),
                     "origin_mb_after": round(origin_bytes / 1e6, 2),
                     "extra_transit_mb": round((origin_bytes - pre_rate * _num(p.get("duration_s"))) / 1e6, 2)})
    return rows


def _kill_figures(ch: pd.DataFrame, window: pd.DataFrame, victim: str, t_kill: float, t_end: float) -> dict:
    """Recovery, QoE and byte shares after `victim` was killed; `window`: the chunks in [t_kill, t_end)."""
    from contracts.stats import mean
    # recovery walks each viewer's chunks in time order: a loop over records is clearer
    rec = recovery(ch.to_dict("records"), t_kill, victim, t_end)
    times = pd.Series([r["recover_s"] for r in rec if r["recover_s"] is not None], dtype=float)
    total = int(window["bytes"].sum())
    late = window[window["server"] == victim]
    return {
        "viewers_affected": len(rec), "recovered": len(times),
        # the upper median (a recovery time some viewer had), as before: not interpolated
        "recover_s_median": round(float(times.median()), 3) if len(times) else None,
        "recover_s_max": float(times.max()) if len(times) else None,
        # a killed process's socket buffers still drain: bodies requested before the kill
        # may complete after it; a request sent after it must never be answered
        "victim_mb_after": round(int(late["bytes"].sum()) / 1e6, 3),
        "victim_requests_after": sum(requested_unix(c) > t_kill + CLOCK_SKEW_S for c in late.to_dict("records")),
        "rebuffer_s": round(sum(r["rebuffer_s"] for r in rec), 3),
        "fallback_chunks": int(window["fallback"].sum()),
        "chunks_after": len(window),
        "mean_kbps_after": round(mean(window["kbps"].astype(float)), 3) if len(window) else None,
        **{f"{t}_share_after": round(int(window.loc[window["tier"] == t, "bytes"].sum()) / total, 3)
           if total else 0.0 for t in ("embedded", "ixp", "origin")}}


def format_table(rows: list[dict]) -> str:
    cols = ["arm", "event", "viewers_affected", "recover_s_median", "recover_s_max", "rebuffer_s",
            "fallback_chunks", "mean_kbps_after", "ixp_share_after", "origin_share_after", "extra_transit_mb"]
    widths = [max([len(c)] + [len(str(r[c])) for r in rows]) for c in cols]
    lines = ["  ".join(f"{c:>{w}s}" for c, w in zip(cols, widths))]
    for r in rows:
        lines.append("  ".join(f"{str(r[c]):>{w}s}" for c, w in zip(cols, widths)))
    return "\n".join(lines)


def _figure(chunks: list[dict], events: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    arms = [a for a in ARMS if any(c["arm"] == a for c in chunks)]
    tier_y = {"embedded": 0, "ixp": 1, "origin": 2}
    fig, axes = plt.subplots(3, len(arms), figsize=(6 * len(arms), 7), squeeze=False, sharex="col")
    for j, arm in enumerate(arms):
        ch = [c for c in chunks if c["arm"] == arm]
        t0 = min(float(c["time"]) for c in ch)
        for viewer in sorted({c["viewer"] for c in ch}):
            cs = sorted((c for c in ch if c["viewer"] == viewer), key=lambda c: float(c["time"]))
            ts = [float(c["time"]) - t0 for c in cs]
            axes[0][j].plot(ts, [tier_y.get(c["tier"], 3) for c in cs], ".-", label=viewer, alpha=0.7)
            axes[1][j].plot(ts, [int(c["kbps"]) for c in cs], ".-", alpha=0.7)
            axes[2][j].plot(ts, [float(c["buffer_s"]) for c in cs], ".-", alpha=0.7)
        for e in events:
            if e["arm"] == arm:
                for ax in axes[:, j]:
                    ax.axvline(float(e["t_unix"]) - t0, color="red", ls="--", lw=1)
        axes[0][j].set_yticks(list(tier_y.values()), list(tier_y))
        axes[0][j].set_title(f"{arm}: server tier per chunk (red: kills)", fontsize=9)
        axes[1][j].set_ylabel("kbps")
        axes[2][j].set_ylabel("buffer (s)")
        axes[2][j].set_xlabel("time since start (s)")
        axes[0][j].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


STABLE = ("victim", "viewers_affected", "recovered")  # seed-stable; the rest is timing


SCENARIO = Scenario(
    name="failover", settings=_settings, body=body, summarize=summarize, format_table=format_table,
    tables=("chunks", "access", "events", "phases", "sessions"), key=("arm", "event"), stable=STABLE,
    check_plan=check_plan, manifest=lambda cfg: {"arms": ARMS, "isp": ISP, "victims": dict(VICTIMS)})

def run(a) -> int:
    from harness.runner import run as run_scenario
    return run_scenario(a, SCENARIO)
