"""Scenario `flashcrowd`: a new title (the least popular of the catalog, so in no fill plan)
launches and becomes the most requested: many sessions start within a few seconds while a
baseline of Zipf viewers keeps watching. Arms: `prepositioned` (before the spike every OCA gets
POST /fill with all rungs of the new title's segments, from the origin) and `cold` (OCAs pull
it through on first request). Same embedded deployment, pull-through LRU OCAs, in both.

Saved tidy tables (`arm` column; `capacity_mb` as in fill): links_ts.csv (controller port
counters per link per second), links.csv (kernel counter deltas), requests.csv (OCA access-log
segment requests with `cache`), fills.csv, sessions.csv (with `role`: spike|baseline).
`summarize(run_dir)` (pure) writes summary.csv, transit_ts.csv and flashcrowd.png.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pandas as pd

from harness.rundir import table_path, write_csv
from harness.runner import Scenario
from harness.staging import HISTORY_DEFAULTS
from scenarios.logs import day_tables, of_arm, read_table
from harness import progress
from harness.modelscale import ModelScale, apply
from scenarios.traffic import (UPSTREAM, LinkSampler, border_upstream_bytes, counter_delta, hit_ratios, per_second, startup_times,
                               upstream_mbps, viewer_requests, viewers_by_isp)

ARMS = ("prepositioned", "cold")


PREPOSITION_MBPS = 200.0  # the rate each OCA pre-positions the launch title at
# full size: 3 + 14 viewers per host (102 sessions per arm) at the world's bitrates
# (harness.modelscale). At / 10 a spike viewer's share of its access link is under one packet per
# 6 ms round trip to its embedded OCA: TCP cannot back off below a packet, the access queue stays
# full, and the control plane's SYN-ACKs to the spike are dropped (31 of 84 sessions waited 1-5 s
# to connect), so pre-positioned startups read slower than cold ones (2.11 vs 1.63 s). At / 1
# the share is 2.7 packets: 0.91 vs 3.27 s, and the host was saturated in 0% of the serve phase.
FULL_SCALE = ModelScale(bitrate_divisor=1, viewer_factor=1.7)


def _settings(quick: bool) -> dict:
    if quick:
        return {"segments": 3, "catalog": {"seed": 1, "n_titles": 10, "duration_s": 12},
                "baseline_per_host": 1, "spike_per_host": 4, "spike_at_s": 4.0,
                "spike_ramp_s": 2.0, "tail_s": 3.0, "preposition_mbps": PREPOSITION_MBPS}
    reference = {"segments": 5, "catalog": {"seed": 1, "n_titles": 40, "duration_s": 20},
                 "baseline_per_host": 2, "spike_per_host": 8, "spike_at_s": 8.0,
                 "spike_ramp_s": 3.0, "tail_s": 5.0, "preposition_mbps": PREPOSITION_MBPS}
    return apply(reference, FULL_SCALE, sessions=("baseline_per_host", "spike_per_host"),
                 flow_mbps=("preposition_mbps",))


def new_title(catalog: dict) -> str:
    """The launch title: the least popular title of the catalog (ties by name)."""
    from appliances.content import Catalog, CatalogSpec
    from appliances.fillplan import popularity_order
    return popularity_order(Catalog(CatalogSpec(**catalog)).popularity())[-1]


def settings(quick: bool) -> dict:
    cfg = _settings(quick)
    return {**cfg, "new_title": new_title(cfg["catalog"])}


def body(net, run_dir: Path, cfg: dict, seed: int, tables: dict) -> None:
    for arm in ARMS:
        print(f"flashcrowd: arm {arm} (new title {cfg['new_title']}) ...", flush=True)
        progress.phase(f"arm {arm}")
        _run_arm(net, run_dir, arm, cfg, seed, tables)

def preposition(svc, title: str, cfg: dict, arm_dir: Path) -> None:
    """Tiered pre-positioning of every rung of the first `segments` segments of `title`, as Open
    Connect fills: the IXP sites from the origin (backbone) first, then the embedded OCAs from
    the IXP sites (peering), the origin last (POST /fill from the control host:
    `scenarios.hostcmd post-fill`)."""
    from contracts.catalog import LADDER_KBPS
    segments = [[title, k, i] for k in cfg["catalog"].get("ladder_kbps", LADDER_KBPS) for i in range(cfg["segments"])]
    ixp = [o for o in svc.dep["ocas"] if o["tier"] == "ixp"]
    embedded = [o for o in svc.dep["ocas"] if o["tier"] != "ixp"]
    for tier, ocas, sources in (("ixp", ixp, [svc.origin_url]),
                                ("embedded", embedded, [o["url"] for o in ixp] + [svc.origin_url])):
        body = {"segments": segments, "sources": sources, "rate_mbps": cfg["preposition_mbps"],
                "window_end_unix": time.time() + 120}
        body_file = arm_dir / f"preposition-{tier}.json"
        body_file.write_text(json.dumps(body))
        _post_fill(svc, ocas, body_file)
        svc.wait_fill(120, names=[o["name"] for o in ocas])


def _post_fill(svc, ocas: list[dict], body_file: Path) -> None:
    from emulation.linkemu import EmulationError
    ctl = svc.net.host(svc.plan.nodes_of(role="control")[0].name)
    for o in ocas:
        out = ctl.cmd(f"{sys.executable} -m scenarios.hostcmd post-fill {o['url']} {body_file} "
                      f"{svc.command_key_file}").strip()
        if not out.endswith("202"):
            raise EmulationError(f"POST /fill to {o['name']} answered {out[-300:]!r}")


def _run_arm(net, run_dir: Path, arm: str, cfg: dict, seed: int, tables: dict) -> None:
    from emulation.probes import link_counters
    from harness.services import STEADY_STATE, ServiceOptions, Services
    arm_dir = run_dir / "arms" / arm
    # steady state (yesterday's fill staged) in both arms; the launch title is in no store
    svc = Services(net, arm_dir, ServiceOptions(
        arm="embedded", catalog=cfg["catalog"], capacity_rules=cfg["capacity"], miss=cfg["miss"], abr=cfg["abr"],
        stage_tiers=STEADY_STATE, history={"seed": seed}, fill_segments_per_title=cfg["segments"],
        launch_titles=(cfg["new_title"],)))
    procs = []
    try:
        svc.start()
        tags = {"arm": arm, "capacity_mb": min(o["capacity_mb"] for o in svc.dep["ocas"])}
        if arm == "prepositioned":
            preposition(svc, cfg["new_title"], cfg, arm_dir)
            svc.wait_fill(120)
            time.sleep(1.5)  # a heartbeat so the control plane knows the OCAs hold the title
        t0 = time.time()
        before = link_counters(net)  # the kernel cross-check covers the same span as links_ts
        by_isp = viewers_by_isp(net.plan)
        hosts = [h for _, hs in sorted(by_isp.items()) for h in hs]
        with LinkSampler(net, t0, tags) as sampler:
            for j, h in enumerate(hosts):
                procs.append(svc.play(h, cfg["baseline_per_host"], cfg["segments"], seed=seed * 1000 + j,
                                      tag=f"{h}-base", ramp_s=cfg["spike_at_s"], max_wall_s=120))
            time.sleep(max(0.0, t0 + cfg["spike_at_s"] - time.time()))
            for j, h in enumerate(hosts):
                procs.append(svc.play(h, cfg["spike_per_host"], cfg["segments"], seed=seed * 1000 + 100 + j,
                                      tag=f"{h}-spike", titles=cfg["new_title"], ramp_s=cfg["spike_ramp_s"],
                                      max_wall_s=120))
            svc.wait_players(procs, 120)
            time.sleep(cfg["tail_s"])
        tables["links_ts"] += sampler.rows
        tables["links"] += [{**tags, **r} for r in counter_delta(before, link_counters(net))]
    finally:
        svc.stop()
    got = day_tables(svc.logs, tags, t0, t0)
    for s in got["sessions"]:
        s["role"] = "spike" if s["account"].split("-")[1] == "spike" else "baseline"
    for k, rows in got.items():
        tables[k] += rows


def summarize(run_dir: Path) -> list[dict]:
    """summary.csv, transit_ts.csv and flashcrowd.png from the tidy tables; no root, no network."""
    from topologies.plan import Plan
    plan = Plan.from_json((run_dir / "plan.json").read_text())
    cfg = json.loads((run_dir / "manifest.json").read_text())["settings"]
    roles = {n.name: n.role for n in plan.nodes}
    t = {k: read_table(table_path(run_dir, k)) for k in ("links_ts", "links", "requests", "sessions")}
    rows, series = [], []
    for arm in ARMS:
        sel = {k: of_arm(v, arm) for k, v in t.items()}
        if sel["links_ts"].empty:
            continue
        ts = per_second(sel["links_ts"], roles)
        per_s = upstream_mbps(ts)
        series += [{"arm": arm, "t_s": k, "upstream_mbps": round(v, 3)} for k, v in sorted(per_s.items())]
        rows.append({"arm": arm, **_spike_figures(sel["sessions"]), **_upstream_figures(ts, per_s, cfg),
                     "upstream_kernel_mb": round(border_upstream_bytes(sel["links"], roles) / 1e6, 2),
                     **_title_figures(sel["requests"], plan, cfg["new_title"])})
    write_csv(run_dir / "summary.csv", rows)
    write_csv(run_dir / "transit_ts.csv", series)
    if rows:
        _figure(t["sessions"], series, cfg["spike_at_s"], run_dir / "flashcrowd.png")
    return rows


def _spike_figures(sessions: pd.DataFrame) -> dict:
    """Startup delays of the launch spike's sessions (p90 and max: nearest rank, a real session's)."""
    spike = sessions[sessions["role"] == "spike"]
    up = startup_times(spike)
    base = startup_times(sessions[sessions["role"] == "baseline"])
    nan = float("nan")
    return {"spike_sessions": len(spike), "spike_ok": int((spike["status"] == "ok").sum()),
            "startup_p50_s": round(float(up.median()), 3) if len(up) else nan,
            "startup_p90_s": round(float(up.quantile(0.9)), 3) if len(up) else nan,
            "startup_max_s": round(float(up.max()), 3) if len(up) else nan,
            "baseline_startup_p50_s": round(float(base.median()), 3) if len(base) else nan}


def _upstream_figures(ts: pd.DataFrame, per_s: dict[float, float], cfg: dict) -> dict:
    """Upstream peaks (Mbit/s) and volumes (MB), in all and after the spike began."""
    up = ts[ts["cls"].isin(UPSTREAM)]
    after = up[up["t_s"] > cfg["spike_at_s"]]
    return {"upstream_peak_mbps": round(max(per_s.values(), default=0.0), 2),
            "spike_peak_mbps": round(max((v for k, v in per_s.items() if k > cfg["spike_at_s"]), default=0.0), 2),
            "spike_upstream_mb": round(int(after["bytes"].sum()) / 1e6, 2),
            "upstream_mb": round(int(up["bytes"].sum()) / 1e6, 2)}


def _title_figures(requests: pd.DataFrame, plan, title: str) -> dict:
    """The new title's hit ratio at OCAs and its bytes from the origin, after t = 0 and before
    (the pre-positioning fill)."""
    new = requests[requests["path"].str.startswith(f"/v/{title}/")]
    hr, _ = hit_ratios(viewer_requests(new, plan).query("t_s >= 0"))
    origin = new[new["oca"] == "origin"]
    return {"new_title_hit_ratio": round(hr, 3),
            "origin_new_title_mb": round(int(origin.loc[origin["t_s"] >= 0, "bytes"].sum()) / 1e6, 2),
            "prefill_mb": round(int(origin.loc[origin["t_s"] < 0, "bytes"].sum()) / 1e6, 2)}


def format_table(rows: list[dict]) -> str:
    cols = ["arm", "spike_sessions", "spike_ok", "startup_p50_s", "startup_p90_s", "startup_max_s",
            "baseline_startup_p50_s", "spike_peak_mbps", "spike_upstream_mb", "upstream_mb", "upstream_kernel_mb",
            "new_title_hit_ratio", "origin_new_title_mb", "prefill_mb"]
    width = {c: max([len(c)] + [len(str(r[c])) for r in rows]) for c in cols}
    lines = ["  ".join(f"{c:>{width[c]}s}" for c in cols)]
    for r in rows:
        lines.append("  ".join(f"{r[c]!s:>{width[c]}s}" for c in cols))
    return "\n".join(lines)


def _figure(sessions: pd.DataFrame, series: list[dict], spike_at_s: float, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    for arm in ARMS:
        arm_s = of_arm(sessions, arm)
        xs = sorted(startup_times(arm_s[arm_s["role"] == "spike"]))
        if xs:
            ax1.step(xs, [(i + 1) / len(xs) for i in range(len(xs))], where="post", label=arm)
        pts = [(float(r["t_s"]), float(r["upstream_mbps"])) for r in series if r["arm"] == arm]
        if pts:
            ax2.plot([p[0] for p in pts], [p[1] for p in pts], label=arm)
    ax1.set_xlabel("startup delay of spike sessions (s)")
    ax1.set_ylabel("CDF")
    ax1.legend(fontsize=8)
    ax2.axvline(spike_at_s, color="grey", ls="--", label="launch spike")
    ax2.set_xlabel("time (s)")
    ax2.set_ylabel("upstream (transit+peering) Mbit/s")
    ax2.legend(fontsize=8)
    fig.suptitle("flashcrowd: new title launch, prepositioned vs cold")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# seed-stable. Not the cold arm's new_title_hit_ratio / origin_new_title_mb: the control plane
# ranks first the OCAs whose heartbeat says they hold the title, so which OCAs pull the launch
# title depends on timing.
STABLE = ("spike_sessions", "prefill_mb")


SCENARIO = Scenario(
    name="flashcrowd", settings=settings, body=body, summarize=summarize, format_table=format_table,
    tables=("links_ts", "links", "requests", "fills", "sessions"), stable=STABLE,
    manifest=lambda cfg: {"arms": ARMS, "fill_mode": "staged", "history": HISTORY_DEFAULTS})

def run(a) -> int:
    from harness.runner import run as run_scenario
    return run_scenario(a, SCENARIO)
