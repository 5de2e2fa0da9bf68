"""Scenario `steering`: OCAs with capacity limits (--max-streams and --egress-mbps; load = the larger
utilisation, 503 at the limit) under more viewers than one OCA can take; the controller ranks
locations `nearest` vs `load_aware` (OCAs with load > 0.8 go after the healthy ones). One
verified network, one arm per policy, fresh services each. (A stream limit alone leaves
load_aware almost nothing to act on: with N streams, load > 0.8 and < 1 needs N >= 6 concurrent
transfers, rare with 4 s chunks; the egress rate is a smoother load signal.)

The control plane asks the controller with `--steering-policy P` (`&policy=P` on every /rank).

Saved tidy tables (every row has `arm` = the policy): chunks.csv, sessions.csv, access.csv
(segment requests at OCAs and origin, with status and cache), steering.csv (one row per steering
decision of the control plane: ranked locations and which were overloaded / health misses),
misses.csv (each OCA 503 joined with the viewer's latest steering decision for that title).
`summarize(run_dir)` writes summary.csv and steering.png (no root).
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from harness.rundir import table_path, write_csv
from harness.runner import Scenario
from scenarios.logs import join_misses, of_arm, read_steering, read_table, viewer_tables
from scenarios.traffic import startup_times
from harness import progress
from harness.modelscale import ModelScale, apply

ARMS = ("nearest", "load_aware")
ISP = "isp1"


# full size: 50 viewers on each of the ISP's 2 hosts (100 sessions per arm) at the ladder / 10
FULL_SCALE = ModelScale(bitrate_divisor=10, viewer_factor=50 / 8)


def _settings(quick: bool) -> dict:
    if quick:
        return {"viewers_per_host": 6, "segments": 10, "ramp_s": 15.0, "max_streams": 8, "egress_mbps": 40.0,
                "catalog": {"seed": 1, "n_titles": 4, "duration_s": 40}}
    reference = {"viewers_per_host": 8, "segments": 16, "ramp_s": 30.0, "max_streams": 10, "egress_mbps": 50.0,
                 "catalog": {"seed": 1, "n_titles": 20, "duration_s": 80}}
    return apply(reference, FULL_SCALE, sessions=("viewers_per_host", "max_streams"), shared_mbps=("egress_mbps",))


def body(net, run_dir: Path, cfg: dict, seed: int, tables: dict) -> None:
    for arm in ARMS:
        print(f"steering: policy {arm} ...", flush=True)
        progress.phase(f"policy {arm}")
        _run_arm(net, run_dir, arm, cfg, seed, tables)


def _run_arm(net, run_dir: Path, arm: str, cfg: dict, seed: int, tables: dict) -> None:
    from emulation.linkemu import EmulationError
    from harness.services import STEADY_STATE, ServiceOptions, Services
    if not net.mgmt_url:
        raise EmulationError("steering policies need the controller (Options(controller=True))")
    arm_dir = run_dir / "arms" / arm
    # steady state with the whole catalog at both OCAs: the policies differ by load only
    opts = ServiceOptions(arm="embedded", catalog=cfg["catalog"], stage_tiers=STEADY_STATE,
                          history={"seed": seed},
                          capacity_rules={"embedded": "1", "ixp": "1"}, miss=cfg["miss"],
                          fill_segments_per_title=cfg["segments"],
                          oca_args=("--max-streams", str(cfg["max_streams"]),
                                    "--egress-mbps", str(cfg["egress_mbps"])),
                          control_args=("--steering-policy", arm), abr=cfg["abr"])
    svc = Services(net, arm_dir, opts)
    viewers = [v.name for v in net.plan.nodes_of(role="viewer") if v.domain == ISP]
    try:
        svc.start()
        procs = [svc.play(v, cfg["viewers_per_host"], cfg["segments"], seed * 1000 + i, ramp_s=cfg["ramp_s"])
                 for i, v in enumerate(viewers)]
        svc.wait_players(procs, 300)
    finally:
        svc.stop()
    viewer_tables(svc, arm, viewers, tables)
    decisions = read_steering(svc.logs / "steering.jsonl", arm)
    tables["steering"] += decisions
    tables["misses"] += join_misses([r for r in tables["access"] if r["arm"] == arm], decisions)


def summarize(run_dir: Path) -> list[dict]:
    """summary.csv (one row per policy) and steering.png; needs no root and no network."""
    t = {n: read_table(table_path(run_dir, n), optional=False) for n in ("chunks", "sessions", "access", "steering")}
    t["misses"] = read_table(table_path(run_dir, "misses"))  # none when no OCA refused a request
    rows = []
    for arm in ARMS:
        arm_t = {k: of_arm(v, arm) for k, v in t.items()}
        if not arm_t["chunks"].empty:
            rows.append({"arm": arm, **_figures(arm_t)})
    write_csv(run_dir / "summary.csv", rows)
    if rows:
        _figure(rows, run_dir / "steering.png")
    return rows


def _figures(t: dict[str, pd.DataFrame]) -> dict:
    """The summary figures of one policy from its rows of each table."""
    ch, se, de, mi = t["chunks"], t["sessions"], t["steering"], t["misses"]
    ac = t["access"]
    method = ac["method"] if "method" in ac else "GET"  # runs saved before the column: all GETs
    ac = ac[(ac["server"] != "origin") & (method == "GET")]
    total = int(ch["bytes"].sum())
    health = int((ac["status"] == 503).sum())
    first = de["first"].fillna("") if len(de) else pd.Series(dtype=str)
    return {
        "sessions": len(se), "sessions_ok": int((se["status"] == "ok").sum()) if len(se) else 0,
        "decisions": len(de),
        "first_embedded_share": round(int((first.str.startswith("i") & first.str.contains("oca")).sum())
                                      / len(de), 3) if len(de) else None,
        "decisions_overloaded_seen": int(de["overloaded"].notna().sum()) if len(de) else 0,
        "oca_requests": len(ac), "health_misses": health,
        "health_miss_ratio": round(health / len(ac), 4) if len(ac) else 0.0,
        "health_misses_ranked_first": int(mi["ranked_first"].sum()) if len(mi) else 0,
        "content_misses": int((ac["cache"].isin(("miss", "fill")) & (ac["status"] == 200)).sum()),
        **{f"{tier}_share": round(int(ch.loc[ch["tier"] == tier, "bytes"].sum()) / total, 3) if total else 0.0
           for tier in ("embedded", "ixp", "origin")},
        "fallback_chunks": int(ch["fallback"].sum()),
        "qoe_lin": _mean(se, "qoe_lin"), "rebuffer_ratio": _mean(se, "rebuffer_ratio"),
        "mean_kbps": _mean(se, "mean_kbps"), "startup_s": _mean_of(startup_times(se))}


def _mean(sessions: pd.DataFrame, col: str) -> float | None:
    return _mean_of(sessions[col] if col in sessions else pd.Series(dtype=float))


def _mean_of(xs: pd.Series) -> float | None:
    from contracts.stats import mean
    return round(mean(xs.astype(float)), 4) if len(xs) else None


def format_table(rows: list[dict]) -> str:
    cols = ["arm", "sessions", "decisions", "first_embedded_share", "health_misses", "health_miss_ratio",
            "content_misses", "embedded_share", "ixp_share", "origin_share", "qoe_lin", "rebuffer_ratio",
            "mean_kbps"]
    widths = [max([len(c)] + [len(str(r[c])) for r in rows]) for c in cols]
    lines = ["  ".join(f"{c:>{w}s}" for c, w in zip(cols, widths))]
    for r in rows:
        lines.append("  ".join(f"{str(r[c]):>{w}s}" for c, w in zip(cols, widths)))
    return "\n".join(lines)


def _figure(rows: list[dict], path: Path) -> None:
    from harness.figures import bar_panels
    metrics = [("health_misses", "health misses (503)"), ("embedded_share", "share from embedded"),
               ("ixp_share", "share from IXP"), ("qoe_lin", "QoE_lin"), ("rebuffer_ratio", "rebuffer ratio"),
               ("mean_kbps", "mean bitrate (kbps)")]
    bar_panels(rows, metrics, "steering: nearest vs load-aware under OCA capacity limits", path,
               ["#c44e52", "#4c72b0"], panel_w=2.8)

STABLE = ("sessions", "decisions")  # load-aware steering reacts to timing, so little else is


SCENARIO = Scenario(
    name="steering", settings=_settings, body=body, summarize=summarize, format_table=format_table,
    tables=("chunks", "access", "sessions", "steering", "misses"), stable=STABLE,
    manifest=lambda cfg: {"arms": ARMS, "isp": ISP})

def run(a) -> int:
    from harness.runner import run as run_scenario
    return run_scenario(a, SCENARIO)
