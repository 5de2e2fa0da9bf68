"""Scenario `realclient`: dash.js (headless Chromium, appliances.realplayer) and the Python player
play the same real-media title on one verified network, one after the other from the same viewer
host, through an embedded OCA (arm `embedded`: the steering document ranks the viewer's embedded
OCA first) and through the origin (arm `origin`: no OCAs). Last, in the embedded arm, dash.js plays
once more and the serving embedded OCA is SIGKILLed (by its process handle) once it has served
`kill_after_segments` of that session's segments: dash.js must move to the next location of the
Content Steering document (its BaseURL of the next serviceLocation).

Both players are configured alike: the same buffer target (30 s, the Python player's default),
the same first rung (the title's lowest, where the Python ABRs start), throughput samples over the
whole request on a ready connection (the Python player's; dash.js's default leaves the wait for
the first byte out),
and rules of one kind: the
Python player runs `--abr` (default tput) and dash.js the rule `DASHJS_ABR` maps it to.

Saved tidy tables (every row has `arm`, `player` and `session`): chunks.csv (the players' chunk
rows, the Python player's columns), sessions.csv (one per session), events.csv (the kill).
`summarize(run_dir)` writes summary.csv (one row per player and path, and one for the kill
session), no root. The kill row times two things apart: steering_out_s, from the kill to the
first steering document that no longer ranks the victim first for that session (the controller
saw the kill), and move_s, to dash.js's first segment from another location. dash.js retries a
failed segment on the same location (its defaults: 3 retries, 1 s apart; download_errors counts
the requests that ran out of them) and only then takes the next pathway of the steering
document, so move_s is about 3 s even when steering_out_s is under one.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pandas as pd

from harness import progress
from harness.rundir import table_path, write_csv
from harness.runner import Scenario
from scenarios.logs import read_jsonl, read_rows, read_table

ISP = "isp1"
PATHS = ("embedded", "origin")  # the arms: which locations the control plane may rank
PLAYERS = ("dashjs", "python")
KILL_SESSION = "dashjs-kill"
# the Python player's ABR -> the dash.js rule of the same kind (throughput: both 0.9 x a recent
# throughput estimate; buffer-based: BBA-0 / BOLA, whose start-up phase still uses throughput)
DASHJS_ABR = {"tput": "throughput", "bba": "bola"}


def _settings(quick: bool) -> dict:
    media = {"n_titles": 2, "patterns": ("pan", "fractal"), "duration_s": 20 if quick else 60,
             "segment_s": 2}
    return {"media": media, "title": "t0000", "kill_after_segments": 3, "steering_ttl_s": 1,
            "max_buffer_s": 30.0, "max_wall_s": 120.0}


def body(net, run_dir: Path, cfg: dict, seed: int, tables: dict) -> dict:
    from appliances.media_encode import MediaSettings, build
    if cfg["abr"] not in DASHJS_ABR:
        raise SystemExit(f"realclient: --abr {cfg['abr']} has no dash.js counterpart; "
                         f"known: {', '.join(DASHJS_ABR)}")
    progress.phase("media build")
    media_dir = build(MediaSettings(**cfg["media"]))
    viewer = next(v.name for v in net.plan.nodes_of(role="viewer") if v.domain == ISP)
    for arm in PATHS:
        print(f"realclient: path {arm} ...", flush=True)
        progress.phase(f"path {arm}")
        _run_arm(net, run_dir, arm, cfg, seed, viewer, str(media_dir), tables)
    return {"media_dir": str(media_dir), "viewer": viewer}


def _run_arm(net, run_dir: Path, arm: str, cfg: dict, seed: int, viewer: str, media_dir: str,
             tables: dict) -> None:
    from harness.services import ServiceOptions, Services
    n_titles = cfg["media"]["n_titles"]
    # pull-through OCAs, filled by one warm-up pass before any session (staged stores do not
    # support per-title ladders yet): every session then finds its title at every OCA
    opts = ServiceOptions(arm=arm, media_dir=media_dir, abr=cfg["abr"], warm_titles=n_titles, miss="proxy",
                          catalog={"seed": 1, "n_titles": n_titles, "duration_s": cfg["media"]["duration_s"]},
                          control_args=("--steering-ttl-s", str(cfg["steering_ttl_s"])))
    svc = Services(net, run_dir / "arms" / arm, opts)
    n_segments = cfg["media"]["duration_s"] // cfg["media"]["segment_s"]
    shot = run_dir / f"player-{arm}.png"
    try:
        svc.start()
        if arm != "origin":
            _warm_ocas(svc, viewer, cfg["title"])
        _wait(svc, _dashjs(svc, viewer, f"dashjs-{arm}", cfg, shot), cfg)
        py = svc.play(viewer, 1, n_segments, seed, tag=f"python-{arm}", titles=cfg["title"],
                      max_wall_s=cfg["max_wall_s"], max_buffer_s=cfg["max_buffer_s"])
        svc.wait_players([py], cfg["max_wall_s"] + 60)
        if arm == "embedded":
            tables["events"].append(_kill_session(svc, viewer, cfg, run_dir))
    finally:
        svc.stop()
    sessions = [(f"dashjs-{arm}", "dashjs"), (f"python-{arm}", "python")]
    sessions += [(KILL_SESSION, "dashjs")] if arm == "embedded" else []
    for tag, player in sessions:
        keys = {"arm": arm, "player": player, "session": tag}
        tables["chunks"] += [{**keys, **r} for r in read_rows(svc.logs / f"chunks-{tag}.csv")]
        for s in read_jsonl(svc.logs / f"sessions-{tag}.jsonl"):
            s["errors"] = len(s.get("errors") or [])
            s["servers"] = json.dumps(s.get("servers") or {}, sort_keys=True)
            tables["sessions"].append({**keys, **s})


def _dashjs(svc, viewer: str, tag: str, cfg: dict, screenshot: Path):
    """Start dash.js (appliances.realplayer) as a process of the viewer's host."""
    from harness.services import NICE
    argv = [sys.executable, "-m", "appliances.realplayer", "--control", svc.control_url,
            "--viewer", tag, "--title", cfg["title"], "--chunk-log", str(svc.logs / f"chunks-{tag}.csv"),
            "--session-log", str(svc.logs / f"sessions-{tag}.jsonl"), "--screenshot", str(screenshot),
            "--max-wall-s", str(cfg["max_wall_s"]), "--abr", DASHJS_ABR[cfg["abr"]],
            "--buffer-s", f"{cfg['max_buffer_s']:g}", "--initial-kbps", str(_lowest(svc, cfg["title"])),
            "--count-latency"]
    err = open(svc.logs / f"player-{tag}.stderr", "wb")
    return svc.procs.start(f"player:{tag}", [*NICE, *argv], node=svc.net.host(viewer), stdout=err,
                           stderr=err)


def _warm_ocas(svc, viewer: str, title: str) -> None:
    """Fetch the title's every segment through every OCA of the viewer's steering document."""
    import shlex
    from emulation.linkemu import EmulationError
    out = svc.net.host(viewer).cmd(f"{sys.executable} -m scenarios.hostcmd warm "
                                   f"{shlex.quote(svc.control_url)} {title} warmup-{viewer}")
    words = out.split()
    if len(words) != 4 or words[0] != "fetched" or words[3] != "0" or words[1] == "0":
        raise EmulationError(f"realclient: warming the OCAs failed: {out.strip()[-400:]}")
    print(f"realclient: OCAs warm ({words[1]} segment fetches)", flush=True)


def _lowest(svc, title: str) -> int:
    """The title's lowest rung: where the Python player's ABRs start."""
    from appliances.media import MediaCatalog
    return MediaCatalog(svc.opts.media_dir).ladder_of(title)[0]


def _wait(svc, proc, cfg: dict) -> None:
    svc.wait_players([proc], cfg["max_wall_s"] + 60)


def _kill_session(svc, viewer: str, cfg: dict, run_dir: Path) -> dict:
    """dash.js plays again; the embedded OCA that serves it is SIGKILLed after it has answered
    `kill_after_segments` of this session's segment requests. Returns the kill event."""
    from emulation.linkemu import EmulationError
    victim = next(o["name"] for o in svc.dep["ocas"] if o["tier"] == "embedded"
                  and o["name"] in {n.name for n in svc.plan.nodes_of(role="oca") if n.domain == ISP})
    log = svc.logs / f"{victim}.access.jsonl"
    client = svc.plan.primary_ip(viewer)

    def served() -> int:
        return sum(1 for r in read_jsonl(log) if r.get("client") == client and r.get("status") == 200
                   and str(r.get("path", "")).startswith(f"/v/{cfg['title']}/"))
    before = served()
    proc = _dashjs(svc, viewer, KILL_SESSION, cfg, run_dir / "player-kill.png")
    deadline = time.monotonic() + cfg["max_wall_s"]
    while served() - before < cfg["kill_after_segments"]:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise EmulationError(f"realclient: {victim} never served {cfg['kill_after_segments']} "
                                 f"segments of the kill session")
        time.sleep(0.1)
    svc.kill(victim)
    t_kill = time.time()
    print(f"realclient: SIGKILL {victim} after {served() - before} segment requests", flush=True)
    _wait(svc, proc, cfg)
    out = steering_out_after(read_jsonl(svc.logs / "steering.jsonl"), t_kill, victim, KILL_SESSION)
    return {"arm": "embedded", "session": KILL_SESSION, "event": "kill", "victim": victim,
            "t_unix": t_kill, "steering_out_unix": out}


def steering_out_after(decisions: list[dict], t_kill: float, victim: str, account: str) -> float | None:
    """When the steering server first answered `account` with `victim` no longer first, at or
    after t_kill (its steering.jsonl rows: ts, account, ranked); None: it never did."""
    return next((d["ts"] for d in sorted(decisions, key=lambda d: d["ts"])
                 if d.get("account") == account and d["ts"] >= t_kill
                 and (d.get("ranked") or [None])[0] != victim), None)


# ---- pure summary --------------------------------------------------------------------------

def summarize(run_dir: Path) -> list[dict]:
    """summary.csv: one row per player and path, then one for the kill session; no root."""
    chunks, sessions = (read_table(table_path(run_dir, n), optional=False) for n in ("chunks", "sessions"))
    events = read_table(table_path(run_dir, "events"))
    rows = []
    for arm in PATHS:
        for player in PLAYERS:
            se = sessions[(sessions["arm"] == arm) & (sessions["session"] == f"{player}-{arm}")]
            if not se.empty:
                rows.append({"player": player, "path": arm, **_figures(se.iloc[0])})
    py = {r["path"]: r["mean_kbps"] for r in rows if r["player"] == "python"}
    for r in rows:
        if r["player"] == "dashjs" and py.get(r["path"]):
            r["kbps_vs_python_pct"] = round(100 * (r["mean_kbps"] - py[r["path"]]) / py[r["path"]], 1)
    kill = sessions[sessions["session"] == KILL_SESSION]
    if not kill.empty and not events.empty:
        ev = events.iloc[0]
        ch = chunks[chunks["session"] == KILL_SESSION].to_dict("records")
        out = ev.get("steering_out_unix")
        rows.append({"player": "dashjs", "path": "embedded, OCA killed", **_figures(kill.iloc[0]),
                     **move_after_kill(ch, float(ev["t_unix"]), str(ev["victim"])),
                     "steering_out_s": None if out is None or pd.isna(out) else round(float(out) - float(ev["t_unix"]), 3),
                     "download_errors": int(kill.iloc[0].get("download_errors", 0) or 0)})
    write_csv(run_dir / "summary.csv", rows)
    return rows


def _figures(s: pd.Series) -> dict:
    return {"status": s["status"], "startup_s": _round(s.get("startup_s")),
            "mean_kbps": _round(s.get("mean_kbps"), 1), "rebuffer_ratio": _round(s.get("rebuffer_ratio")),
            "segments": int(s["segments"]), "integrity_failures": int(s["hash_failures"]),
            "failed_attempts": int(s["failed_attempts"]), "bytes": int(s["bytes"]),
            "error": "" if pd.isna(s.get("error", "")) else str(s.get("error", ""))[:300]}


def _round(x, nd: int = 4):
    return None if x is None or pd.isna(x) else round(float(x), nd)


def move_after_kill(chunks: list[dict], t_kill: float, victim: str) -> dict:
    """Where the session went after `victim` was killed at t_kill (pure; values may be strings):
    the location of the first chunk completed after the kill from another server, the time from
    the kill to it (move_s; None: no such chunk), and the chunks from the victim before the kill."""
    ordered = sorted(chunks, key=lambda c: float(c["time"]))
    first = next((c for c in ordered if float(c["time"]) >= t_kill and c["server"] != victim), None)
    return {"killed": victim,
            "victim_chunks_before_kill": sum(1 for c in ordered if float(c["time"]) < t_kill
                                             and c["server"] == victim),
            "moved_to": first["server"] if first else None,
            "move_s": round(float(first["time"]) - t_kill, 3) if first else None}


def format_table(rows: list[dict]) -> str:
    cols = ["player", "path", "status", "startup_s", "mean_kbps", "kbps_vs_python_pct", "rebuffer_ratio",
            "segments", "integrity_failures", "failed_attempts", "moved_to", "move_s", "steering_out_s",
            "download_errors"]
    cells = [[str(r.get(c, "")) if r.get(c) is not None else "" for c in cols] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(cols)]
    lines = ["  ".join(f"{c:>{w}s}" for c, w in zip(cols, widths))]
    lines += ["  ".join(f"{v:>{w}s}" for v, w in zip(row, widths)) for row in cells]
    lines += [f"{r['player']} {r['path']} failed: {r.get('error') or '(no error text)'}"
              for r in rows if r.get("status") != "ok"]
    return "\n".join(lines)


SCENARIO = Scenario(
    name="realclient", settings=_settings, body=body, summarize=summarize, format_table=format_table,
    tables=("chunks", "sessions", "events"), key=("player", "path"), default_abr="tput",
    manifest=lambda cfg: {"paths": PATHS, "isp": ISP, "dashjs_abr": DASHJS_ABR.get(cfg["abr"])})


def run(a) -> int:
    from harness.runner import run as run_scenario
    return run_scenario(a, SCENARIO)
