"""Scenario `fill`: a day compressed into seconds. Night first (the fill window: the control plane
pushes its fill plan, few viewers), then demand follows a diurnal curve (player processes
started per slot, counts from the curve, seeded titles from the regional Zipf popularity).
Arms: `none` (no OCAs: everything from the origin), `reactive` (embedded OCAs as pull-through
LRU caches of the IXP site, no push; steering sends viewers to their nearest OCA, which fetches
what it lacks), `proactive` (Open Connect: the control plane pushes a fill plan predicted from
yesterday's requests at night, tier by tier; by day an OCA serves what it holds and answers a
content miss for the rest, which steering sends to the IXP site), plus extra `reactive` runs
at other cache sizes (the sweep; Che's approximation and a trace-driven replay of the run's own
request stream through the store's LRU are set beside them).

Every arm starts in steady state, as a day of a running deployment does (FILL_MODE, in the
manifest): the IXP site holds the whole catalog; `proactive` embedded stores hold last night's
plan (predicted from HISTORY_DAYS days of sessions up to the day before yesterday), so tonight's
push moves what the prediction changed and today's release (`release`: a popular title that no
history holds, in no store; the IXP site fills it from the origin first); `reactive` embedded
stores hold what their LRU held after yesterday's sessions. Capacities are rules relative to the catalog (harness.sizing): the three arms use
the run's embedded rule (default head:0.95, as Open Connect sizes a storage appliance; `--set
embedded_capacity=...`), the sweep `sweep`.

Saved tidy tables (`arm`, `capacity` (the rule) and `capacity_mb` (mean embedded MiB) columns):
links_ts.csv (controller port counters of every plan link, sampled each second), links.csv
(kernel counter deltas per run: the cross-check), requests.csv (OCA access-log segment
requests with their `cache` field), fills.csv (bytes each OCA pulled upstream: push fill and
pull-through), sessions.csv, slots.csv, ocas.csv (each OCA's capacity and what was staged).
`summarize(run_dir)` (pure) writes summary.csv, upstream_ts.csv, oca_summary.csv and fill.png.
"""
from __future__ import annotations

import collections
import json
import math
import time
from pathlib import Path

import pandas as pd

from contracts.cachetheory import che_hit_ratio, che_hit_ratio_sized
from harness.rundir import table_path, write_csv
from harness.runner import Scenario
from harness.modelscale import ModelScale, apply
from harness.staging import HISTORY_DEFAULTS
from scenarios.logs import day_tables, read_steering, read_table
from harness import progress
from scenarios.traffic import (UPSTREAM, LinkSampler, border_upstream_bytes, counter_delta,
                               hit_ratios, per_second, startup_times, upstream_mbps, viewer_requests,
                               viewers_by_isp)

ARMS = ("none", "reactive", "proactive")
# days of sessions a fill plan's popularity pools (Open Connect smooths several days of history);
# last night's plan (staged in `proactive`) pooled the same days shifted back by one
HISTORY_DAYS = 7
# today's release is the title ranked this by today's popularity: tonight's push carries it
# first (Open Connect pre-positions launches), a pull-through cache meets it at the peak
RELEASE_RANK = 2
# the fill window closes at this share of the night, so objects in flight land before the day
FILL_WINDOW_SHARE = 0.8
# each OCA's fill rate cap, scaled to what this emulator carries (Open Connect: 1.2 Gbit/s per
# storage appliance). Measured here: a 5-link relayed path runs ~35 Mbit/s in all before its
# relays take a core, so the 3 embedded OCAs fill together at 8 each (24 Mbit/s) after the IXP
# site alone at 30; the night is long enough for tonight's push at these rates.
FILL_RATE_MBPS = {"ixp": 30.0, "embedded": 8.0}
# the evening peak: the slots whose viewer count is at least this share of the busiest slot's
PEAK_SHARE = 0.8


# full size: a peak of 6 viewers per ISP (108 sessions per arm over the day) at the ladder / 10
FULL_SCALE = ModelScale(bitrate_divisor=10, viewer_factor=1.2)


def _settings(quick: bool) -> dict:
    """`sweep`: reactive runs at these embedded capacity rules besides the three arms' (the
    run's `capacity`: harness.sizing defaults, or `--set embedded_capacity=...`)."""
    if quick:
        return {"day_s": 64, "night_s": 40, "slots": 6, "window_slots": 2, "peak_per_isp": 3, "segments": 3,
                "catalog": {"seed": 1, "n_titles": 20, "duration_s": 12},
                "sweep": ["mb:60"], "fill_rate_mbps": FILL_RATE_MBPS}
    reference = {"day_s": 134, "night_s": 80, "slots": 12, "window_slots": 3, "peak_per_isp": 5, "segments": 3,
                 "catalog": {"seed": 1, "n_titles": 60, "duration_s": 20},
                 "sweep": ["mb:100", "mb:400"], "fill_rate_mbps": FILL_RATE_MBPS}
    return apply(reference, FULL_SCALE, sessions=("peak_per_isp",), flow_mbps=("fill_rate_mbps",),
                 store_rules=("sweep",))


def slot_starts(cfg: dict) -> list[float]:
    """When each slot starts (s after midnight): the night (`night_s`, the first `window_slots`
    slots) and the daytime (the rest of `day_s`) each split evenly. Without `night_s` every slot
    is day_s / slots long."""
    n, w = cfg["slots"], cfg["window_slots"]
    night = night_s(cfg)
    if not 0 < w < n or not 0 < night < cfg["day_s"]:
        raise ValueError(f"need 0 < window_slots < slots and 0 < night_s < day_s: {cfg}")
    day_slot = (cfg["day_s"] - night) / (n - w)
    return [i * night / w if i < w else night + (i - w) * day_slot for i in range(n)]


def night_s(cfg: dict) -> float:
    """Length of the night (fill window and after it the landing slack)."""
    return cfg.get("night_s", cfg["window_slots"] * cfg["day_s"] / cfg["slots"])


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
def _runs(cfg: dict) -> list[tuple[str, str]]:
    main = cfg["capacity"]["embedded"]
    return [("none", main), ("reactive", main), ("proactive", main)] + [("reactive", s) for s in cfg["sweep"]]


def settings(quick: bool) -> dict:
    cfg = _settings(quick)
    return {**cfg, "slot_counts": slot_counts(cfg["slots"], cfg["peak_per_isp"]),
            "release": release_title(cfg["catalog"], RELEASE_RANK)}


def release_title(catalog: dict, rank: int) -> str:
    """The title released today: the `rank`-th most popular of today's catalog popularity (a
    hit: nobody watched it yesterday, so no history predicts it)."""
    from appliances.content import Catalog, CatalogSpec
    from appliances.fillplan import popularity_order
    return popularity_order(Catalog(CatalogSpec(**catalog)).popularity())[rank - 1]


def body(net, run_dir: Path, cfg: dict, seed: int, tables: dict) -> None:
    from emulation.probes import link_counters
    for arm, cap in _runs(cfg):
        print(f"fill: arm {arm} capacity {cap} ...", flush=True)
        progress.phase(f"arm {arm}, capacity {cap}")
        before = link_counters(net)
        tags = _run_day(net, run_dir, arm, cap, cfg, seed, tables)
        tables["links"] += [{**tags, **r} for r in counter_delta(before, link_counters(net))]


def _options(arm: str, cap: str, cfg: dict, seed: int, fill_window_s: float):
    """Every arm starts the day in steady state: `reactive` (pull-through) embedded stores hold
    what their LRU held after yesterday's sessions; `proactive` stores hold last night's plan
    (from the day before yesterday's sessions), so tonight's push moves only the change; both
    IXP sites hold the whole catalog (staged)."""
    from harness.services import ServiceOptions
    return ServiceOptions(arm="origin" if arm == "none" else "embedded", catalog=cfg["catalog"],
                          capacity_rules={"embedded": cap, "ixp": cfg["capacity"]["ixp"]},
                          stage_tiers=() if arm == "none" else ("ixp", "embedded"),
                          lru_tiers=("embedded",) if arm == "reactive" else (),
                          stage_history={"seed": seed, "days": HISTORY_DAYS, "skip_days": 1}
                          if arm == "proactive" else None,
                          miss=cfg["miss"] if arm == "proactive" else "proxy",
                          history={"seed": seed, "days": HISTORY_DAYS},
                          fill="network" if arm == "proactive" else "none",
                          fill_segments_per_title=cfg["segments"], abr=cfg["abr"],
                          launch_titles=(cfg["release"],), fill_rate_mbps=cfg["fill_rate_mbps"],
                          # manifests warm before midnight (the control plane pushes the fill
                          # plan only then): hashing them took a core away from the night's fill
                          control_args=("--fill-window-s", str(fill_window_s)))


def _run_day(net, run_dir: Path, arm: str, cap: str, cfg: dict, seed: int, tables: dict) -> dict:
    """One arm's day; its tags (arm, capacity rule, embedded OCAs' mean capacity_mb)."""
    from harness.services import Services
    starts = slot_starts(cfg) + [cfg["day_s"]]
    window_s = night_s(cfg)
    fill_window_s = FILL_WINDOW_SHARE * window_s
    spt = cfg["segments"]
    opts = _options(arm, cap, cfg, seed, fill_window_s)
    svc = Services(net, run_dir / "arms" / f"{arm}-{cap.replace(':', '')}", opts)
    procs = []
    try:
        svc.start()
        tags = {"arm": arm, "capacity": cap, "capacity_mb": _mean_capacity_mb(svc.dep)}
        tables["ocas"] += [{**tags, "oca": o["name"], "tier": o["tier"], "oca_capacity_mb": round(o["capacity_mb"], 3),
                            "staged": svc.staged.get(o["name"], {}).get("state", "empty"),
                            "staged_mb": round(svc.staged.get(o["name"], {}).get("bytes", 0) / 1e6, 3),
                            "staged_titles": svc.staged.get(o["name"], {}).get("titles", "")}
                           for o in svc.dep["ocas"]]
        ocas_rows = tables["ocas"][-len(svc.dep["ocas"]):] if svc.dep["ocas"] else []
        # midnight: the fill window opens when the control plane pushes (once manifests are warm)
        t0 = svc.fill_push_unix() if opts.fill == "network" else time.time()
        by_isp = viewers_by_isp(net.plan)
        with LinkSampler(net, t0, tags) as sampler:
            for i, count in enumerate(cfg["slot_counts"]):
                time.sleep(max(0.0, t0 + starts[i] - time.time()))
                slot_s = starts[i + 1] - starts[i]
                for j, (isp, hosts) in enumerate(sorted(by_isp.items())):
                    if count == 0:
                        continue
                    host = hosts[i % len(hosts)]
                    tag = f"{host}-s{i:02d}"
                    procs.append(svc.play(host, count, spt, seed=seed * 10000 + i * 100 + j, tag=tag,
                                          ramp_s=slot_s * 0.8, max_wall_s=120))
                tables["slots"].append({**tags, "slot": i, "t_s": round(starts[i], 3),
                                        "viewers_per_isp": count, "in_window": i < cfg["window_slots"]})
            time.sleep(max(0.0, t0 + cfg["day_s"] - time.time()))
            svc.wait_players(procs, 120)
            time.sleep(1.5)
        fill_status = {o["name"]: svc.oca_status(o["name"], "/fill/status") for o in svc.dep["ocas"]} \
            if opts.fill == "network" else {}
        tables["links_ts"] += sampler.rows
        if sampler.errors:
            print(f"fill: {sampler.errors} controller samples failed", flush=True)
    finally:
        svc.stop()
    for row in ocas_rows:  # how far tonight's push got: objects of its plan filled or already held
        st = fill_status.get(row["oca"], {})
        row.update({k: st.get(k, "") for k in ("state", "total", "filled", "present", "failed", "no_room")})
        row["fill_state"] = row.pop("state")
    for k, rows in day_tables(svc.logs, tags, t0, t0 + window_s).items():
        tables[k] += rows
    tables["steering"] += [{**tags, "t_s": round(d["ts"] - t0, 3), **{k: v for k, v in d.items() if k != "arm"}}
                           for d in read_steering(svc.logs / "steering.jsonl", arm)]
    return tags


def _mean_capacity_mb(dep: dict) -> float:
    """Mean capacity of the embedded OCAs (MiB), nan without any (arm none)."""
    caps = [o["capacity_mb"] for o in dep["ocas"] if o["tier"] == "embedded"]
    return round(sum(caps) / len(caps), 1) if caps else float("nan")


# ---- summary ----------------------------------------------------------------------------
def peak_window(starts: list[float], counts: list[int], day_s: float,
                share: float = PEAK_SHARE) -> tuple[float, float]:
    """The evening peak of the diurnal curve: from the start of the first slot whose viewer count
    is at least `share` of the largest to the end of the last such slot (the next slot's start,
    or day_s). Pure; ValueError without any viewer."""
    top = max(counts, default=0)
    if top <= 0 or len(starts) != len(counts):
        raise ValueError(f"need one start per slot and some viewers: {starts}, {counts}")
    peak = [i for i, c in enumerate(counts) if c >= share * top]
    ends = list(starts[1:]) + [day_s]
    return starts[peak[0]], ends[peak[-1]]


def peak_mean_mbps(per_s: dict[float, float], window: tuple[float, float]) -> float:
    """Mean upstream Mbit/s over the samples inside the peak window [a, b); nan without any.
    Over the peak hours rather than the busiest seconds: a compressed day's sessions are
    seconds long, so the busiest seconds are whichever bursts happened to line up."""
    from contracts.stats import mean
    a, b = window
    inside = [v for t, v in per_s.items() if a <= t < b]
    return mean(inside) if inside else float("nan")


def summarize(run_dir: Path) -> list[dict]:
    """summary.csv, upstream_ts.csv, oca_summary.csv and fill.png from the tidy tables; needs no
    root and no network."""
    from appliances.content import Catalog, CatalogSpec
    from topologies.plan import Plan
    plan = Plan.from_json((run_dir / "plan.json").read_text())
    cfg = json.loads((run_dir / "manifest.json").read_text())["settings"]
    roles = {n.name: n.role for n in plan.nodes}
    t = {k: read_table(table_path(run_dir, k)) for k in ("links_ts", "links", "requests", "fills", "sessions", "ocas")}
    t["requests"] = viewer_requests(t["requests"], plan)
    for k, v in t.items():  # a run from before capacity rules: its capacity was mb:<capacity_mb>
        if len(v) and "capacity" not in v and "capacity_mb" in v:
            t[k] = v.assign(capacity=[f"mb:{float(c):g}" for c in v["capacity_mb"]])
    window_s = night_s(cfg)
    catalog = Catalog(CatalogSpec(**cfg["catalog"]))
    pop = list(catalog.popularity().values())
    rows, series, per_oca = [], [], []
    runs = t["links_ts"][["arm", "capacity", "capacity_mb"]].drop_duplicates(["arm", "capacity"]) \
        if len(t["links_ts"]) else pd.DataFrame()
    for arm, cap, cap_mb in runs.itertuples(index=False):
        sel = {k: v[(v["arm"] == arm) & (v["capacity"] == cap)] if len(v) else v for k, v in t.items()}
        ts = per_second(sel["links_ts"], roles)
        tags = {"arm": arm, "capacity": cap, "capacity_mb": float(cap_mb)}
        series += [{**tags, **r} for r in ts.to_dict("records")]
        per_oca += _per_oca(sel["requests"], tags)
        rows.append({**tags, **_run_figures(sel, ts, roles, window_s, pop, arm, float(cap_mb), catalog,
                                            peak_window(slot_starts(cfg), cfg["slot_counts"], cfg["day_s"]),
                                            cfg["segments"])})
    write_csv(run_dir / "summary.csv", rows)
    write_csv(run_dir / "upstream_ts.csv", series)
    write_csv(run_dir / "oca_summary.csv", per_oca)
    if rows:
        _figure(rows, series, window_s, pop, run_dir / "fill.png")
    return rows


def lru_replay(requests: pd.DataFrame, catalog, capacity_mb: dict[str, float],
               staged: dict[str, list[str]] | None = None, segments: int = 1) -> float:
    """Request hit ratio of the store's own LRU (appliances.store.EvictionPolicy) replaying this
    run's viewer requests per OCA (capacity_mb[oca] MiB) in time order, with no network: the
    trace-driven figure to set beside the emulated one. Each OCA starts as its store did:
    `staged[oca]`'s titles (least recent first), each its first `segments` segments at every
    rung, or empty. They differ by concurrency only (a request that joins a pull in flight is a
    hit here only if the pull finished first). Pure; nan without requests."""
    from appliances.store import EvictionPolicy
    from scenarios.traffic import CACHE_OUTCOMES
    rq = requests[(requests["oca"] != "origin") & requests["cache"].isin(CACHE_OUTCOMES)] if len(requests) else requests
    if rq.empty:
        return float("nan")
    hits = 0
    for oca, mine in rq.sort_values("t_s", kind="stable").groupby("oca", sort=True):
        lru, cap = EvictionPolicy("lru"), int(float(capacity_mb[oca]) * 2**20)

        def put(key) -> None:
            size = catalog.segment_size(*key)
            victims = lru.victims(size, cap)
            for v in victims or ():
                lru.remove(v)
            if victims is not None:
                lru.add(key, size)
        for t in (staged or {}).get(oca, []):
            for k in catalog.spec.ladder_kbps:
                for i in range(segments):
                    put((t, k, i))
        for path in mine["path"]:
            key = catalog.parse_path(path)
            if key in lru:
                hits += 1
                lru.touch(key)
            else:
                put(key)
    return hits / len(rq)


def _per_oca(requests: pd.DataFrame, tags: dict) -> list[dict]:
    """Request and byte hit ratio of each OCA in one run."""
    out = []
    for oca, mine in requests[requests["oca"] != "origin"].groupby("oca", sort=True) if len(requests) else ():
        o_req, o_byte = hit_ratios(mine)
        out.append({**tags, "oca": oca, "requests": len(mine),
                    "hit_ratio": round(o_req, 3), "byte_hit_ratio": round(o_byte, 3)})
    return out


def _run_figures(sel: dict[str, pd.DataFrame], ts: pd.DataFrame, roles: dict[str, str], window_s: float,
                 pop: list[float], arm: str, cap: float, catalog, peak: tuple[float, float],
                 segments: int) -> dict:
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
    # Che's item: a title as the caches hold it (its planned segments at every rung)
    item_bytes = mean(catalog.title_bytes(t, segments) for t in catalog.titles())
    che = che_hit_ratio(pop, float(cap) * 2 ** 20 / item_bytes) if arm != "none" and len(sess_bytes) else float("nan")
    # Che's file: a title at one rung, as the stores keep what viewers asked for (the run's own mix)
    share = rung_share(sel["requests"], catalog)
    che_file = che_hit_ratio_sized(*file_items(catalog, share, segments), float(cap) * 2 ** 20) \
        if arm != "none" and share else float("nan")
    startups = startup_times(se)
    return {
        "sessions": len(se), "sessions_ok": int((se["status"] == "ok").sum()) if len(se) else 0,
        "startup_s": round(float(startups.median()), 3) if len(startups) else float("nan"),
        "upstream_night_mb": round(night / 1e6, 2), "upstream_day_mb": round(day / 1e6, 2),
        "upstream_peak_mbps": round(max((v for k, v in per_s.items() if k > window_s), default=0.0), 2),
        "upstream_peak_mean_mbps": round(peak_mean_mbps(per_s, peak), 2),
        "upstream_kernel_mb": round(border_upstream_bytes(sel["links"], roles) / 1e6, 2),
        "served_day_mb": round(served_day / 1e6, 2),
        # sessions whose manifest put the origin first: with OCAs deployed, only when the
        # controller left every OCA out as a health miss (steering.csv `excluded` says why)
        "origin_first_sessions": int((se["first_location"] == "origin").sum()) if "first_location" in se else 0,
        "upstream_day_share": round(day / served_day, 3) if served_day else float("nan"),
        # push fill (the plan) inside and outside the night; pull-through by day is apart
        "fill_in_window_mb": round(fill_in / 1e6, 2), "fill_outside_mb": round(fill_out / 1e6, 2),
        "pull_mb": round(pull / 1e6, 2),
        "lru_replay_hit_ratio": round(lru_replay(sel["requests"], catalog, _oca_capacity_mb(sel["ocas"], cap),
                                                 _staged_titles(sel["ocas"]), segments), 3)
        if arm == "reactive" else float("nan"),
        # the same replay with stores that never evict: the misses no capacity avoids (compulsory:
        # files neither staged nor asked for earlier in the day); LRU's stack property keeps it >= the above
        "infinite_cache_hit_ratio": round(lru_replay(sel["requests"], catalog, _unbounded(sel["requests"]),
                                                     _staged_titles(sel["ocas"]), segments), 3)
        if arm == "reactive" else float("nan"),
        "hit_ratio": round(req_hr, 3), "byte_hit_ratio": round(byte_hr, 3),
        "che_hit_ratio": round(che, 3), "item_mb": round(item_bytes / 1e6, 3),
        "che_file_hit_ratio": round(che_file, 3),
    }


def _unbounded(requests: pd.DataFrame) -> dict[str, float]:
    """Every OCA of the requests with a store larger than the catalog could ever fill (MiB)."""
    return {o: float(2 ** 40) for o in (requests["oca"].unique() if len(requests) else [])}


def rung_share(requests: pd.DataFrame, catalog) -> dict[int, float]:
    """kbps -> share of the run's segment requests to OCAs at that rung (pure); {} without any."""
    rq = requests[requests["oca"] != "origin"] if len(requests) else requests
    counts: dict[int, int] = {}
    for path in (rq["path"] if len(rq) else []):
        try:
            _, kbps, _ = catalog.parse_path(str(path))
        except ValueError:  # not a segment path (a /health probe, say)
            continue
        counts[kbps] = counts.get(kbps, 0) + 1
    total = sum(counts.values())
    return {k: n / total for k, n in sorted(counts.items())} if total else {}


def file_items(catalog, share: dict[int, float], segments: int) -> tuple[list[float], list[float]]:
    """Che's items as the caches see them: one per (title, rung) with request rate
    popularity[title] x share[rung] and the bytes of the title's first `segments` segments at
    that rung (pure)."""
    ps, sizes = [], []
    for title, p in catalog.popularity().items():
        for kbps, sh in share.items():
            ps.append(p * sh)
            sizes.append(float(sum(catalog.segment_size(title, kbps, i) for i in range(segments))))
    return ps, sizes


def _oca_capacity_mb(ocas: pd.DataFrame, default_mb: float) -> dict[str, float]:
    """oca -> its capacity (MiB) in one run's rows of ocas.csv; default_mb for an OCA not there
    (a run from before ocas.csv)."""
    known = dict(zip(ocas["oca"], ocas["oca_capacity_mb"].astype(float))) if len(ocas) else {}
    return collections.defaultdict(lambda: default_mb, known)


def _staged_titles(ocas: pd.DataFrame) -> dict[str, list[str]]:
    """oca -> the titles its store held at midnight (least recent first), from ocas.csv."""
    if not len(ocas) or "staged_titles" not in ocas:
        return {}
    return {o: str(t).split() if isinstance(t, str) else [] for o, t in zip(ocas["oca"], ocas["staged_titles"])}


def format_table(rows: list[dict]) -> str:
    cols = ["arm", "capacity", "capacity_mb", "sessions_ok", "startup_s", "upstream_night_mb", "upstream_day_mb",
            "upstream_day_share", "origin_first_sessions", "upstream_peak_mbps", "upstream_peak_mean_mbps",
            "upstream_kernel_mb",
            "fill_in_window_mb", "fill_outside_mb", "pull_mb",
            "hit_ratio", "byte_hit_ratio", "lru_replay_hit_ratio", "infinite_cache_hit_ratio",
            "che_hit_ratio", "che_file_hit_ratio"]
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
    main_cap = rows[0]["capacity"]
    for r in rows:
        if r["capacity"] != main_cap:
            continue
        per_s: dict[float, float] = {}
        for s in series:
            if s["arm"] == r["arm"] and s["capacity"] == main_cap and s["cls"] in UPSTREAM:
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
    ax2.plot(caps, [r["lru_replay_hit_ratio"] for r in lru], "+", ms=10, label="trace-driven LRU (own stream)")
    ax2.plot(caps, [r.get("infinite_cache_hit_ratio", float("nan")) for r in lru], "v", ms=7,
             label="same stream, stores never evict")
    ax2.plot(caps, [r.get("che_file_hit_ratio", float("nan")) for r in lru], "1", ms=10,
             label="Che (item = a file: title x rung, run's mix)")
    if lru and caps:
        item_mb = sum(r["item_mb"] for r in lru) / len(lru)
        grid = [max(caps) * 1.5 * i / 40 for i in range(41)]
        ax2.plot(grid, [che_hit_ratio(pop, g * 2 ** 20 / (item_mb * 1e6)) for g in grid], "-", lw=1,
                 color="grey", label=f"Che (item = a title, {item_mb:.1f} MB)")
    pro = [r for r in rows if r["arm"] == "proactive"]
    ax2.plot([r["capacity_mb"] for r in pro], [r["hit_ratio"] for r in pro], "s", label="measured (proactive)")
    ax2.set_xlabel("OCA cache size (MiB)")
    ax2.set_ylabel("request hit ratio")
    ax2.set_ylim(0, 1.04)
    ax2.legend(fontsize=8)
    fig.suptitle("fill: diurnal day, night fill window, LRU vs Che")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


FILL_MODE = ("steady state: IXP sites staged with the whole catalog but today's release; proactive "
             "embedded stores staged with last night's plan (history a night older), tonight's push "
             "(the release first, then what the prediction changed) over the network in the window, "
             "IXP tier first; reactive embedded stores staged with yesterday's LRU state (the history "
             "replayed through the store's LRU), pull-through by day")

# figures fixed by the seeded request set (with --abr fixed; LRU order under concurrency may still vary)
STABLE = ("sessions", "hit_ratio", "byte_hit_ratio",
          "che_hit_ratio", "item_mb", "che_file_hit_ratio")


SCENARIO = Scenario(
    name="fill", settings=settings, body=body, summarize=summarize, format_table=format_table,
    tables=("links_ts", "links", "requests", "fills", "sessions", "slots", "steering", "ocas"),
    key=("arm", "capacity"),
    stable=STABLE, manifest=lambda cfg: {"runs": _runs(cfg), "history": HISTORY_DEFAULTS,
                                         "fill_mode": FILL_MODE})

def run(a) -> int:
    from harness.runner import run as run_scenario
    return run_scenario(a, SCENARIO)
