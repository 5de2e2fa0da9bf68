"""The viewers' bytes of the bgp scenario, per phase window, by source and by path. Pure.

Each phase (steady, then each event) has two windows: `converging` (the event until steering
changed; empty for steady) and `settled` (steering changed until the phase's end). Two sources:
- the players' chunk logs: a chunk counts in the window its completion time falls in, with
  the bytes of its body, from its server (`source`: the tier, embedded / ixp / origin), over the
  path the plan gives from that server to the viewer (`path`: `ixp` when it crosses the ISP
  border's peering link, `transit` its transit link, `isp` neither);
- the per-link counters of the ISP border's peering and transit links, toward the border
  router: the relays' TCP payload from the content servers' port (new sequence bytes only,
  emulation.tcpcount: bodies and HTTP headers; nothing on a machine without relays) and the
  kernel's interface bytes (frames with headers, and BGP, ACKs, probes).
`new_session_bytes`: the bytes of chunks whose session started in the window (its manifest
came after steering changed), so a steering change shows in them at once.
`sent_bytes`: the servers' access logs, 200 responses to the ISP's viewers by their end time,
over the same paths (the run's total also counts those that ended after the last window). A request that waited out a link failure can be answered after its player
gave up (a response nobody watched): it crosses the link, so the link carries between what the
players received and what the servers sent.
Agreement, per path over the whole run (phase "all"): log x (1 - TOLERANCE_PCT) <= relay
payload <= sent x (1 + TOLERANCE_PCT) (headers ~0.05%); gap_pct = 100 x (relay - log) / log and
sent_gap_pct against `sent` are reported per window too, where a chunk completing just after a
boundary moves up to one segment per playing session across it.
"""
from __future__ import annotations

from scenarios.bytecheck import gap_pct  # "" below bytecheck.MIN_BYTES or without a value

PATHS = ("ixp", "transit")
PATH_OF_CLASS = {"peering": "ixp", "transit": "transit"}
WINDOWS = ("converging", "settled")
TOLERANCE_PCT = 1.0


def source_paths(plan, isp: str, servers: list[str], viewer: str) -> dict[str, str]:
    """server -> path (`ixp`, `transit` or `isp`) of its bytes to `viewer`, from the plan: the
    class of the ISP border link the plan path crosses."""
    from topologies.routes import path_links
    links = {lk.name: lk for lk in plan.links}
    addr = plan.primary_ip(viewer)
    out = {}
    for s in servers:
        crossed = [PATH_OF_CLASS[links[n].cls] for n in path_links(plan, s, addr)
                   if links[n].cls in PATH_OF_CLASS and border_link(plan, links[n], isp)]
        out[s] = crossed[0] if crossed else "isp"
    return out


def border_link(plan, lk, isp: str) -> bool:
    """Whether `lk` joins `isp`'s border router to the outside (its peering or transit link)."""
    return any(plan.node(e.node).role == "border" and plan.node(e.node).domain == isp for e in (lk.a, lk.b))


def window_of(t: float, windows: list[dict]) -> tuple[str, str] | None:
    """(phase, window) whose [t_start, t_end) holds t; None outside every window."""
    for w in windows:
        if float(w["t_start"]) <= t < float(w["t_end"]):
            return w["phase"], w["window"]
    return None


def byte_rows(chunks: list[dict], sessions: list[dict], windows: list[dict]) -> list[dict]:
    """bytes.csv: one row per (phase, window, source, path) that carried a chunk. `chunks` need
    time, viewer, tier, bytes, via (the path); `sessions` viewer and started_unix."""
    started = {s["viewer"]: float(s["started_unix"]) for s in sessions if s.get("started_unix") not in (None, "")}
    bounds = {(w["phase"], w["window"]): float(w["t_start"]) for w in windows}
    acc: dict[tuple, dict] = {}
    for c in chunks:
        where = window_of(float(c["time"]), windows)
        if where is None:
            continue
        key = (*where, c["tier"], c["via"])
        r = acc.setdefault(key, {"chunks": 0, "log_bytes": 0, "new_session_bytes": 0})
        n = int(c["bytes"])
        r["chunks"] += 1
        r["log_bytes"] += n
        if started.get(c["viewer"], -1.0) >= bounds[where]:
            r["new_session_bytes"] += n
    order = {(w["phase"], w["window"]): i for i, w in enumerate(windows)}
    return [{"phase": p, "window": w, "source": s, "path": pa, **v}
            for (p, w, s, pa), v in sorted(acc.items(), key=lambda kv: (order[kv[0][:2]], kv[0][2:]))]


def path_rows(bytes_rows: list[dict], links: list[dict], windows: list[dict], access: list[dict]) -> list[dict]:
    """path_bytes.csv: per (phase, window) and path, the log's bytes beside the border link's
    counters (`links`: phase, window, path, relay_payload_bytes ("" without relays),
    kernel_wire_bytes) and the servers' (`access`: ts, status, bytes, via), then the run's
    totals as phase/window "all"."""
    keys = [(w["phase"], w["window"]) for w in windows] + [("all", "all")]
    sent: dict[tuple, int] = {}
    t0 = min((float(w["t_start"]) for w in windows), default=0.0)
    for r in (r for r in access if int(r["status"]) == 200 and float(r["ts"]) >= t0):
        # a response still on its way at the end is logged after it: in the run's total only
        where = window_of(float(r["ts"]), windows) or ("all", "all")
        for k in {(*where, r["via"]), ("all", "all", r["via"])}:
            sent[k] = sent.get(k, 0) + int(r["bytes"])
    out = []
    for pw in keys:
        for path in PATHS:
            def mine(r, pw=pw, path=path):
                return r["path"] == path and (pw == ("all", "all") or (r["phase"], r["window"]) == pw)
            log = sum(int(r["log_bytes"]) for r in bytes_rows if mine(r))
            lk = [r for r in links if mine(r)]
            relay = "" if not lk or any(r["relay_payload_bytes"] in ("", None) for r in lk) \
                else sum(int(r["relay_payload_bytes"]) for r in lk)
            n_sent = sent.get((*pw, path), 0)
            out.append({"phase": pw[0], "window": pw[1], "path": path, "log_bytes": log, "sent_bytes": n_sent,
                        "relay_payload_bytes": relay,
                        "kernel_wire_bytes": sum(int(r["kernel_wire_bytes"]) for r in lk),
                        "gap_pct": gap_pct(_opt(relay), log), "sent_gap_pct": gap_pct(_opt(relay), n_sent)})
    return out


def agreement(paths: list[dict]) -> dict:
    """The run's largest absolute log-vs-relay gap over PATHS, and whether every path's relay
    payload lies within [log, sent] widened by TOLERANCE_PCT ("" and None when no path carried
    bytecheck.MIN_BYTES or there are no relays)."""
    judged = [r for r in paths if r["phase"] == "all" and r["gap_pct"] != ""]
    if not judged:
        return {"path_gap_pct": "", "paths_agree": None}
    tol = TOLERANCE_PCT / 100
    ok = all(int(r["log_bytes"]) * (1 - tol) <= int(r["relay_payload_bytes"]) <= int(r["sent_bytes"]) * (1 + tol)
             for r in judged)
    return {"path_gap_pct": round(max(abs(float(r["gap_pct"])) for r in judged), 3), "paths_agree": ok}


def summary_columns(phase: str, bytes_rows: list[dict], paths: list[dict]) -> dict:
    """One phase's bytes as summary.csv columns (MB): by source (log) and of new sessions by
    source in its settled window (after steering changed); per path (log and counters) over
    the whole phase, whose ends are events, not steering changes a transfer may straddle."""
    mine = [r for r in bytes_rows if r["phase"] == phase and r["window"] == "settled"]
    out = {}
    for s in ("embedded", "ixp", "origin"):
        out[f"{s}_mb"] = _mb(sum(int(r["log_bytes"]) for r in mine if r["source"] == s))
        out[f"new_{s}_mb"] = _mb(sum(int(r["new_session_bytes"]) for r in mine if r["source"] == s))
    for path in PATHS:
        rs = [r for r in paths if (r["phase"], r["path"]) == (phase, path)]
        relay = [r["relay_payload_bytes"] for r in rs]
        out[f"{path}_path_log_mb"] = _mb(sum(int(r["log_bytes"]) for r in rs))
        out[f"{path}_path_relay_mb"] = "" if not rs or "" in relay else _mb(sum(int(x) for x in relay))
        out[f"{path}_path_kernel_mb"] = _mb(sum(int(r["kernel_wire_bytes"]) for r in rs))
    return out


def _opt(n):
    return None if n == "" else n


def _mb(n: int) -> float:
    return round(n / 1e6, 3)
