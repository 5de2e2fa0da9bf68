"""Scenario `placement`: the same seeded workload served from origin only, from the IXP site,
and from OCAs embedded in each ISP (plus the IXP). One network build and one fidelity gate;
the arms run one after another on it with fresh services and caches.

Saved tidy tables (one row per observation, `arm` column): chunks.csv, sessions.csv, links.csv
(bytes per link in the serve phase), paths.csv (per viewer host: server, hops, RTT, connect).
`summarize(run_dir)` rebuilds summary.csv and placement.png from them (used by `ocalab report`).
"""
from __future__ import annotations

import csv
import json
import time
from collections import Counter
from pathlib import Path

from harness.rundir import write_csv
from harness.runner import Scenario

ARMS = ("origin", "ixp", "embedded")
# Doan, Bajpai, Crawford (INFOCOM 2020): embedded vs outside the ISP
DOAN = {"path_len_reduction_pct": (40, 50), "connect_time_reduction_pct": 64, "throughput_ratio": 3.0}


def _settings(quick: bool) -> dict:
    if quick:
        return {"viewers_per_host": 2, "segments": 6, "catalog": {"seed": 1, "n_titles": 8, "duration_s": 24},
                "capacity_mb": 60.0}
    return {"viewers_per_host": 3, "segments": 12, "catalog": {"seed": 1, "n_titles": 40, "duration_s": 48},
            "capacity_mb": 200.0}


def body(net, run_dir: Path, cfg: dict, seed: int, tables: dict) -> None:
    for arm in ARMS:
        print(f"placement: arm {arm} ...", flush=True)
        _run_arm(net, run_dir, arm, cfg, seed, tables)


def _run_arm(net, run_dir: Path, arm: str, cfg: dict, seed: int, tables: dict) -> None:
    from scenarios.failover import read_access
    from emulation.probes import counter_delta, settled_counters
    from harness.services import ServiceOptions, Services
    from emulation.fidelity import wait_quiet
    arm_dir = run_dir / "arms" / arm
    svc = Services(net, arm_dir, ServiceOptions(arm=arm, catalog=cfg["catalog"], capacity_mb=cfg["capacity_mb"],
                                                push_fill=arm != "origin", abr=cfg["abr"],
                                                fill_segments_per_title=cfg["segments"]))
    try:
        svc.start()
        if svc.dep["ocas"]:
            for name, st in svc.wait_fill(240).items():
                tables["fill"].append({"arm": arm, "oca": name, **{k: st.get(k) for k in
                                       ("state", "total", "filled", "present", "failed", "no_room", "bytes")}})
        serve_t0 = time.time()
        before, ctl_before = settled_counters(net)  # the controller's 1 s polls catch up with the fill
        viewers = [v.name for v in net.plan.nodes_of(role="viewer")]
        procs = [svc.play(v, cfg["viewers_per_host"], cfg["segments"], seed=seed * 1000 + i)
                 for i, v in enumerate(viewers)]
        svc.wait_players(procs, 600)
        after, ctl_after = settled_counters(net)  # one more port-stat poll after the last byte
        tables["links"] += [{"arm": arm, **r} for r in counter_delta(before, after)]
        tables["links_ctl"] += [{"arm": arm, **r} for r in counter_delta(ctl_before, ctl_after)]
        access = [r for r in read_access(svc.logs, arm) if float(r["ts"]) >= serve_t0]  # push fill: fill.csv
        tables["access"] += access
        # probe paths on a quiet machine, as the fidelity gate does (a busy one inflates RTTs)
        busy = round(wait_quiet(), 3)
        for v in viewers:
            chunks = attach_cache(_read_csv(arm_dir / "logs" / f"chunks-{v}.csv"), access, net.plan.primary_ip(v))
            tables["chunks"] += [{"arm": arm, "host": v, **r} for r in chunks]
            for line in (arm_dir / "logs" / f"sessions-{v}.jsonl").read_text().splitlines():
                s = json.loads(line)
                s.pop("servers", None)
                tables["sessions"].append({"arm": arm, "host": v, **s})
            tables["paths"].append({"arm": arm, "host": v, **_path_row(net, svc, v, chunks), "cpu_busy": busy})
    finally:
        svc.stop()


def _path_row(net, svc, viewer: str, chunks: list[dict]) -> dict:
    """Hops (traceroute), RTT and TCP connect time from `viewer` to the server that sent most of its chunks."""
    from emulation.probes import connect_ms, median, ping_rtts, traceroute
    from harness.services import OCA_PORT
    server = Counter(r["server"] for r in chunks).most_common(1)[0][0]
    addr = svc.server_addr(server)
    hops = traceroute(net, viewer, addr)
    return {"server": server, "server_addr": addr, "hops": len(hops), "hops_answered": sum(h != "*" for h in hops),
            "path": " ".join(hops), "rtt_ms": median(ping_rtts(net, viewer, addr)),
            "connect_ms": median(connect_ms(net, viewer, addr, OCA_PORT))}


def attach_cache(chunks: list[dict], access: list[dict], client: str, max_skew_s: float = 30.0) -> list[dict]:
    """Each chunk with `cache` (hit, miss, ...) from the serving server's access-log row for the
    same client and path nearest in time (`unmatched` if none within max_skew_s). Pure."""
    index: dict[tuple, list[dict]] = {}
    for r in access:
        if r["client"] == client and int(r["status"]) in (200, 206):
            index.setdefault((r["server"], r["path"]), []).append(r)
    out = []
    for c in chunks:
        cands = index.get((c["server"], f"/v/{c['title']}/{c['kbps']}/{c['index']}"), [])
        best = min(cands, key=lambda r: abs(float(r["ts"]) - float(c["time"])), default=None)
        ok = best is not None and abs(float(best["ts"]) - float(c["time"])) <= max_skew_s
        out.append({**c, "cache": best["cache"] if ok else "unmatched"})
    return out


def _read_csv(path: Path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f))


def _f(x) -> float:
    return float(x) if x not in ("", None) else float("nan")


def summarize(run_dir: Path) -> list[dict]:
    """summary.csv and placement.png from the tidy tables; needs no root and no network.

    Byte figures come three ways: `payload_*` lays each logged response body over its plan path
    (seed-stable when the request set is, e.g. with --abr fixed), `transit_mb`/`peering_mb`/
    `local_mb` are kernel counters (wire bytes: headers, retransmissions, probes), and
    `ctl_vs_kernel_pct` is the largest gap between the controller's port counters and the
    kernel's over the link classes (the cross-check)."""
    import statistics as st
    from topologies.plan import Plan
    from emulation.probes import bytes_by_class, payload_by_class
    plan = Plan.from_json((run_dir / "plan.json").read_text())
    t = {n: _read_csv(run_dir / f"{n}.csv") if (run_dir / f"{n}.csv").exists() else []
         for n in ("chunks", "sessions", "links", "links_ctl", "paths", "access")}
    tiers = {n.name: n.tier for n in plan.nodes if n.role == "oca"}
    rows = []
    for arm in ARMS:
        ch, se, pa = ([r for r in t[k] if r["arm"] == arm] for k in ("chunks", "sessions", "paths"))
        if not ch:
            continue
        wire = bytes_by_class(_ints([r for r in t["links"] if r["arm"] == arm]), plan)
        ctl = bytes_by_class(_ints([r for r in t["links_ctl"] if r["arm"] == arm]), plan)
        payload = payload_by_class([r for r in t["access"] if r["arm"] == arm], plan, "origin")
        total = sum(int(c["bytes"]) for c in ch)
        in_isp = sum(int(c["bytes"]) for c in ch if tiers.get(c["server"]) == "embedded")
        at_oca = [c for c in ch if c["server"] in tiers]
        rows.append({
            "arm": arm, "sessions": len(se), "sessions_ok": sum(x.get("status") == "ok" for x in se),
            "chunks": len(ch),
            "servers": " ".join(f"{p['host']}={p['server']}" for p in sorted(pa, key=lambda p: p["host"])),
            "hops": st.median(int(p["hops"]) for p in pa),
            "rtt_ms": round(st.median(_f(p["rtt_ms"]) for p in pa), 2),
            "connect_ms": round(st.median(_f(p["connect_ms"]) for p in pa), 2),
            "ttfb_ms": round(st.median(_f(c["ttfb_ms"]) for c in ch), 1),
            "ttfb_hit_ms": _median_of(ch, "ttfb_ms", ("hit",)),
            "ttfb_miss_ms": _median_of(ch, "ttfb_ms", MISS),
            "startup_s": _stat(st.median, se, "startup_s", 3),
            "rebuffer_ratio": _stat(st.mean, se, "rebuffer_ratio", 4),
            "mean_kbps": _stat(st.mean, se, "mean_kbps", 1),
            "qoe_lin": _stat(st.mean, se, "qoe_lin", 2),
            "served_mb": round(total / 1e6, 3),
            "oca_hit_ratio": round(sum(c["cache"] in HIT for c in at_oca) / len(at_oca), 4) if at_oca else "",
            "in_isp_share": round(in_isp / total, 4) if total else 0.0,
            **{f"payload_{c}_mb": round(payload.get(c, 0) / 1e6, 3) for c in CLASSES},
            **{f"{c}_mb": round(wire.get(c, 0) / 1e6, 2) for c in CLASSES},
            "ctl_vs_kernel_pct": _gap_pct(ctl, wire) if t["links_ctl"] else "",
        })
    write_csv(run_dir / "summary.csv", rows)
    _figure(rows, run_dir / "placement.png")
    return rows


HIT = ("hit", "coalesced")  # served from the OCA's store, or joined a pull already in flight
MISS = ("fill", "coalesced")  # waited for a pull from upstream
CLASSES = ("transit", "peering", "backbone", "internal", "access")
# figures that depend on the seeded request set only (identical across runs with --abr fixed)
STABLE = ("sessions", "chunks", "servers", "hops", "served_mb", "oca_hit_ratio", "in_isp_share",
          *(f"payload_{c}_mb" for c in CLASSES))


def _ints(rows: list[dict]) -> list[dict]:
    return [{**r, "to_node_bytes": int(r["to_node_bytes"]), "from_node_bytes": int(r["from_node_bytes"])}
            for r in rows]


def _stat(fn, rows: list[dict], col: str, digits: int) -> float | str:
    """fn over the finite values of `col` (a failed session may have none); "" if there are none."""
    import math
    xs = [x for x in (_f(r.get(col)) for r in rows) if math.isfinite(x)]
    return round(fn(xs), digits) if xs else ""


def _median_of(rows: list[dict], col: str, caches: tuple[str, ...]) -> float | str:
    import statistics as st
    xs = [_f(r[col]) for r in rows if r.get("cache") in caches]
    return round(st.median(xs), 1) if xs else ""


def _gap_pct(ctl: dict[str, int], kernel: dict[str, int]) -> float:
    """Largest relative gap between controller and kernel byte counts over the link classes
    that carried at least 1 MB."""
    gaps = [abs(ctl.get(c, 0) - b) / b * 100 for c, b in kernel.items() if b >= 1e6]
    return round(max(gaps), 3) if gaps else 0.0


def format_table(rows: list[dict]) -> str:
    cols = ["arm", "hops", "rtt_ms", "connect_ms", "ttfb_hit_ms", "ttfb_miss_ms", "startup_s", "rebuffer_ratio",
            "mean_kbps", "transit_mb", "peering_mb", "in_isp_share"]
    lines = ["  ".join(f"{c:>12s}" for c in cols)]
    for r in rows:
        lines.append("  ".join(f"{r[c]:>12}" for c in cols))
    by = {r["arm"]: r for r in rows}
    if "embedded" in by and "origin" in by and by["origin"]["hops"]:
        e, o = by["embedded"], by["origin"]
        lines.append(f"embedded vs origin: path {100 * (1 - e['hops'] / o['hops']):.0f}% shorter "
                     f"(Doan et al.: 40-50%), connect time {100 * (1 - e['connect_ms'] / o['connect_ms']):.0f}% "
                     f"lower (Doan et al.: 64%)")
    gaps = [r["ctl_vs_kernel_pct"] for r in rows if r.get("ctl_vs_kernel_pct") not in ("", None)]
    if gaps:
        lines.append(f"bytes per link class: controller port counters within {max(map(float, gaps))}% "
                     f"of kernel counters")
    return "\n".join(lines)


def _figure(rows: list[dict], path: Path) -> None:
    from harness.figures import bar_panels
    metrics = [("hops", "IP hops"), ("connect_ms", "TCP connect (ms)"), ("startup_s", "startup (s)"),
               ("mean_kbps", "mean bitrate (kbps)"), ("transit_mb", "transit (MB)"),
               ("in_isp_share", "share served in ISP")]
    bar_panels(rows, metrics, "placement: origin vs IXP vs embedded OCAs", path,
               ["#c44e52", "#55a868", "#4c72b0"], panel_w=3.0)


SCENARIO = Scenario(
    name="placement", settings=_settings, body=body, summarize=summarize, format_table=format_table,
    tables=("chunks", "sessions", "links", "links_ctl", "paths", "fill", "access"), stable=STABLE,
    manifest=lambda cfg: {"arms": ARMS})


def run(a) -> int:
    from harness.runner import run as run_scenario
    return run_scenario(a, SCENARIO)
