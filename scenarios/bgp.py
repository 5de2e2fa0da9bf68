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

Tables: events.csv (event, t_unix, bgp_converged_s, steering_s), bgp_traffic.csv (phase x
speaker: bytes and messages received). `summarize(run_dir)` writes summary.csv (no root).
"""
from __future__ import annotations

import argparse
import json
import re
import time
import urllib.request
from pathlib import Path

from harness import progress
from harness.rundir import table_path, write_csv
from harness.runner import Scenario
from scenarios.logs import read_table, text_table

ISP, OCA, VIEWER_IP, PREFIX = "isp1", "i1oca1", "198.18.1.10", "198.18.1.0/24"
EVENTS = ("ixp_link_down", "ixp_link_up", "prefix_withdraw", "prefix_announce")
PHASES = ("steady", *EVENTS)
POLL_S = 0.05
WAIT_S = 60.0


def _settings(quick: bool) -> dict:
    return {"steady_s": 5.0 if quick else 20.0, "settle_s": 2.0 if quick else 10.0,
            "catalog": {"seed": 1, "n_titles": 4, "duration_s": 20}}


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
    svc = Services(net, run_dir / "arms" / "bgp", ServiceOptions(
        arm="embedded", catalog=cfg["catalog"], capacity_mb=50, miss="proxy"))
    try:
        svc.start()
        _wait_rank(net, lambda r: r[:2] == [OCA, ixp_oca], time.monotonic(), "steady state")
        marks = [(time.time(), _sample(net))]
        progress.phase("steady")
        time.sleep(cfg["steady_s"])
        marks.append((time.time(), _sample(net)))
        for event in EVENTS:
            progress.phase(event)
            t_unix = time.time()
            conv, steer = _event(net, event, link, ixp_oca)
            print(f"bgp: {event}: BGP converged {conv:.2f} s, steering changed {steer:.2f} s", flush=True)
            tables["events"].append({"event": event, "t_unix": round(t_unix, 3), "bgp_converged_s": round(conv, 3),
                                     "steering_s": round(steer, 3)})
            time.sleep(cfg["settle_s"])
            marks.append((time.time(), _sample(net)))
    finally:
        svc.stop()
    for phase, (t0, a), (t1, z) in zip(PHASES, marks, marks[1:]):
        for s in sorted(z):
            tables["bgp_traffic"].append({
                "phase": phase, "speaker": s, "t_start": round(t0, 3), "t_end": round(t1, 3),
                "duration_s": round(t1 - t0, 3),
                "bytes_received": received_delta(a[s]["sockets"], z[s]["sockets"]),
                "frr_messages_received": z[s]["messages"] - a[s]["messages"],
                "frr_updates_received": z[s]["updates"] - a[s]["updates"]})
    return {"ixp_link": link, "oca": OCA, "prefix": PREFIX, "viewer": VIEWER_IP}


# ---- pure summary --------------------------------------------------------------------------
def summarize(run_dir: Path) -> list[dict]:
    """summary.csv: one row per phase (steady, then each event): BGP convergence and steering
    times, and BGP's bytes and messages over all speakers; needs no root and no network."""
    events = read_table(table_path(run_dir, "events"), optional=False)
    traffic = read_table(table_path(run_dir, "bgp_traffic"), optional=False)
    ev = {e["event"]: e for e in events.to_dict("records")}
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
                     "frr_updates": int(t["frr_updates_received"].sum())})
    write_csv(run_dir / "summary.csv", rows)
    return rows


def format_table(rows: list[dict]) -> str:
    cols = ["phase", "duration_s", "bgp_converged_s", "steering_s", "bgp_bytes", "bgp_bytes_per_s",
            "frr_messages", "frr_updates"]
    return text_table(rows, cols)


def check_plan(plan) -> None:
    plan.node(OCA)  # a clear PlanError if the topology lacks the OCA this scenario withdraws from


SCENARIO = Scenario(
    name="bgp", settings=_settings, body=body, summarize=summarize, format_table=format_table,
    tables=("events", "bgp_traffic"), key=("phase",), stable=("phase",), check_plan=check_plan,
    manifest=lambda cfg: {"events": EVENTS, "isp": ISP})


def run(a) -> int:
    """`ocalab run bgp`: always under --routing bgp."""
    from harness.runner import run as run_scenario
    if getattr(a, "routing", "bgp") != "bgp":
        print("bgp: runs with --routing bgp", flush=True)
    return run_scenario(argparse.Namespace(**{**vars(a), "routing": "bgp"}), SCENARIO)
