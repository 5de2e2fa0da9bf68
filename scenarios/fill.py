"""Scenario `fill`: a day compressed into seconds. Night first (the fill window: the control plane
pushes its popularity-predicted fill plan, few viewers), then demand follows a diurnal curve
(player processes started per slot, counts from the curve, seeded titles from the regional
Zipf popularity). Arms: `none` (no OCAs: everything from the origin), `reactive` (embedded
OCAs, pull-through LRU from the IXP site, no push), `proactive` (Open Connect: the control plane
pushes a fill plan predicted from yesterday's requests at night, tier by tier; by day an OCA
serves what it holds and answers a content miss for the rest), plus extra `reactive` runs at
other cache sizes (the sweep; Che's approximation and a trace-driven replay of the run's own
request stream through the store's LRU are set beside them). Embedded caches start empty with
`capacity_mb` each. In `proactive` the IXP site holds the whole catalog (staged: its own fill
from the origin over the backbone is not what this measures); in `reactive` it starts empty too
and pulls through from the origin, a two-level pull-through hierarchy (steering sees no OCA
holding a whole title, so viewers go to their nearest OCA).

Saved tidy tables (`arm` and `capacity_mb` columns): links_ts.csv (controller port counters of
every plan link, sampled each second), links.csv (kernel counter deltas per run: the
cross-check), requests.csv (OCA access-log segment requests with their `cache` field),
fills.csv (bytes each OCA pulled upstream: push fill and pull-through), sessions.csv, slots.csv.
`summarize(run_dir)` (pure) writes summary.csv, upstream_ts.csv, oca_summary.csv and fill.png.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pandas as pd

from contracts.cachetheory import che_hit_ratio
from harness.rundir import table_path, write_csv
from harness.runner import Scenario
from harness.staging import HISTORY_DEFAULTS
from scenarios.logs import day_tables, read_steering, read_table
from scenarios.traffic import (UPSTREAM, LinkSampler, border_upstream_bytes, compulsory_bound, counter_delta,
                               hit_ratios, per_second, startup_times, upstream_mbps, viewer_requests,
                               viewers_by_isp)

ARMS = ("none", "reactive", "proactive")
# the fill window closes at this share of the night, so objects in flight land before the day
FILL_WINDOW_SHARE = 0.8
# the evening peak: the seconds with at least this share of the most sessions playing at once
PEAK_SHARE = 0.8


def _settings(quick: bool) -> dict:
    if quick:
        return {"day_s": 36, "slots": 6, "window_slots": 2, "peak_per_isp": 3, "segments": 3,
                "catalog": {"seed": 1, "n_titles": 20, "duration_s": 12}, "capacity_mb": 40.0,
                "sweep_mb": [4.0], "fill_rate_mbps": 200.0}
    return {"day_s": 72, "slots": 12, "window_slots": 3, "peak_per_isp": 5, "segments": 5,
            "catalog": {"seed": 1, "n_titles": 60, "duration_s": 20}, "capacity_mb": 80.0,
            "sweep_mb": [10.0, 40.0, 240.0], "fill_rate_mbps": 200.0}


# ---- pure model -------------------------------------------------------------------------
def diurnal_shape(frac: float, peak_frac: float = 0.75) -> float:
    """Demand in [0, 1] at fraction `frac` of the day: 0 at midnight, 1 at the evening peak."""
    if not 0 <= frac <= 1:
        raise ValueError(f"frac must be in [0, 1], got {frac}")
    if frac <= peak_frac:
        return 0.5 * (1 - math.cos(math.pi * frac / peak_frac))
    return 0.5 * (1 + math.cos(math.pi * (frac - peak_frac) / (1 - peak_frac)))


def slot_counts(slots: int, peak: int) -> list[int]:
    """Viewers to start per slot (per ISP), from the curve at each slot's centre."""
    if slots < 1 or peak < 0:
        raise ValueError(f"need slots >= 1 and peak >= 0, got {slots}, {peak}")
    return [round(peak * diurnal_shape((i + 0.5) / slots)) for i in range(slots)]


# ---- the run ----------------------------------------------------------------------------
def _runs(cfg: dict) -> list[tuple[str, float]]:
    main = cfg["capacity_mb"]
    return [("none", main), ("reactive", main), ("proactive", main)] + [("reactive", s) for s in cfg["sweep_mb"]]


def settings(quick: bool) -> dict:
    cfg = _settings(quick)
    return {**cfg, "slot_counts": slot_counts(cfg["slots"], cfg["peak_per_isp"])}


def body(net, run_dir: Path, cfg: dict, seed: int, tables: dict) -> None:
    from emulation.probes import link_counters
    for arm, cap in _runs(cfg):
        print(f"fill: arm {arm} capacity {cap:g} MB ...", flush=True)
        before = link_counters(net)
        _run_day(net, run_dir, arm, cap, cfg, seed, tables)
        tables["links"] += [{"arm": arm, "capacity_mb": cap, **r}
                            for r in counter_delta(before, link_counters(net))]

def _run_day(net, run_dir: Path, arm: str, cap: float, cfg: dict, seed: int, tables: dict) -> None:
    from harness.services import ServiceOptions, Services
    tags = {"arm": arm, "capacity_mb": cap}
    slot_s = cfg["day_s"] / cfg["slots"]
    window_s = cfg["window_slots"] * slot_s
    fill_window_s = FILL_WINDOW_SHARE * window_s
    spt = cfg["segments"]
    opts = ServiceOptions(arm="origin" if arm == "none" else "embedded", catalog=cfg["catalog"],
                          capacity_rules={"embedded": f"mb:{cap:g}", "ixp": "1"},
                          stage_tiers=("ixp",) if arm == "proactive" else (),
                          miss=cfg["miss"] if arm == "proactive" else "proxy", history={"seed": seed},
                          fill="network" if arm == "proactive" else "none",
                          fill_segments_per_title=spt, abr=cfg["abr"],
                          # manifests warm before midnight (the control plane pushes the fill
                          # plan only then): hashing them took a core away from the night's fill
                          control_args=("--fill-window-s", str(fill_window_s),
                                        "--fill-rate-mbps", str(cfg["fill_rate_mbps"])))
    svc = Services(net, run_dir / "arms" / f"{arm}-{cap:g}", opts)
    procs = []
    try:
        svc.start()
        # midnight: the fill window opens when the control plane pushes (once manifests are warm)
        t0 = svc.fill_push_unix() if opts.fill == "network" else time.time()
        by_isp = viewers_by_isp(net.plan)
        with LinkSampler(net, t0, tags) as sampler:
            for i, count in enumerate(cfg["slot_counts"]):
                time.sleep(max(0.0, t0 + i * slot_s - time.time()))
                for j, (isp, hosts) in enumerate(sorted(by_isp.items())):
                    if count == 0:
                        continue
                    host = hosts[i % len(hosts)]
                    tag = f"{host}-s{i:02d}"
                    procs.append(svc.play(host, count, spt, seed=seed * 10000 + i * 100 + j, tag=tag,
                                          ramp_s=slot_s * 0.8, max_wall_s=120))
                tables["slots"].append({**tags, "slot": i, "t_s": round(i * slot_s, 3),
                                        "viewers_per_isp": count, "in_window": i < cfg["window_slots"]})
            time.sleep(max(0.0, t0 + cfg["day_s"] - time.time()))
            svc.wait_players(procs, 120)
            time.sleep(1.5)
        tables["links_ts"] += sampler.rows
        if sampler.errors:
            print(f"fill: {sampler.errors} controller samples failed", flush=True)
    finally:
        svc.stop()
    for k, rows in day_tables(svc.logs, tags, t0, t0 + window_s).items():
        tables[k] += rows
    tables["steering"] += [{**tags, "t_s": round(d["ts"] - t0, 3), **{k: v for k, v in d.items() if k != "arm"}}
                           for d in read_steering(svc.logs / "steering.jsonl", arm)]


# ---- summary ----------------------------------------------------------------------------
def peak_mean_mbps(per_s: dict[float, float], sessions: pd.DataFrame, share: float = PEAK_SHARE) -> float:
    """Mean upstream Mbit/s over the evening peak: the sample times at which at least `share` of
    the most sessions ever playing at once were playing (a session plays from its t_s for
    ended_unix - started_unix s). Steadier than the highest single second. Pure; nan without
    sessions or samples."""
    from contracts.stats import mean
    se = sessions.dropna(subset=["started_unix", "ended_unix"]) if len(sessions) else sessions
    spans = list(zip(se["t_s"], se["t_s"] + se["ended_unix"] - se["started_unix"])) if len(se) else []
    playing = {t: sum(a <= t < b for a, b in spans) for t in per_s}
    top = max(playing.values(), default=0)
    peak = [per_s[t] for t, n in playing.items() if top and n >= share * top]
    return mean(peak) if peak else float("nan")


def summarize(run_dir: Path) -> list[dict]:
    """summary.csv, upstream_ts.csv, oca_summary.csv and fill.png from the tidy tables; needs no
    root and no network."""
    from appliances.content import Catalog, CatalogSpec
    from topologies.plan import Plan
    plan = Plan.from_json((run_dir / "plan.json").read_text())
    cfg = json.loads((run_dir / "manifest.json").read_text())["settings"]
    roles = {n.name: n.role for n in plan.nodes}
    t = {k: read_table(table_path(run_dir, k)) for k in ("links_ts", "links", "requests", "fills", "sessions")}
    t["requests"] = viewer_requests(t["requests"], plan)
    window_s = cfg["window_slots"] * cfg["day_s"] / cfg["slots"]
    catalog = Catalog(CatalogSpec(**cfg["catalog"]))
    pop = list(catalog.popularity().values())
    rows, series, per_oca = [], [], []
    runs = t["links_ts"][["arm", "capacity_mb"]].drop_duplicates() if len(t["links_ts"]) else pd.DataFrame()
    for arm, cap in runs.itertuples(index=False):
        sel = {k: v[(v["arm"] == arm) & (v["capacity_mb"] == cap)] if len(v) else v for k, v in t.items()}
        ts = per_second(sel["links_ts"], roles)
        series += [{"arm": arm, "capacity_mb": float(cap), **r} for r in ts.to_dict("records")]
        per_oca += _per_oca(sel["requests"], arm, float(cap))
        rows.append({"arm": arm, "capacity_mb": float(cap),
                     **_run_figures(sel, ts, roles, window_s, pop, arm, cap, catalog)})
    write_csv(run_dir / "summary.csv", rows)
    write_csv(run_dir / "upstream_ts.csv", series)
    write_csv(run_dir / "oca_summary.csv", per_oca)
    if rows:
        _figure(rows, series, window_s, pop, run_dir / "fill.png")
    return rows


def lru_replay(requests: pd.DataFrame, catalog, capacity_mb: float) -> float:
    """Request hit ratio of the store's own LRU (appliances.store.EvictionPolicy) replaying this
    run's viewer requests per OCA in time order, with no network: the trace-driven figure to set
    beside the emulated one (they differ by concurrency: a request that joins a pull in flight
    is a hit here only if the pull finished first). Pure; nan without requests."""
    from appliances.store import EvictionPolicy
    from scenarios.traffic import CACHE_OUTCOMES
    rq = requests[(requests["oca"] != "origin") & requests["cache"].isin(CACHE_OUTCOMES)] if len(requests) else requests
    if rq.empty:
        return float("nan")
    hits = 0
    cap = int(float(capacity_mb) * 2**20)
    for _, mine in rq.sort_values("t_s", kind="stable").groupby("oca", sort=True):
        lru = EvictionPolicy("lru")
        for path in mine["path"]:
            key = catalog.parse_path(path)
            if key in lru:
                hits += 1
                lru.touch(key)
                continue
            size = catalog.segment_size(*key)
            victims = lru.victims(size, cap)
            for v in victims or ():
                lru.remove(v)
            if victims is not None:
                lru.add(key, size)
    return hits / len(rq)


def _per_oca(requests: pd.DataFrame, arm: str, cap: float) -> list[dict]:
    """Request and byte hit ratio of each OCA in one run."""
    out = []
    for oca, mine in requests[requests["oca"] != "origin"].groupby("oca", sort=True) if len(requests) else ():
        o_req, o_byte = hit_ratios(mine)
        out.append({"arm": arm, "capacity_mb": cap, "oca": oca, "requests": len(mine),
                    "hit_ratio": round(o_req, 3), "byte_hit_ratio": round(o_byte, 3)})
    return out


def _run_figures(sel: dict[str, pd.DataFrame], ts: pd.DataFrame, roles: dict[str, str], window_s: float,
                 pop: list[float], arm: str, cap: float, catalog) -> dict:
    """The summary figures of one run (arm and cache size) from its rows of each table."""
    from contracts.stats import mean
    up = ts[ts["cls"].isin(UPSTREAM)]
    night, day = int(up.loc[up["t_s"] <= window_s, "bytes"].sum()), int(up.loc[up["t_s"] > window_s, "bytes"].sum())
    per_s = upstream_mbps(ts)
    fills, se = sel["fills"], sel["sessions"]
    push = fills[fills["kind"] == "push"] if len(fills) else fills
    in_window = push["in_window"].astype(str).str.lower().isin(("true", "1")) if len(push) else []
    fill_in = int(push.loc[in_window, "bytes"].sum()) if len(push) else 0
    fill_out = int(push.loc[~in_window, "bytes"].sum()) if len(push) else 0
    pull = int(fills.loc[fills["kind"] == "pull", "bytes"].sum()) if len(fills) else 0
    req_hr, byte_hr = hit_ratios(sel["requests"])
    served_day = int(se.loc[se["t_s"] > window_s, "bytes"].sum()) if len(se) else 0
    sess_bytes = se.loc[se["status"] == "ok", "bytes"] if len(se) else []
    bound = compulsory_bound(sel["requests"])
    item_bytes = mean(int(b) for b in sess_bytes) if len(sess_bytes) else float("nan")
    che = che_hit_ratio(pop, float(cap) * 2 ** 20 / item_bytes) if arm != "none" and len(sess_bytes) else float("nan")
    startups = startup_times(se)
    return {
        "sessions": len(se), "sessions_ok": int((se["status"] == "ok").sum()) if len(se) else 0,
        "startup_s": round(float(startups.median()), 3) if len(startups) else float("nan"),
        "upstream_night_mb": round(night / 1e6, 2), "upstream_day_mb": round(day / 1e6, 2),
        "upstream_peak_mbps": round(max((v for k, v in per_s.items() if k > window_s), default=0.0), 2),
        "upstream_peak_mean_mbps": round(peak_mean_mbps(per_s, se), 2),
        "upstream_kernel_mb": round(border_upstream_bytes(sel["links"], roles) / 1e6, 2),
        "served_day_mb": round(served_day / 1e6, 2),
        # sessions whose manifest put the origin first: with OCAs deployed, only when the
        # controller left every OCA out as a health miss (steering.csv `excluded` says why)
        "origin_first_sessions": int((se["first_location"] == "origin").sum()) if "first_location" in se else 0,
        "upstream_day_share": round(day / served_day, 3) if served_day else float("nan"),
        # push fill (the plan) inside and outside the night; pull-through by day is apart
        "fill_in_window_mb": round(fill_in / 1e6, 2), "fill_outside_mb": round(fill_out / 1e6, 2),
        "pull_mb": round(pull / 1e6, 2),
        "lru_replay_hit_ratio": round(lru_replay(sel["requests"], catalog, cap), 3) if arm == "reactive"
        else float("nan"),
        "hit_ratio": round(req_hr, 3), "byte_hit_ratio": round(byte_hr, 3),
        "compulsory_bound": round(bound, 3),
        "capacity_miss_ratio": round(bound - req_hr, 3),
        "che_hit_ratio": round(che, 3), "item_mb": round(item_bytes / 1e6, 3),
    }


def format_table(rows: list[dict]) -> str:
    cols = ["arm", "capacity_mb", "sessions_ok", "startup_s", "upstream_night_mb", "upstream_day_mb",
            "upstream_day_share", "origin_first_sessions", "upstream_peak_mbps", "upstream_peak_mean_mbps",
            "upstream_kernel_mb",
            "fill_in_window_mb", "fill_outside_mb", "pull_mb",
            "hit_ratio", "byte_hit_ratio", "compulsory_bound", "capacity_miss_ratio", "lru_replay_hit_ratio",
            "che_hit_ratio"]
    width = {c: max([len(c)] + [len(str(r[c])) for r in rows]) for c in cols}
    lines = ["  ".join(f"{c:>{width[c]}s}" for c in cols)]
    for r in rows:
        lines.append("  ".join(f"{r[c]!s:>{width[c]}s}" for c in cols))
    return "\n".join(lines)


def _figure(rows: list[dict], series: list[dict], window_s: float, pop: list[float], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.6))
    main_cap = rows[0]["capacity_mb"]
    for r in rows:
        if r["capacity_mb"] != main_cap:
            continue
        per_s: dict[float, float] = {}
        for s in series:
            if s["arm"] == r["arm"] and float(s["capacity_mb"]) == main_cap and s["cls"] in UPSTREAM:
                per_s[s["t_s"]] = per_s.get(s["t_s"], 0) + s["mbps"]
        xs = sorted(per_s)
        ax1.plot(xs, [per_s[x] for x in xs], label=r["arm"])
    ax1.axvspan(0, window_s, color="#dddddd", label="night (fill window: first 80%)")
    ax1.set_xlabel("time of the compressed day (s)")
    ax1.set_ylabel("upstream (transit+peering) Mbit/s")
    ax1.legend(fontsize=8)
    lru = [r for r in rows if r["arm"] == "reactive"]
    caps = [r["capacity_mb"] for r in lru]
    ax2.plot(caps, [r["hit_ratio"] for r in lru], "o", label="measured (reactive LRU)")
    ax2.plot(caps, [r["che_hit_ratio"] for r in lru], "x", ms=9, label="Che at measured points")
    ax2.plot(caps, [r["compulsory_bound"] for r in lru], "_", ms=14, color="black",
             label="compulsory-miss bound (reactive)")
    if lru and caps:
        item_mb = sum(r["item_mb"] for r in lru) / len(lru)
        grid = [max(caps) * 1.5 * i / 40 for i in range(41)]
        ax2.plot(grid, [che_hit_ratio(pop, g * 2 ** 20 / (item_mb * 1e6)) for g in grid], "-", lw=1,
                 color="grey", label=f"Che (item = {item_mb:.2f} MB session)")
    pro = [r for r in rows if r["arm"] == "proactive"]
    ax2.plot([r["capacity_mb"] for r in pro], [r["hit_ratio"] for r in pro], "s", label="measured (proactive)")
    ax2.set_xlabel("OCA cache size (MiB)")
    ax2.set_ylabel("request hit ratio")
    ax2.set_ylim(0, 1)
    ax2.legend(fontsize=8)
    fig.suptitle("fill: diurnal day, night fill window, LRU vs Che")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# figures fixed by the seeded request set (with --abr fixed; LRU order under concurrency may still vary)
STABLE = ("sessions", "hit_ratio", "byte_hit_ratio", "compulsory_bound", "capacity_miss_ratio",
          "che_hit_ratio", "item_mb")


SCENARIO = Scenario(
    name="fill", settings=settings, body=body, summarize=summarize, format_table=format_table,
    tables=("links_ts", "links", "requests", "fills", "sessions", "slots", "steering"),
    key=("arm", "capacity_mb"),
    stable=STABLE, manifest=lambda cfg: {"runs": _runs(cfg), "history": HISTORY_DEFAULTS,
                                         "fill_mode": "network (embedded); IXP site staged"})

def run(a) -> int:
    from harness.runner import run as run_scenario
    return run_scenario(a, SCENARIO)
