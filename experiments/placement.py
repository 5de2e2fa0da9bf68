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

from .rundir import new_run_dir, write_csv, write_manifest

ARMS = ("origin", "ixp", "embedded")
# Doan, Bajpai, Crawford (INFOCOM 2020): embedded vs outside the ISP
DOAN = {"path_len_reduction_pct": (40, 50), "connect_time_reduction_pct": 64, "throughput_ratio": 3.0}


def _settings(quick: bool) -> dict:
    if quick:
        return {"viewers_per_host": 2, "segments": 6, "catalog": {"seed": 1, "n_titles": 8, "duration_s": 24},
                "capacity_mb": 60.0}
    return {"viewers_per_host": 4, "segments": 15, "catalog": {"seed": 1, "n_titles": 40, "duration_s": 60},
            "capacity_mb": 200.0}


def run(a) -> int:
    from topologies.build import Network, Options
    from topologies.catalog import by_name
    from topologies.fidelity import as_rows
    from topologies.ledger import install_signal_handlers
    from .cli import _overrides
    install_signal_handlers()
    cfg = _settings(a.quick)
    plan = by_name(a.name, _overrides(a.set))
    run_dir = new_run_dir("placement", a.out)
    (run_dir / "plan.json").write_text(plan.to_json())
    started = time.time()
    if a.no_verify:
        print("WARNING: fidelity gate skipped (--no-verify); results are marked unverified")
    net = Network(plan, Options(link_backend=a.link_backend, datapath=a.datapath, verify=not a.no_verify,
                                work_dir=run_dir / "logs" / "net", label="placement"))
    tables: dict[str, list] = {"chunks": [], "sessions": [], "links": [], "paths": [], "fill": []}
    with net:
        write_csv(run_dir / "fidelity.csv", as_rows(net.fidelity))
        for arm in ARMS:
            print(f"placement: arm {arm} ...", flush=True)
            _run_arm(net, run_dir, arm, cfg, a.seed, tables)
    for name, rows in tables.items():
        write_csv(run_dir / f"{name}.csv", rows)
    write_manifest(run_dir, scenario="placement", seed=a.seed, quick=a.quick, settings=cfg, arms=ARMS,
                   plan=plan.name, plan_hash=plan.plan_hash(), network=net.summary(),
                   fidelity_verified=not a.no_verify,
                   started=started, ended=time.time())
    summary = summarize(run_dir)
    print(format_table(summary))
    print(f"run folder: {run_dir}")
    return 0


def _run_arm(net, run_dir: Path, arm: str, cfg: dict, seed: int, tables: dict) -> None:
    from .measure import connect_ms, counter_delta, link_counters, median, ping_rtts, traceroute
    from .services import OCA_PORT, ServiceOptions, Services
    arm_dir = run_dir / "arms" / arm
    svc = Services(net, arm_dir, ServiceOptions(arm=arm, catalog=cfg["catalog"], capacity_mb=cfg["capacity_mb"],
                                                push_fill=arm != "origin",
                                                fill_segments_per_title=cfg["segments"]))
    try:
        svc.start()
        if svc.dep["ocas"]:
            for name, st in svc.wait_fill(240).items():
                tables["fill"].append({"arm": arm, "oca": name, **{k: st.get(k) for k in
                                       ("state", "total", "filled", "present", "failed", "no_room", "bytes")}})
        before = link_counters(net)
        viewers = [v.name for v in net.plan.nodes_of(role="viewer")]
        procs = [svc.play(v, cfg["viewers_per_host"], cfg["segments"], seed=seed * 1000 + i)
                 for i, v in enumerate(viewers)]
        svc.wait_players(procs, 600)
        after = link_counters(net)
        tables["links"] += [{"arm": arm, **r} for r in counter_delta(before, after)]
        for v in viewers:
            chunks = _read_csv(arm_dir / "logs" / f"chunks-{v}.csv")
            tables["chunks"] += [{"arm": arm, "host": v, **r} for r in chunks]
            for line in (arm_dir / "logs" / f"sessions-{v}.jsonl").read_text().splitlines():
                s = json.loads(line)
                s.pop("servers", None)
                tables["sessions"].append({"arm": arm, "host": v, **s})
            server = Counter(r["server"] for r in chunks).most_common(1)[0][0]
            addr = svc.server_addr(server)
            hops = traceroute(net, v, addr)
            tables["paths"].append({"arm": arm, "host": v, "server": server, "server_addr": addr,
                                    "hops": len(hops), "hops_answered": sum(h != "*" for h in hops),
                                    "path": " ".join(hops), "rtt_ms": median(ping_rtts(net, v, addr)),
                                    "connect_ms": median(connect_ms(net, v, addr, OCA_PORT))})
    finally:
        svc.stop()


def _read_csv(path: Path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f))


def _f(x) -> float:
    return float(x) if x not in ("", None) else float("nan")


def summarize(run_dir: Path) -> list[dict]:
    """summary.csv and placement.png from the tidy tables; needs no root and no network."""
    import statistics as st
    from topologies.plan import Plan
    from .measure import bytes_by_class
    plan = Plan.from_json((run_dir / "plan.json").read_text())
    chunks, sessions = _read_csv(run_dir / "chunks.csv"), _read_csv(run_dir / "sessions.csv")
    links, paths = _read_csv(run_dir / "links.csv"), _read_csv(run_dir / "paths.csv")
    tiers = {n.name: n.tier for n in plan.nodes if n.role == "oca"}
    rows = []
    for arm in ARMS:
        ch = [c for c in chunks if c["arm"] == arm]
        se = [s for s in sessions if s["arm"] == arm]
        pa = [p for p in paths if p["arm"] == arm]
        lk = [{**r, "to_node_bytes": int(r["to_node_bytes"]), "from_node_bytes": int(r["from_node_bytes"])}
              for r in links if r["arm"] == arm]
        if not ch:
            continue
        by_cls = bytes_by_class(lk, plan)
        total = sum(int(c["bytes"]) for c in ch)
        in_isp = sum(int(c["bytes"]) for c in ch if tiers.get(c["server"]) == "embedded")
        rows.append({
            "arm": arm, "sessions": len(se), "chunks": len(ch),
            "hops": st.median(int(p["hops"]) for p in pa),
            "rtt_ms": round(st.median(_f(p["rtt_ms"]) for p in pa), 2),
            "connect_ms": round(st.median(_f(p["connect_ms"]) for p in pa), 2),
            "ttfb_ms": round(st.median(_f(c["ttfb_ms"]) for c in ch), 1),
            "startup_s": round(st.median(_f(s["startup_s"]) for s in se), 3),
            "rebuffer_ratio": round(st.mean(_f(s["rebuffer_ratio"]) for s in se), 4),
            "mean_kbps": round(st.mean(_f(s["mean_kbps"]) for s in se), 1),
            "qoe_lin": round(st.mean(_f(s["qoe_lin"]) for s in se), 2),
            "served_mb": round(total / 1e6, 2),
            "transit_mb": round(by_cls.get("transit", 0) / 1e6, 2),
            "peering_mb": round(by_cls.get("peering", 0) / 1e6, 2),
            "in_isp_share": round(in_isp / total, 3) if total else 0.0,
        })
    write_csv(run_dir / "summary.csv", rows)
    _figure(rows, run_dir / "placement.png")
    return rows


def format_table(rows: list[dict]) -> str:
    cols = ["arm", "hops", "rtt_ms", "connect_ms", "ttfb_ms", "startup_s", "rebuffer_ratio", "mean_kbps",
            "transit_mb", "peering_mb", "in_isp_share"]
    lines = ["  ".join(f"{c:>12s}" for c in cols)]
    for r in rows:
        lines.append("  ".join(f"{r[c]:>12}" for c in cols))
    by = {r["arm"]: r for r in rows}
    if "embedded" in by and "origin" in by and by["origin"]["hops"]:
        e, o = by["embedded"], by["origin"]
        lines.append(f"embedded vs origin: path {100 * (1 - e['hops'] / o['hops']):.0f}% shorter "
                     f"(Doan et al.: 40-50%), connect time {100 * (1 - e['connect_ms'] / o['connect_ms']):.0f}% "
                     f"lower (Doan et al.: 64%)")
    return "\n".join(lines)


def _figure(rows: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    metrics = [("hops", "IP hops"), ("connect_ms", "TCP connect (ms)"), ("startup_s", "startup (s)"),
               ("mean_kbps", "mean bitrate (kbps)"), ("transit_mb", "transit (MB)"),
               ("in_isp_share", "share served in ISP")]
    fig, axes = plt.subplots(1, len(metrics), figsize=(3 * len(metrics), 3))
    arms = [r["arm"] for r in rows]
    for ax, (key, label) in zip(axes, metrics):
        ax.bar(arms, [r[key] for r in rows], color=["#c44e52", "#55a868", "#4c72b0"][:len(arms)])
        ax.set_title(label, fontsize=9)
        ax.tick_params(labelsize=8)
    fig.suptitle("placement: origin vs IXP vs embedded OCAs")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
