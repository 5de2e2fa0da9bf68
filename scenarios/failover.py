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

import csv
import json
import signal
import time
from pathlib import Path

from harness.rundir import write_csv
from harness.runner import Scenario

ARMS = ("manifest", "anycast")
ISP = "isp1"
VICTIMS = (("embedded_kill", "i1oca1"), ("ixp_kill", "nfxoca1"))
PHASES = ("pre", "embedded_kill", "ixp_kill")
CLOCK_SKEW_S = 0.05  # the kill and the chunk times come from two processes' wall clocks


def _settings(quick: bool) -> dict:
    if quick:
        return {"viewers_per_host": 2, "segments": 17, "kill_embedded_s": 8.0, "kill_ixp_s": 22.0,
                "catalog": {"seed": 1, "n_titles": 4, "duration_s": 68}, "capacity_mb": 200.0}
    return {"viewers_per_host": 3, "segments": 30, "kill_embedded_s": 25.0, "kill_ixp_s": 55.0,
            "catalog": {"seed": 1, "n_titles": 12, "duration_s": 120}, "capacity_mb": 800.0}


def body(net, run_dir: Path, cfg: dict, seed: int, tables: dict) -> None:
    for arm in ARMS:
        print(f"failover: arm {arm} ...", flush=True)
        _run_arm(net, run_dir, arm, cfg, seed, tables)


def check_plan(plan) -> None:
    for _, victim in VICTIMS:
        plan.node(victim)  # a clear PlanError if the topology lacks the OCAs this scenario kills


def collect_logs(svc, arm: str, viewers: list[str], tables: dict) -> None:
    """Chunks (server resolved), sessions and segment access-log rows of one arm into `tables`."""
    access = read_access(svc.logs, arm)
    ips = {v: svc.plan.primary_ip(v) for v in viewers}
    chunks = []
    for v in viewers:
        path = svc.logs / f"chunks-{v}.csv"
        rows = read_csv(path) if path.exists() else []
        chunks += [{"arm": arm, "host": v, "client": ips[v], **r} for r in rows]
        spath = svc.logs / f"sessions-{v}.jsonl"
        for line in (spath.read_text().splitlines() if spath.exists() else []):
            s = json.loads(line)
            s.pop("servers", None)
            s["errors"] = len(s.get("errors") or [])
            tables["sessions"].append({"arm": arm, "host": v, **s})
    tiers = {o["name"]: o["tier"] for o in svc.dep["ocas"]} | {"origin": "origin"}
    tables["chunks"] += resolve_servers(chunks, access, tiers)
    tables["access"] += access


def read_access(logs: Path, arm: str) -> list[dict]:
    """Segment requests (/v/...) of every access log in `logs` (OCAs and origin)."""
    out = []
    for path in sorted(logs.glob("*.access.jsonl")):
        for line in path.read_text().splitlines():
            r = json.loads(line)
            if str(r.get("path", "")).startswith("/v/"):
                out.append({"arm": arm, "server": r["server"], "ts": r["ts"], "client": r["client"],
                            "method": r["method"],
                            "path": r["path"], "status": r["status"], "cache": r["cache"], "bytes": r["bytes"]})
    return out


def resolve_servers(chunks: list[dict], access: list[dict], tiers: dict[str, str],
                    max_skew_s: float = 5.0) -> list[dict]:
    """Each chunk with `pathway` (what the player fetched) and `server`/`tier` (who sent the bytes).

    A chunk whose pathway is not a known location (the anycast address) gets as `server` the
    node its response named (`node`, the X-Ocalab-Node header) and, as an independent
    cross-check, `log_server`: the server of the 200 access-log row with the same client, path
    and byte count whose ts is nearest the chunk's time (within max_skew_s), "" if none. Without a node
    header the log join decides; a chunk neither names keeps server "unresolved". Pure."""
    index: dict[tuple, list[dict]] = {}
    for r in access:
        if int(r["status"]) == 200:
            index.setdefault((r["client"], r["path"]), []).append(r)
    out = []
    for c in chunks:
        c = {**c, "pathway": c["server"], "log_server": ""}
        if c["server"] not in tiers:
            path = f"/v/{c['title']}/{c['kbps']}/{c['index']}"
            cands = [r for r in index.get((c["client"], path), [])
                     if abs(float(r["ts"]) - float(c["time"])) <= max_skew_s
                     and int(r.get("bytes", c["bytes"])) == int(c["bytes"])]  # a whole body
            best = min(cands, key=lambda r: abs(float(r["ts"]) - float(c["time"])), default=None)
            c["log_server"] = best["server"] if best else ""
            node = c.get("node") or ""
            c["server"] = node if node in tiers else (c["log_server"] or "unresolved")
            c["tier"] = tiers.get(c["server"], "unknown")
        out.append(c)
    return out


def _run_arm(net, run_dir: Path, arm: str, cfg: dict, seed: int, tables: dict) -> None:
    from emulation.probes import bytes_by_class, counter_delta, link_counters
    from harness.services import ServiceOptions, Services
    arm_dir = run_dir / "arms" / arm
    # caches start cold (miss proxy): pre-kill transit includes the embedded OCA's pull-through
    svc = Services(net, arm_dir, ServiceOptions(arm="embedded", catalog=cfg["catalog"],
                                                capacity_mb=cfg["capacity_mb"], steering=arm, abr=cfg["abr"]))
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
    collect_logs(svc, arm, viewers, tables)


def read_csv(path: Path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f))


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
    if chunk.get("request_unix"):
        return float(chunk["request_unix"])
    return float(chunk["time"]) - float(chunk.get("download_ms") or 0) / 1000


def _mean(xs: list[float]) -> float | None:
    return round(sum(xs) / len(xs), 3) if xs else None


def summarize(run_dir: Path) -> list[dict]:
    """summary.csv (one row per arm and kill) and failover.png; needs no root and no network."""
    chunks, events = read_csv(run_dir / "chunks.csv"), read_csv(run_dir / "events.csv")
    phases = read_csv(run_dir / "phases.csv")
    rows = []
    for arm in ARMS:
        ev = sorted((e for e in events if e["arm"] == arm), key=lambda e: float(e["t_unix"]))
        ph = {p["phase"]: p for p in phases if p["arm"] == arm}
        ch = [c for c in chunks if c["arm"] == arm]
        if not ev or not ch or "pre" not in ph:
            continue
        pre = ph["pre"]
        t_first = float(ev[0]["t_unix"])
        # viewers' bytes from the origin (they cross transit) per second before the first kill
        pre_origin = sum(int(c["bytes"]) for c in ch if c["tier"] == "origin" and float(c["time"]) < t_first)
        pre_rate = pre_origin / float(pre["duration_s"])
        for i, e in enumerate(ev):
            t_kill = float(e["t_unix"])
            t_end = float(ev[i + 1]["t_unix"]) if i + 1 < len(ev) else float("inf")
            rec = recovery(ch, t_kill, e["victim"], t_end)
            times = [r["recover_s"] for r in rec if r["recover_s"] is not None]
            window = [c for c in ch if t_kill <= float(c["time"]) < t_end]
            total = sum(int(c["bytes"]) for c in window)
            p = ph.get(e["event"], {})
            transit = int(p.get("transit_bytes") or 0)
            origin_bytes = sum(int(c["bytes"]) for c in window if c["tier"] == "origin")
            late = [c for c in window if c["server"] == e["victim"]]
            extra = origin_bytes - pre_rate * float(p.get("duration_s") or 0)
            rows.append({
                "arm": arm, "event": e["event"], "victim": e["victim"],
                "viewers_affected": len(rec), "recovered": len(times),
                "recover_s_median": round(sorted(times)[len(times) // 2], 3) if times else None,
                "recover_s_max": max(times) if times else None,
                # a killed process's socket buffers still drain: bodies requested before the kill
                # may complete after it; a request sent after it must never be answered
                "victim_mb_after": round(sum(int(c["bytes"]) for c in late) / 1e6, 3),
                "victim_requests_after": sum(requested_unix(c) > t_kill + CLOCK_SKEW_S for c in late),
                "rebuffer_s": round(sum(r["rebuffer_s"] for r in rec), 3),
                "fallback_chunks": sum(int(c["fallback"]) for c in window),
                "chunks_after": len(window),
                "mean_kbps_after": _mean([float(c["kbps"]) for c in window]),
                **{f"{t}_share_after": round(sum(int(c["bytes"]) for c in window if c["tier"] == t) / total, 3)
                   if total else 0.0 for t in ("embedded", "ixp", "origin")},
                "pre_transit_mb": round(int(pre.get("transit_bytes") or 0) / 1e6, 2),
                "transit_mb_after": round(transit / 1e6, 2),
                "origin_mb_after": round(origin_bytes / 1e6, 2),
                "extra_transit_mb": round(extra / 1e6, 2)})
    write_csv(run_dir / "summary.csv", rows)
    if chunks:
        _figure(chunks, events, run_dir / "failover.png")
    return rows


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
