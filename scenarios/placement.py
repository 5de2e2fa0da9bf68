"""Scenario `placement`: the same seeded workload served from origin only, from the IXP site,
and from OCAs embedded in each ISP (plus the IXP). One network build and one fidelity gate;
the arms run one after another on it with fresh services and caches.

Saved tidy tables (one row per observation, `arm` column): chunks.csv, sessions.csv, links.csv
(bytes per link in the serve phase, kernel counters), links_relay.csv (the same from the link
relays' own counters, with TCP payload), paths.csv (per viewer host: server, hops, RTT, connect).
`summarize(run_dir)` rebuilds summary.csv, bytes.csv (scenarios.bytecheck: kernel, relay and log
bytes per link class side by side) and placement.png from them (used by `ocalab report`).
"""
from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pandas as pd

from contracts.deployment import OCA_PORT, TIER_RANK
from harness.rundir import table_path, write_csv
from harness.runner import Scenario
from harness.staging import HISTORY_DEFAULTS
from scenarios import handshakes
from scenarios.bytecheck import TOLERANCE_PCT, byte_rows, headline, relay_delta
from scenarios.logs import attach_cache, of_arm, read_access, read_rows, read_table, sessions
from scenarios.traffic import HIT, bytes_by_class, counter_delta, payload_by_class
from harness import progress
from harness.modelscale import ModelScale, apply

ARMS = ("origin", "ixp", "embedded")
# Doan, Bajpai, Crawford (INFOCOM 2020): embedded vs outside the ISP
# Doan, Bajpai, Crawford (INFOCOM 2020): ISP-embedded OCAs against off-net ones (our `ixp` arm)
DOAN = {"path_len_reduction_pct": (40, 50), "connect_time_reduction_pct": 64, "throughput_ratio": 3.0}


# full size: 17 viewers per host (102 sessions per arm) at the ladder / 10 (harness.modelscale)
FULL_SCALE = ModelScale(bitrate_divisor=10, viewer_factor=17 / 3)


def _settings(quick: bool) -> dict:
    """Catalog and workload; OCA capacities come from cfg["capacity"] (harness.sizing rules:
    embedded holds the predicted 95% head, the IXP site the whole catalog)."""
    if quick:
        return {"viewers_per_host": 2, "segments": 6, "ramp_s": 0.0,
                "catalog": {"seed": 1, "n_titles": 12, "duration_s": 24}}
    # arrivals spread over one session's length (48 s), as viewers press play at different times
    reference = {"viewers_per_host": 3, "segments": 12, "ramp_s": 48.0,
                 "catalog": {"seed": 1, "n_titles": 40, "duration_s": 48}}
    return apply(reference, FULL_SCALE, sessions=("viewers_per_host",))


def body(net, run_dir: Path, cfg: dict, seed: int, tables: dict) -> None:
    for arm in ARMS:
        print(f"placement: arm {arm} ...", flush=True)
        progress.phase(f"arm {arm}")
        _run_arm(net, run_dir, arm, cfg, seed, tables)


def _run_arm(net, run_dir: Path, arm: str, cfg: dict, seed: int, tables: dict) -> None:
    from emulation.probes import relay_counters, settled_counters
    from harness.services import STEADY_STATE, ServiceOptions, Services
    from emulation.fidelity import wait_quiet
    arm_dir = run_dir / "arms" / arm
    svc = Services(net, arm_dir, ServiceOptions(
        arm=arm, catalog=cfg["catalog"], capacity_rules=cfg["capacity"], miss=cfg["miss"], abr=cfg["abr"],
        stage_tiers=STEADY_STATE, history={"seed": seed},
        fill_segments_per_title=cfg["segments"], tls=cfg.get("tls", False)))
    try:
        svc.start()  # steady state: every OCA holds its fill plan (harness.staging) before the clock
        tables["fill"] += [{"arm": arm, "oca": name, **st} for name, st in svc.staged.items()]
        serve_t0 = time.time()
        before, ctl_before = settled_counters(net)  # the controller's 1 s polls catch up with the fill
        rly_before = relay_counters(net)  # right after the kernel's reading: the same quiet moment
        viewers = [v.name for v in net.plan.nodes_of(role="viewer")]
        procs = [svc.play(v, cfg["viewers_per_host"], cfg["segments"], seed=seed * 1000 + i, ramp_s=cfg["ramp_s"])
                 for i, v in enumerate(viewers)]
        svc.wait_players(procs, 600)
        after, ctl_after = settled_counters(net)  # one more port-stat poll after the last byte
        rly_after = relay_counters(net)
        tables["links"] += [{"arm": arm, **r} for r in counter_delta(before, after)]
        rly_rows, restarted = relay_delta(rly_before, rly_after)
        if restarted:
            print(f"placement: arm {arm}: relays restarted, left out of links_relay: {restarted}", flush=True)
        tables["links_relay"] += [{"arm": arm, **r} for r in rly_rows]
        tables["links_ctl"] += [{"arm": arm, **r} for r in counter_delta(ctl_before, ctl_after)]
        access = [r for r in read_access(svc.logs, arm) if float(r["ts"]) >= serve_t0]  # push fill: fill.csv
        tables["access"] += access
        # probe paths on a quiet machine, as the fidelity gate does (a busy one inflates RTTs)
        busy = round(wait_quiet(), 3)
        for v in viewers:
            chunks = attach_cache(read_rows(svc.logs / f"chunks-{v}.csv", optional=False), access,
                                  net.plan.primary_ip(v))
            tables["chunks"] += [{"arm": arm, "host": v, **r} for r in chunks]
            tables["sessions"] += [{"arm": arm, "host": v, **s} for s in sessions(svc.logs / f"sessions-{v}.jsonl")]
            tables["paths"].append({"arm": arm, "host": v, **_path_row(net, svc, v, chunks), "cpu_busy": busy})
    finally:
        svc.stop()


def main_server(chunks: list[dict], tiers: dict[str, str]) -> str:
    """The server that sent most of `chunks`; a tie goes to the better tier, then the name, so
    the choice depends on the request set only, never on the order two players logged in. Pure."""
    counts = Counter(r["server"] for r in chunks)
    return min(counts, key=lambda s: (-counts[s], TIER_RANK.get(tiers.get(s, "origin"), len(TIER_RANK)), s))


def _path_row(net, svc, viewer: str, chunks: list[dict]) -> dict:
    """Hops (traceroute), RTT and TCP connect time from `viewer` to the server that sent most of
    its chunks; over TLS also the probe's connect, full and resumed handshake (probe_*_ms)."""
    from emulation.probes import connect_ms, ping_rtts, tls_handshake_ms, traceroute

    server = main_server(chunks, {n.name: n.tier for n in net.plan.nodes if n.role == "oca"})
    addr = svc.server_addr(server)
    hops = traceroute(net, viewer, addr)
    row = {"server": server, "server_addr": addr, "hops": len(hops), "hops_answered": sum(h != "*" for h in hops),
           "path": " ".join(hops), "rtt_ms": _median_ms(ping_rtts(net, viewer, addr)),
           "connect_ms": _median_ms(connect_ms(net, viewer, addr, OCA_PORT))}
    if svc.opts.tls:  # TCP connect, full and resumed TLS 1.3 handshakes (scenarios.handshakes)
        t = tls_handshake_ms(net, viewer, addr, OCA_PORT, svc.ca_file)
        row.update({f"probe_{k}": _median_ms(v) for k, v in t.items()})
    return row


def _median_ms(samples: list[float]) -> float:
    """A probe's median in ms (3 decimals); nan if it got no sample."""
    return round(float(pd.Series(samples, dtype=float).median()), 3) if samples else float("nan")


TABLES = ("chunks", "sessions", "links", "links_ctl", "links_relay", "paths", "access")


def summarize(run_dir: Path) -> list[dict]:
    """summary.csv, bytes.csv and placement.png from the tidy tables; needs no root and no network.

    Byte figures: `payload_*` lays each logged response body over its plan path (seed-stable when
    the request set is, e.g. with --abr fixed), `transit_mb`/`peering_mb`/... are kernel counters
    (wire bytes: headers, retransmissions, probes). bytes.csv puts kernel, relay and log bytes
    per link class side by side (scenarios.bytecheck); `relay_vs_kernel_wire_pct` and
    `relay_vs_log_payload_pct` are its largest gaps on transit and peering. `ctl_vs_kernel_pct`
    (the controller's port counters against the kernel's) only checks the link mapping: OVS
    fills port stats from the same kernel counters."""
    from topologies.plan import Plan
    plan = Plan.from_json((run_dir / "plan.json").read_text())
    t = {n: read_table(table_path(run_dir, n)) for n in (*TABLES, "fill")}
    tiers = {n.name: n.tier for n in plan.nodes if n.role == "oca"}
    rows, byte_table = [], []
    fitted = handshakes.fit(t["paths"])  # every arm's paths: round trips and compute of a handshake
    for arm in ARMS:
        arm_t = {k: of_arm(v, arm) for k, v in t.items()}
        if arm_t["chunks"].empty:
            continue
        brows = byte_rows(arm, _ints(arm_t["links"]), _ints(arm_t["links_relay"]),
                          arm_t["access"].to_dict("records"), plan)
        byte_table += brows
        gaps = headline(brows)
        rows.append({"arm": arm, **_arm_figures(arm_t, plan, tiers, fitted), "plan_coverage": plan_coverage(arm_t, plan),
                     **_byte_figures(arm_t, plan, t["links_ctl"].empty),
                     "relay_vs_kernel_wire_pct": gaps["gap_wire_pct"],
                     "relay_vs_log_payload_pct": gaps["gap_payload_pct"]})
    write_csv(run_dir / "summary.csv", rows)
    write_csv(run_dir / "bytes.csv", byte_table)
    _figure(rows, run_dir / "placement.png")
    return rows


def _arm_figures(t: dict[str, pd.DataFrame], plan, tiers: dict[str, str], fitted: dict) -> dict:
    """Sessions, paths and chunk figures of one arm (its rows of each table)."""
    ch, se, pa = t["chunks"], t["sessions"], t["paths"].sort_values("host", kind="stable")
    total = int(ch["bytes"].sum())
    at_oca = ch[ch["server"].isin(tiers)]
    hops = pa["hops"].median()
    return {
        "sessions": len(se), "sessions_ok": int((se["status"] == "ok").sum()) if len(se) else 0,
        "chunks": len(ch),
        "servers": " ".join(f"{h}={s}" for h, s in zip(pa["host"], pa["server"])),
        "hops": int(hops) if len(pa) % 2 else float(hops),  # statistics.median's types: a value or a mean
        "rtt_ms": _median(pa["rtt_ms"], 2), "connect_ms": _median(pa["connect_ms"], 2),
        **handshakes.arm_figures(ch, pa, fitted),
        "ttfb_ms": _median(ch["ttfb_ms"], 1),
        "chunk_mbps": _median(ch["bytes"] * 8 / (ch["download_ms"] * 1000), 2, ""),
        "ttfb_hit_ms": _median(ch.loc[ch["cache"] == "hit", "ttfb_ms"], 1, ""),
        "ttfb_miss_ms": _median(ch.loc[ch["cache"].isin(MISS), "ttfb_ms"], 1, ""),
        "startup_s": _median(_finite(se, "startup_s"), 3, ""),
        "rebuffer_ratio": _mean(_finite(se, "rebuffer_ratio"), 4),
        "mean_kbps": _mean(_finite(se, "mean_kbps"), 1),
        "qoe_lin": _mean(_finite(se, "qoe_lin"), 2),
        "served_mb": round(total / 1e6, 3),
        "content_misses": int(pd.to_numeric(se["content_misses"]).sum()) if "content_misses" in se else 0,
        "oca_hit_ratio": round(int(at_oca["cache"].isin(HIT).sum()) / len(at_oca), 4) if len(at_oca) else "",
        "in_isp_share": round(int(ch.loc[ch["server"].map(tiers) == "embedded", "bytes"].sum()) / total, 4)
        if total else 0.0,
    }


def plan_coverage(t: dict[str, pd.DataFrame], plan) -> float | str:
    """Share of the arm's sessions whose title the fill plan of their own embedded OCA held (the
    prediction from yesterday's requests against today's demand); "" without embedded plans."""
    fill, se = t["fill"], t["sessions"]
    if fill.empty or "titles" not in fill or se.empty:
        return ""
    held = {r["oca"]: set(str(r["titles"]).split()) for r in fill.to_dict("records")}
    own = {n.domain: n.name for n in plan.nodes if n.role == "oca" and n.tier == "embedded" and n.name in held}
    if not own:
        return ""
    domain = {n.name: n.domain for n in plan.nodes}
    covered = [title in held.get(own.get(domain[host], ""), ()) for host, title in zip(se["host"], se["title"])]
    return round(sum(covered) / len(covered), 4)


def _byte_figures(t: dict[str, pd.DataFrame], plan, no_ctl: bool) -> dict:
    """Payload, kernel-counter and controller-counter bytes per link class of one arm."""
    wire = bytes_by_class(_ints(t["links"]), plan)
    ctl = bytes_by_class(_ints(t["links_ctl"]), plan)
    payload = payload_by_class(t["access"].to_dict("records"), plan, "origin")
    return {**{f"payload_{c}_mb": round(payload.get(c, 0) / 1e6, 3) for c in CLASSES},
            **{f"{c}_mb": round(wire.get(c, 0) / 1e6, 2) for c in CLASSES},
            "ctl_vs_kernel_pct": "" if no_ctl else _gap_pct(ctl, wire)}


MISS = ("fill", "coalesced")  # waited for a pull from upstream
CLASSES = ("transit", "peering", "backbone", "internal", "access")
# figures that depend on the seeded request set only (identical across runs with --abr fixed)
STABLE = ("sessions", "chunks", "servers", "hops", "served_mb", "oca_hit_ratio", "in_isp_share",
          *(f"payload_{c}_mb" for c in CLASSES))


def _ints(links: pd.DataFrame) -> list[dict]:
    """Counter-delta rows with every `*_bytes` field an int."""
    return [{k: int(v) if k.endswith("_bytes") else v for k, v in r.items()} for r in links.to_dict("records")]


def _finite(rows: pd.DataFrame, col: str) -> pd.Series:
    """The finite values of `col` (a failed session may have none)."""
    if col not in rows:
        return pd.Series(dtype=float)
    xs = pd.to_numeric(rows[col])
    return xs[xs.abs() != float("inf")].dropna()


def _median(xs: pd.Series, digits: int, empty="nan"):
    """The median of xs (pandas', as statistics.median) rounded to `digits`; `empty` if none."""
    xs = pd.to_numeric(xs).dropna()
    if xs.empty:
        return float("nan") if empty == "nan" else empty
    return round(float(xs.median()), digits)


def _mean(xs: pd.Series, digits: int) -> float | str:
    from contracts.stats import mean
    return round(mean(xs), digits) if len(xs) else ""


def _gap_pct(ctl: dict[str, int], kernel: dict[str, int]) -> float:
    """Largest relative gap between controller and kernel byte counts over the link classes
    that carried at least 1 MB."""
    gaps = [abs(ctl.get(c, 0) - b) / b * 100 for c, b in kernel.items() if b >= 1e6]
    return round(max(gaps), 3) if gaps else 0.0


def format_table(rows: list[dict]) -> str:
    cols = ["arm", "hops", "rtt_ms", "connect_ms", "handshake_ms", "ttfb_hit_ms", "ttfb_miss_ms", "startup_s", "rebuffer_ratio",
            "mean_kbps", "transit_mb", "peering_mb", "in_isp_share"]
    lines = ["  ".join(f"{c:>12s}" for c in cols)]
    for r in rows:
        lines.append("  ".join(f"{r[c]:>12}" for c in cols))
    lines += compare_arms({r["arm"]: r for r in rows})
    lines += handshakes.lines(rows)
    lines += byte_lines(rows)
    return "\n".join(lines)


def byte_lines(rows: list[dict]) -> list[str]:
    """The byte-accounting headline: the independent gaps on transit and peering, and the
    controller's mapping check. Pure; a figure no arm has is left out."""
    def worst(key: str) -> float | None:
        xs = [abs(float(r[key])) for r in rows if r.get(key) not in ("", None) and r[key] == r[key]]
        return max(xs) if xs else None
    wire, payload, ctl = (worst(k) for k in ("relay_vs_kernel_wire_pct", "relay_vs_log_payload_pct",
                                             "ctl_vs_kernel_pct"))
    lines = []
    if wire is not None or payload is not None:
        lines.append("bytes on transit and peering (bytes.csv): relay frame counters within "
                     f"{'n/a' if wire is None else f'{wire:.3f}%'} of kernel interface counters (wire), "
                     f"relay TCP payload within {'n/a' if payload is None else f'{payload:.3f}%'} of "
                     f"logged response bodies (tolerance {TOLERANCE_PCT:g}%)")
    if ctl is not None:
        lines.append(f"controller port counters within {ctl:.3f}% of kernel counters "
                     "(mapping check, same counter source)")
    return lines


def compare_arms(by: dict[str, dict]) -> list[str]:
    """One line per pair of arms: path, connect time and chunk throughput of the first against
    the second. Only embedded vs ixp carries Doan et al.'s figures: that is the pair they
    measured (on-net against off-net OCAs). Pure; a pair with a missing arm or figure is left out."""
    lo, hi = DOAN["path_len_reduction_pct"]
    paper = (f"Doan et al.: {lo}-{hi}%", f"Doan et al.: {DOAN['connect_time_reduction_pct']}%",
             f"Doan et al.: x{DOAN['throughput_ratio']:g}")
    lines = []
    for a, b, cite in (("embedded", "ixp", paper), ("embedded", "origin", None), ("ixp", "origin", None)):
        x, y = by.get(a), by.get(b)
        try:
            figs = (100 * (1 - float(x["hops"]) / float(y["hops"])),
                    100 * (1 - float(x["connect_ms"]) / float(y["connect_ms"])),
                    float(x["chunk_mbps"]) / float(y["chunk_mbps"]))
        except (TypeError, KeyError, ValueError, ZeroDivisionError):
            continue
        notes = [f" ({c})" for c in cite] if cite else ["", "", ""]
        lines.append(f"{a} vs {b}: path {figs[0]:.0f}% shorter{notes[0]}, connect time {figs[1]:.0f}% "
                     f"lower{notes[1]}, chunk throughput x{figs[2]:.1f}{notes[2]}")
    return lines


def _figure(rows: list[dict], path: Path) -> None:
    from harness.figures import bar_panels
    metrics = [("hops", "IP hops"), ("connect_ms", "TCP connect (ms)"), ("startup_s", "startup (s)"),
               ("mean_kbps", "mean bitrate (kbps)"), ("transit_mb", "transit (MB)"),
               ("in_isp_share", "share served in ISP")]
    bar_panels(rows, metrics, "placement: origin vs IXP vs embedded OCAs", path,
               ["#c44e52", "#55a868", "#4c72b0"], panel_w=3.0)


SCENARIO = Scenario(
    name="placement", settings=_settings, body=body, summarize=summarize, format_table=format_table,
    tables=("chunks", "sessions", "links", "links_ctl", "links_relay", "paths", "fill", "access"), stable=STABLE,
    manifest=lambda cfg: {"arms": ARMS, "fill_mode": "staged", "history": HISTORY_DEFAULTS}, tls=True)


def run(a) -> int:
    from harness.runner import run as run_scenario
    return run_scenario(a, SCENARIO)
