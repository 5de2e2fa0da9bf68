"""Scenario `bgp`: failures as BGP events, on metro under --routing bgp (forced), services of
the embedded arm, no players. After a steady phase, four events in turn, each a phase until its
steering change plus `settle_s`:
- ixp_link_down: isp1's IXP peering link drops every frame, so isp1's session with the IXP
  route server (or, with metro.route_server=0, its bilateral IXP sessions) drops after the hold
  time; BGP converges when every router's RIB equals the plan without isp1's IXP peerings (isp1
  on transit), and the IXP OCA is withdrawn isp1's viewers, so steering for an isp1 viewer drops it;
- ixp_link_up: the link back; converged when the RIBs equal the plan again, steering has the IXP
  OCA back;
- prefix_withdraw / prefix_announce: isp1 denies (permits) its viewer prefix in the prefix-list
  to its embedded OCA; converged when that OCA's speaker has learned (lost) it; steering ranks
  the OCA out (first again).
Steering is the controller's ranking (GET /rank, which the control plane puts in manifests),
polled every POLL_S; both times are from the event, so steering_s includes bgp_converged_s.

BGP's own control-plane bytes per phase come from the kernel: the TCP payload bytes received on
every BGP socket (port 179) of every speaker (routers, route server and OCAs), read with `ss -ti` at the phase
boundaries (each byte counted once, at its receiver; a socket opened during a phase counts from
0). FRR's message counters (`show bgp neighbors json`: totalRecv, updatesRecv) are a second,
independent counter of the same traffic, in messages.

The viewers' bytes that moved (scenarios.bgp_bytes): isp1's viewers play through every phase,
sessions started every SESSION_EVERY_S on each viewer host (one player process per host,
starts spread by --ramp-s), each session a whole short title, buffer capped at MAX_BUFFER_S so
bytes flow at the media rate. Why this workload: the embedded arm alone would send every isp1
byte from the embedded OCA, over no border link, and the IXP link going down would move
nothing. So the OCAs start from steady state on Open Connect's serve path (content_miss,
staged fill plans): the IXP OCA holds the catalog, the embedded OCA only a head of it
(EMBEDDED_CAPACITY), and half of the sessions play a title it holds, half one it lacks, which
the player fetches from the next location, the IXP OCA, over the IXP fabric. Then
ixp_link_down moves those bytes to the origin over transit (cut transfers fail over, new
manifests rank the IXP OCA out), ixp_link_up brings them back (a failed location is probed
again, new manifests rank it again), and prefix_withdraw moves the held title's new sessions
from the embedded OCA to the IXP OCA (a session keeps the manifest it started with, so ongoing
ones finish where they were: `new_session_bytes` shows the move at once). The players' ABR is
`fixed` unless --abr says otherwise: every chunk is the same rung, so the bytes measure where
viewers fetch from, not how an ABR reacted to a path change.

Tables: events.csv (event, t_unix, bgp_converged_s, steering_s), bgp_traffic.csv (phase x
speaker: bytes and messages received), windows.csv (phase x window: bounds), chunks.csv and
sessions.csv and access.csv (isp1's players and their segment requests at the servers; chunks
and requests with their plan path `via`), link_bytes.csv (phase x window x
isp1 border link: relay payload and kernel bytes toward isp1). `summarize(run_dir)` writes
bytes.csv (phase x window x source x path), path_bytes.csv (log vs counters per path) and
summary.csv (no root).
"""
from __future__ import annotations

import argparse
import json
import re
import signal
import time
import urllib.request
from pathlib import Path

from harness import progress
from harness.rundir import table_path, write_csv
from harness.runner import Scenario
from scenarios import bgp_bytes
from scenarios.logs import read_access, read_jsonl, read_rows, read_table, text_table

ISP, OCA, VIEWER_IP, PREFIX = "isp1", "i1oca1", "198.18.1.10", "198.18.1.0/24"
EVENTS = ("ixp_link_down", "ixp_link_up", "prefix_withdraw", "prefix_announce")
PHASES = ("steady", *EVENTS)
POLL_S = 0.05
WAIT_S = 60.0
EMBEDDED_CAPACITY = {"embedded": "head:0.5", "ixp": "1"}  # harness.sizing rules
SESSION_EVERY_S = 3.0   # a new session on each isp1 viewer host this often
MAX_BUFFER_S = 8.0      # the players' buffer cap: bytes flow at the media rate
EVENT_BUDGET_S = 6.0    # the ramp's allowance per event for convergence and steering


def _settings(quick: bool) -> dict:
    return {"steady_s": 8.0 if quick else 20.0, "settle_s": 8.0 if quick else 15.0,
            "catalog": {"seed": 1, "n_titles": 4, "duration_s": 16}}


# ---- pure readers ------------------------------------------------------------------------
_SOCK = re.compile(r"(\S+:\d+)\s+(\S+:\d+)\s*$")


def parse_ss(text: str) -> dict[tuple[str, str], int]:
    """(local, peer) -> bytes_received of each TCP socket in `ss -tinH` output (0 if the kernel
    reports none yet)."""
    out, key = {}, None
    for line in text.splitlines():
        m = _SOCK.search(line) if not line.startswith(("\t", " ")) else None
        if m:
            key = (m.group(1), m.group(2))
            out[key] = 0
        elif key is not None:
            got = re.search(r"\bbytes_received:(\d+)", line)
            out[key] = int(got.group(1)) if got else 0
    return out


def received_delta(before: dict, after: dict) -> int:
    """Bytes received between two parse_ss() readings: sockets present in both count their
    growth; a socket new in `after` counts all of its bytes; a closed one counts none."""
    return sum(n - before.get(k, 0) if before.get(k, 0) <= n else n for k, n in after.items())


def frr_counts(neighbors_json: dict) -> dict[str, int]:
    """Messages and updates received over all of a speaker's neighbors, from FRR's
    `show bgp neighbors json`."""
    stats = [n.get("messageStats", {}) for n in neighbors_json.values() if isinstance(n, dict)]
    return {"messages": sum(int(s.get("totalRecv", 0)) for s in stats),
            "updates": sum(int(s.get("updatesRecv", 0)) for s in stats)}


# ---- the run -----------------------------------------------------------------------------
def _speakers(net) -> list[str]:
    return net.bgp.peering_speakers() + sorted(net.bgp.oca_sessions)


def _sample(net) -> dict[str, dict]:
    out = {}
    for s in _speakers(net):
        ss = net.host(s).cmd("ss -tinH state established '( sport = :179 or dport = :179 )'")
        out[s] = {"sockets": parse_ss(ss), **frr_counts(net.bgp.vtysh_json(s, "show bgp neighbors"))}
    return out


def _rank(net) -> list[str]:
    with urllib.request.urlopen(f"{net.api_url}/rank?viewer={VIEWER_IP}", timeout=5) as r:
        return [loc["name"] for loc in json.loads(r.read())["locations"]]


def _wait_rank(net, pred, t0: float, what: str) -> float:
    while True:
        ranked = _rank(net)
        if pred(ranked):
            return time.monotonic() - t0
        if time.monotonic() - t0 > WAIT_S:
            raise RuntimeError(f"bgp: {what}: steering still ranks {ranked} after {WAIT_S:g} s")
        time.sleep(POLL_S)


def _event(net, event: str, link: str, ixp_oca: str) -> tuple[float, float]:
    """Do `event`; (bgp_converged_s, steering_s), both from the event."""
    from topologies import bgp as bgpplan
    plan, b = net.plan, net.bgp
    t0 = time.monotonic()
    if event == "ixp_link_down":
        net.link_down(link)
        kept = [x for x in plan.as_links if x not in bgpplan.as_links_over(plan, link)]
        conv = b.wait_routes(bgpplan.expected_routes(plan, kept), t0, WAIT_S, event)
        return conv, _wait_rank(net, lambda r: ixp_oca not in r, t0, event)
    if event == "ixp_link_up":
        net.link_up(link)
        conv = b.wait_routes(bgpplan.expected_routes(plan), t0, WAIT_S, event)
        return conv, _wait_rank(net, lambda r: ixp_oca in r, t0, event)
    announce = event == "prefix_announce"
    b.announce_to_oca(OCA, PREFIX, announce)
    conv = b.wait_oca_routes({OCA: {PREFIX} if announce else set()}, t0, WAIT_S, event)
    return conv, _wait_rank(net, (lambda r: r[0] == OCA) if announce else (lambda r: OCA not in r), t0, event)


def body(net, run_dir: Path, cfg: dict, seed: int, tables: dict) -> dict:
    from harness.services import ServiceOptions, Services
    if net.bgp is None:
        raise RuntimeError("scenario bgp needs --routing bgp")
    plan = net.plan
    link = next(lk.name for lk in plan.links if lk.cls == "peering"
                and plan.node(lk.a.node).domain == ISP)
    ixp_oca = next(n.name for n in plan.nodes_of(role="oca") if n.tier == "ixp")
    from harness.services import STEADY_STATE
    svc = Services(net, run_dir / "arms" / "bgp", ServiceOptions(
        arm="embedded", catalog=cfg["catalog"], capacity_rules=EMBEDDED_CAPACITY, miss="content_miss",
        stage_tiers=STEADY_STATE, history={"seed": seed}, abr=cfg["abr"]))
    viewers = [v.name for v in plan.nodes_of(role="viewer") if v.domain == ISP]
    try:
        svc.start()
        titles = _titles(svc)
        _wait_rank(net, lambda r: r[:2] == [OCA, ixp_oca], time.monotonic(), "steady state")
        bounds = [(time.time(), _links(net))]  # before any player: no transfer straddles it
        procs = _play(svc, viewers, titles, cfg, seed)
        marks = [(time.time(), _sample(net))]
        progress.phase("steady")
        time.sleep(cfg["steady_s"])
        for event in EVENTS:
            progress.phase(event)
            marks.append((time.time(), _sample(net)))
            bounds.append((time.time(), _links(net)))
            t_unix = time.time()
            conv, steer = _event(net, event, link, ixp_oca)
            bounds.append((time.time(), _links(net)))
            print(f"bgp: {event}: BGP converged {conv:.2f} s, steering changed {steer:.2f} s", flush=True)
            tables["events"].append({"event": event, "t_unix": round(t_unix, 3), "bgp_converged_s": round(conv, 3),
                                     "steering_s": round(steer, 3)})
            time.sleep(cfg["settle_s"])
        marks.append((time.time(), _sample(net)))
        bounds.append((time.time(), _links(net)))
        for p in procs:  # the ramp outlasts the phases: end the sessions still playing
            p.send_signal(signal.SIGTERM)
        svc.wait_players(procs, 60)
    finally:
        svc.stop()
    _viewer_tables(svc, viewers, titles, tables)
    _window_tables(bounds, tables)
    for phase, (t0, a), (t1, z) in zip(PHASES, marks, marks[1:]):
        for s in sorted(z):
            tables["bgp_traffic"].append({
                "phase": phase, "speaker": s, "t_start": round(t0, 3), "t_end": round(t1, 3),
                "duration_s": round(t1 - t0, 3),
                "bytes_received": received_delta(a[s]["sockets"], z[s]["sockets"]),
                "frr_messages_received": z[s]["messages"] - a[s]["messages"],
                "frr_updates_received": z[s]["updates"] - a[s]["updates"]})
    return {"ixp_link": link, "oca": OCA, "prefix": PREFIX, "viewer": VIEWER_IP, "titles": titles}


def _titles(svc) -> dict[str, str]:
    """held: a title the embedded OCA's staged plan holds; lacking: one it does not (the IXP
    OCA holds every title)."""
    from harness.staging import catalog_of
    held = svc.staged.get(OCA, {}).get("titles", "").split()
    every = catalog_of(svc.dep).titles()
    lacking = [t for t in every if t not in held]
    if not held or not lacking:
        raise RuntimeError(f"bgp: {OCA} holds {held} of {every}: the workload needs a title it "
                           f"holds and one it lacks (EMBEDDED_CAPACITY)")
    return {"held": held[0], "lacking": lacking[0]}


def _play(svc, viewers: list[str], titles: dict, cfg: dict, seed: int) -> list:
    """One player per viewer host: sessions alternate the held and the lacking title, one
    starting every SESSION_EVERY_S over the scenario's expected length (and beyond)."""
    ramp_s = 1.25 * (cfg["steady_s"] + len(EVENTS) * (cfg["settle_s"] + EVENT_BUDGET_S))
    n = int(ramp_s / SESSION_EVERY_S) + 1
    from harness.staging import catalog_of
    catalog = catalog_of(svc.dep)
    segments = catalog.segment_count(catalog.titles()[0])
    return [svc.play(v, n, segments, seed * 1000 + i, titles=f"{titles['held']},{titles['lacking']}",
                     ramp_s=ramp_s * n / (n - 1), max_wall_s=ramp_s + 120, max_buffer_s=MAX_BUFFER_S)
            for i, v in enumerate(viewers)]


def _links(net) -> dict[str, dict]:
    """isp1's border peering and transit links now: path, kernel bytes and relay payload toward
    the border router (relay "" without relays)."""
    from emulation.probes import link_counters, relay_counters
    plan = net.plan
    mine = {lk.name: bgp_bytes.PATH_OF_CLASS[lk.cls] for lk in plan.links
            if lk.cls in bgp_bytes.PATH_OF_CLASS and bgp_bytes.border_link(plan, lk, ISP)}
    kernel, relay = link_counters(net), relay_counters(net)
    return {name: {"path": path, "kernel_wire_bytes": kernel[name]["to_node_bytes"],
                   "relay_payload_bytes": relay[name]["to_node_payload_bytes"] if name in relay else ""}
            for name, path in mine.items()}


def _window_tables(bounds: list[tuple[float, dict]], tables: dict) -> None:
    """windows.csv and link_bytes.csv from the counter readings at every window boundary:
    steady start, then each event, its steering change, and the end."""
    names = [("steady", "settled")] + [(e, w) for e in EVENTS for w in bgp_bytes.WINDOWS]
    for (phase, window), (t0, a), (t1, z) in zip(names, bounds, bounds[1:]):
        tables["windows"].append({"phase": phase, "window": window, "t_start": round(t0, 3), "t_end": round(t1, 3)})
        for name, r in sorted(z.items()):
            relay = "" if "" in (r["relay_payload_bytes"], a[name]["relay_payload_bytes"]) \
                else r["relay_payload_bytes"] - a[name]["relay_payload_bytes"]
            tables["link_bytes"].append({"phase": phase, "window": window, "link": name, "path": r["path"],
                                         "kernel_wire_bytes": r["kernel_wire_bytes"] - a[name]["kernel_wire_bytes"],
                                         "relay_payload_bytes": relay})


def _viewer_tables(svc, viewers: list[str], titles: dict, tables: dict) -> None:
    """chunks.csv and access.csv (isp1's viewers' segment requests at every server), each row
    with its plan path `via`, and sessions.csv of isp1's players (those that started)."""
    servers = ["origin", *(o["name"] for o in svc.dep["ocas"])]
    access = read_access(svc.logs, "bgp")
    for v in viewers:
        paths = bgp_bytes.source_paths(svc.plan, ISP, servers, v)
        for c in read_rows(svc.logs / f"chunks-{v}.csv"):
            tables["chunks"].append({"host": v, **c, "via": paths[c["server"]]})
        client = svc.plan.primary_ip(v)
        tables["access"] += [{**r, "via": paths[r["server"]]} for r in access if r["client"] == client]
        for s in read_jsonl(svc.logs / f"sessions-{v}.jsonl"):
            if not s.get("started_unix"):  # the ramp's tail: stopped before its start
                continue
            s.pop("servers", None)
            s["errors"] = len(s.get("errors") or [])
            tables["sessions"].append({"host": v, **s, "held": s.get("title") == titles["held"]})


# ---- pure summary --------------------------------------------------------------------------
def summarize(run_dir: Path) -> list[dict]:
    """summary.csv: one row per phase (steady, then each event): BGP convergence and steering
    times, BGP's bytes and messages over all speakers, and the viewers' bytes of the phase's
    settled window (bgp_bytes.summary_columns; with bytes.csv and path_bytes.csv, when the run
    has players' tables); needs no root and no network."""
    events = read_table(table_path(run_dir, "events"), optional=False)
    traffic = read_table(table_path(run_dir, "bgp_traffic"), optional=False)
    ev = {e["event"]: e for e in events.to_dict("records")}
    by, paths, agree = _viewer_bytes(run_dir)
    rows = []
    for phase in PHASES:
        t = traffic[traffic["phase"] == phase]
        if t.empty:
            continue
        duration_s = float(t["duration_s"].iloc[0])
        n_bytes = int(t["bytes_received"].sum())
        e = ev.get(phase, {})
        rows.append({"phase": phase, "duration_s": duration_s,
                     "bgp_converged_s": e.get("bgp_converged_s"), "steering_s": e.get("steering_s"),
                     "bgp_bytes": n_bytes, "bgp_bytes_per_s": round(n_bytes / duration_s, 1) if duration_s else None,
                     "frr_messages": int(t["frr_messages_received"].sum()),
                     "frr_updates": int(t["frr_updates_received"].sum()),
                     **(bgp_bytes.summary_columns(phase, by, paths) | agree if paths else {})})
    write_csv(run_dir / "summary.csv", rows)
    return rows


def _viewer_bytes(run_dir: Path) -> tuple[list[dict], list[dict], dict]:
    """bytes.csv and path_bytes.csv rebuilt from the saved tables, and the run's agreement;
    ([], [], {}) for a run saved before the scenario had players."""
    windows = read_rows(table_path(run_dir, "windows"))
    if not windows:
        return [], [], {}
    by = bgp_bytes.byte_rows(read_rows(table_path(run_dir, "chunks")), read_rows(table_path(run_dir, "sessions")),
                             windows)
    paths = bgp_bytes.path_rows(by, read_rows(table_path(run_dir, "link_bytes")), windows,
                                read_rows(table_path(run_dir, "access")))
    write_csv(run_dir / "bytes.csv", by)
    write_csv(run_dir / "path_bytes.csv", paths)
    return by, paths, bgp_bytes.agreement(paths)


def format_table(rows: list[dict]) -> str:
    cols = ["phase", "duration_s", "bgp_converged_s", "steering_s", "bgp_bytes", "bgp_bytes_per_s",
            "frr_messages", "frr_updates"]
    viewer_cols = ["embedded_mb", "ixp_mb", "origin_mb", "new_embedded_mb", "ixp_path_log_mb",
                   "ixp_path_relay_mb", "transit_path_log_mb", "transit_path_relay_mb", "path_gap_pct"]
    return text_table(rows, cols + [c for c in viewer_cols if rows and c in rows[0]])


def check_plan(plan) -> None:
    plan.node(OCA)  # a clear PlanError if the topology lacks the OCA this scenario withdraws from


SCENARIO = Scenario(
    name="bgp", settings=_settings, body=body, summarize=summarize, format_table=format_table,
    tables=("events", "bgp_traffic", "windows", "link_bytes", "chunks", "sessions", "access"), key=("phase",),
    stable=("phase",), check_plan=check_plan, default_abr="fixed",
    manifest=lambda cfg: {"events": EVENTS, "isp": ISP})


def run(a) -> int:
    """`ocalab run bgp`: always under --routing bgp."""
    from harness.runner import run as run_scenario
    if getattr(a, "routing", "bgp") != "bgp":
        print("bgp: runs with --routing bgp", flush=True)
    return run_scenario(argparse.Namespace(**{**vars(a), "routing": "bgp"}), SCENARIO)
