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

import json
import sys
import time
from pathlib import Path

from scenarios.failover import collect_logs, read_csv
from scenarios.fill import startup_times
from harness.rundir import write_csv
from harness.runner import Scenario

ARMS = ("nearest", "load_aware")
ISP = "isp1"


def _settings(quick: bool) -> dict:
    if quick:
        return {"viewers_per_host": 6, "segments": 10, "ramp_s": 15.0, "max_streams": 8, "egress_mbps": 40.0,
                "catalog": {"seed": 1, "n_titles": 4, "duration_s": 40}, "capacity_mb": 200.0}
    return {"viewers_per_host": 8, "segments": 16, "ramp_s": 30.0, "max_streams": 10, "egress_mbps": 50.0,
            "catalog": {"seed": 1, "n_titles": 20, "duration_s": 80}, "capacity_mb": 400.0}


def body(net, run_dir: Path, cfg: dict, seed: int, tables: dict) -> None:
    for arm in ARMS:
        print(f"steering: policy {arm} ...", flush=True)
        _run_arm(net, run_dir, arm, cfg, seed, tables)


def _run_arm(net, run_dir: Path, arm: str, cfg: dict, seed: int, tables: dict) -> None:
    from emulation.linkemu import EmulationError
    from harness.services import ServiceOptions, Services
    if not getattr(net, "mgmt_url", None):
        raise EmulationError("steering policies need the controller (Options(controller=True))")
    arm_dir = run_dir / "arms" / arm
    opts = ServiceOptions(arm="embedded", catalog=cfg["catalog"], capacity_mb=cfg["capacity_mb"],
                          oca_args=("--max-streams", str(cfg["max_streams"]),
                                    "--egress-mbps", str(cfg["egress_mbps"])),
                          control_args=("--steering-policy", arm), abr=cfg["abr"])
    svc = Services(net, arm_dir, opts)
    viewers = [v.name for v in net.plan.nodes_of(role="viewer") if v.domain == ISP]
    ctl = net.plan.nodes_of(role="control")[0].name
    try:
        svc.start()
        t0 = time.time()
        warm(svc, ctl, ["i1oca1", "nfxoca1"])
        print(f"steering: {arm}: caches warmed in {time.time() - t0:.1f} s", flush=True)
        procs = [svc.play(v, cfg["viewers_per_host"], cfg["segments"], seed * 1000 + i, ramp_s=cfg["ramp_s"])
                 for i, v in enumerate(viewers)]
        svc.wait_players(procs, 300)
    finally:
        svc.stop()
    collect_logs(svc, arm, viewers, tables)
    decisions = read_steering(svc.logs / "steering.jsonl", arm)
    tables["steering"] += decisions
    tables["misses"] += join_misses([r for r in tables["access"] if r["arm"] == arm], decisions)


# Runs in the control host: HEAD each URL, 6 at a time. A HEAD miss makes a proxy-mode OCA pull
# the object and store it, with no body sent (no egress counted).
WARMER = r"""
import json, sys, time, urllib.error, urllib.request
from concurrent.futures import ThreadPoolExecutor
urls = json.loads(sys.argv[1])
def head(url):
    for attempt in range(5):  # 503: the OCA is at its stream limit; retry shortly
        try:
            with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=60) as r:
                return r.status
        except urllib.error.HTTPError as e:
            if e.code != 503:
                return e.code
            time.sleep(0.2)
    return 503
with ThreadPoolExecutor(6) as ex:
    codes = list(ex.map(head, urls))
print(json.dumps({"n": len(codes), "ok": sum(c == 200 for c in codes)}))
"""


def warm(svc, ctl: str, ocas: list[str]) -> None:
    """Store segment 0 at the lowest rung of every title on `ocas`. The controller's content
    check is per title (an OCA's `stored_titles`), so afterwards no OCA is a content miss for any
    title and the policies differ by load only; the other segments are still real cache misses
    (pulled through on first request)."""
    import subprocess
    from appliances import tokens
    from appliances.content import LADDER_KBPS
    from emulation.linkemu import EmulationError
    key = tokens.load_key(svc.key_file)
    n_titles = int(svc.opts.catalog["n_titles"])
    urls = []
    for title in (f"t{i:04d}" for i in range(n_titles)):
        query = tokens.sign(key, f"/v/{title}/", "0.0.0.0/0", int(time.time()) + 600)
        for name in ocas:
            root = f"http://{svc.plan.primary_ip(name)}:8080"
            urls.append(f"{root}/v/{title}/{LADDER_KBPS[0]}/0?{query}")
    proc = svc.net.host(ctl).popen([sys.executable, "-c", WARMER, json.dumps(urls)],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = proc.communicate(timeout=180)
    if proc.returncode != 0:
        raise EmulationError(f"cache warm-up failed: {err.decode()[-500:]}")
    res = json.loads(out)
    if res["ok"] != len(urls):
        raise EmulationError(f"cache warm-up: {res['ok']} of {len(urls)} objects")


def read_steering(path: Path, arm: str) -> list[dict]:
    """One row per steering decision of the control plane (logs/steering.jsonl)."""
    out = []
    for line in (path.read_text().splitlines() if path.exists() else []):
        d = json.loads(line)
        reasons = d.get("reasons") or {}

        def names(key: str) -> str:
            return " ".join(n for n, r in reasons.items() if r.get(key))
        out.append({"arm": arm, "ts": d["ts"], "viewer": d["viewer"], "account": d["account"],
                    "title": d["title"], "first": d["ranked"][0] if d["ranked"] else "",
                    "ranked": " ".join(d["ranked"]), "overloaded": names("overloaded"),
                    "health_missed": names("health_miss"), "content_missed": names("content_miss"),
                    # OCAs the controller left out (health misses), name=why
                    "excluded": " ".join(f"{n}={why}" for n, why in sorted((d.get("excluded") or {}).items())),
                    "policy": next((r.get("policy") for r in reasons.values() if r.get("policy")), ""),
                    "fallback": int(any(r.get("steering") == "local-fallback" for r in reasons.values()))})
    return out


def join_misses(access: list[dict], decisions: list[dict]) -> list[dict]:
    """Each 503 to a GET (a viewer's health miss at the OCA) with the latest steering decision for the same viewer
    address and title made before it: whether that decision ranked the refusing OCA first and
    whether it already knew it was overloaded or unhealthy. Pure."""
    out = []
    for r in access:
        if int(r["status"]) != 503 or r.get("method", "GET") != "GET":
            continue
        title = str(r["path"]).split("/")[2]
        prior = [d for d in decisions if d["viewer"] == r["client"] and d["title"] == title
                 and float(d["ts"]) <= float(r["ts"])]
        d = max(prior, key=lambda d: float(d["ts"]), default=None)
        out.append({"arm": r["arm"], "ts": r["ts"], "server": r["server"], "client": r["client"],
                    "path": r["path"], "decision_ts": d["ts"] if d else "",
                    "ranked_first": int(bool(d) and d["first"] == r["server"]),
                    "known_overloaded": int(bool(d) and r["server"] in d["overloaded"].split()),
                    "known_unhealthy": int(bool(d) and r["server"] in d["health_missed"].split())})
    return out


# ---- pure summary --------------------------------------------------------------------------

def _mean(xs: list[float]) -> float | None:
    return round(sum(xs) / len(xs), 4) if xs else None


def summarize(run_dir: Path) -> list[dict]:
    """summary.csv (one row per policy) and steering.png; needs no root and no network."""
    chunks, sessions = read_csv(run_dir / "chunks.csv"), read_csv(run_dir / "sessions.csv")
    access, steering = read_csv(run_dir / "access.csv"), read_csv(run_dir / "steering.csv")
    misses = read_csv(run_dir / "misses.csv") if (run_dir / "misses.csv").stat().st_size else []
    rows = []
    for arm in ARMS:
        ch = [c for c in chunks if c["arm"] == arm]
        if not ch:
            continue
        se = [s for s in sessions if s["arm"] == arm]
        ac = [r for r in access if r["arm"] == arm and r["server"] != "origin" and r.get("method", "GET") == "GET"]
        de = [d for d in steering if d["arm"] == arm]
        mi = [m for m in misses if m["arm"] == arm]
        total = sum(int(c["bytes"]) for c in ch)
        health = sum(int(r["status"]) == 503 for r in ac)
        rows.append({
            "arm": arm, "sessions": len(se), "sessions_ok": sum(s["status"] == "ok" for s in se),
            "decisions": len(de),
            "first_embedded_share": round(sum(d["first"].startswith("i") and "oca" in d["first"] for d in de)
                                          / len(de), 3) if de else None,
            "decisions_overloaded_seen": sum(bool(d["overloaded"]) for d in de),
            "oca_requests": len(ac), "health_misses": health,
            "health_miss_ratio": round(health / len(ac), 4) if ac else 0.0,
            "health_misses_ranked_first": sum(int(m["ranked_first"]) for m in mi),
            "content_misses": sum(r["cache"] in ("miss", "fill") and int(r["status"]) == 200 for r in ac),
            **{f"{t}_share": round(sum(int(c["bytes"]) for c in ch if c["tier"] == t) / total, 3) if total else 0.0
               for t in ("embedded", "ixp", "origin")},
            "fallback_chunks": sum(int(c["fallback"]) for c in ch),
            "qoe_lin": _mean([float(s["qoe_lin"]) for s in se]),
            "rebuffer_ratio": _mean([float(s["rebuffer_ratio"]) for s in se]),
            "mean_kbps": _mean([float(s["mean_kbps"]) for s in se]),
            "startup_s": _mean(startup_times(se))})
    write_csv(run_dir / "summary.csv", rows)
    if rows:
        _figure(rows, run_dir / "steering.png")
    return rows


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


# ---- the policy proxy (runs in the control host) -------------------------------------------

STABLE = ("sessions", "decisions")  # load-aware steering reacts to timing, so little else is


SCENARIO = Scenario(
    name="steering", settings=_settings, body=body, summarize=summarize, format_table=format_table,
    tables=("chunks", "access", "sessions", "steering", "misses"), stable=STABLE,
    manifest=lambda cfg: {"arms": ARMS, "isp": ISP})

def run(a) -> int:
    from harness.runner import run as run_scenario
    return run_scenario(a, SCENARIO)
