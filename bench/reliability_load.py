"""Connection- and load-level reliability checks: slowloris, the connection cap, overload
by a greedy client, and SIGKILL of an OCA while it fills.

Each `check_*` returns a JSON-able dict whose `ok` is True iff the property held; latencies
are reported (percentiles from contracts.stats) and gate `ok` only for the overload p99 bound.
"""
from __future__ import annotations

import asyncio
import hashlib
import http.client
import json
import random
import sys
import threading
import time
from pathlib import Path

from appliances.content import Catalog
from bench import reliability_fuzz as rf
from bench.reliability_servers import Integrity, Servers, http_get, post_command
from bench.reliability_spec import (FAIR_SHARE_MIN, GREEDY_IP, HEADER_TIMEOUT_S, LEGIT_IPS,
                                    OVERLOAD_P99_BOUND_MS, seg_path)
from contracts.stats import quantile


def _pct(values: list[float], q: float) -> float | None:
    """q-quantile rounded to 2 decimals; None for no values."""
    return round(quantile(values, q), 2) if values else None


async def _legit_loop(port: int, until: float, integ: Integrity, rng: random.Random,
                      pause_s: float = 0.02, source_ip: str | None = None) -> dict:
    """Sequential GETs of small segments (from source_ip when given); latency of every
    exchange, bytes verified."""
    lat, counts = [], {}
    while time.monotonic() < until:
        key = ("t000" + str(rng.randrange(4)), 235, rng.randrange(10))  # check_overload warms
        t0 = time.monotonic()
        try:
            st, hdrs, body = await asyncio.to_thread(http_get, port, seg_path(key), None, "GET",
                                                     None, 10.0, source_ip)
        except (OSError, http.client.HTTPException) as exc:
            counts[f"error:{type(exc).__name__}"] = counts.get(f"error:{type(exc).__name__}", 0) + 1
            continue
        lat.append((time.monotonic() - t0) * 1000)
        counts[str(st)] = counts.get(str(st), 0) + 1
        if st == 200 and not integ.check(key, body):
            counts["bad_bytes"] = counts.get("bad_bytes", 0) + 1
        if st == 503 and "Retry-After" not in hdrs:
            counts["503_without_retry_after"] = counts.get("503_without_retry_after", 0) + 1
        await asyncio.sleep(pause_s)
    return {"n": len(lat), "p50_ms": _pct(lat, 0.5), "p99_ms": _pct(lat, 0.99),
            "max_ms": _pct(lat, 1.0), "status": counts}


def check_slowloris(port: int, n_conns: int, integ: Integrity, seed: int,
                    slack_s: float = 1.0) -> dict:
    """Slow heads (at once, or after 0.6 x the timeout), slow bodies and silent connections
    must each be cut within header_timeout_s (+ slack_s) of connecting; legit clients
    meanwhile get every segment (bytes verified)."""
    async def run() -> tuple[list[dict], dict, dict]:
        rng = random.Random(seed)
        base = await _legit_loop(port, time.monotonic() + 1.5, integ, rng)
        kinds = ["head", "late", "body", "silent"]
        slow = [rf.slow_client("127.0.0.1", port, kinds[i % 4], 0.5, HEADER_TIMEOUT_S * 4,
                               0.6 * HEADER_TIMEOUT_S) for i in range(n_conns)]
        legit = _legit_loop(port, time.monotonic() + HEADER_TIMEOUT_S + 1.5, integ, rng)
        *cuts, during = await asyncio.gather(*slow, legit)
        return cuts, base, during
    cuts, base, during = asyncio.run(run())
    bound = HEADER_TIMEOUT_S + slack_s  # from connect; slack for the client's scheduling
    times = [c["cut_s"] for c in cuts if c["cut_s"] is not None]
    uncut = sum(c["cut_s"] is None or c["cut_s"] > bound for c in cuts)
    statuses = {}
    for c in cuts:
        statuses[f"{c['kind']}:{c['status']}"] = statuses.get(f"{c['kind']}:{c['status']}", 0) + 1
    legit_ok = set(during["status"]) == {"200"} and set(base["status"]) == {"200"}
    return {"connections": n_conns, "header_timeout_s": HEADER_TIMEOUT_S, "cut_bound_s": bound,
            "cut_p50_s": _pct(times, 0.5), "cut_max_s": _pct(times, 1.0), "not_cut": uncut,
            "outcomes": statuses, "legit_baseline": base, "legit_during": during,
            "ok": uncut == 0 and legit_ok}


def check_conn_cap(port: int, max_conns: int, extra: int) -> dict:
    """max_conns silent connections fill the cap; `extra` more send a request at once (with
    a 2 KB header, as a real client would) and must read 503 + Retry-After, not a reset."""
    request = (b"GET /v/t0000/235/0 HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 2000
               + b"\r\n\r\n")

    async def run() -> tuple[list[bytes], list[str]]:
        held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(max_conns)]
        await asyncio.sleep(1.0)  # a busy server takes a while to accept and count them
        answers = []
        for _ in range(extra):
            r, w = await asyncio.open_connection("127.0.0.1", port)
            w.write(request)
            try:
                answers.append((await asyncio.wait_for(r.read(), 3.0))[:200].decode("latin-1"))
            except (ConnectionError, TimeoutError) as exc:
                answers.append(type(exc).__name__)
            w.close()
        quiet = []
        for r, w in held:
            try:
                quiet.append(await asyncio.wait_for(r.read(4096), 0.05))
            except TimeoutError:
                quiet.append(b"")
            w.close()
        return quiet, answers
    quiet, answers = asyncio.run(run())
    refused = [a for a in answers if a.startswith("HTTP/1.1 503 ")]
    with_ra = sum("\r\nRetry-After: " in a for a in refused)
    held = sum(q == b"" for q in quiet)
    return {"max_conns": max_conns, "opened": max_conns + extra, "refused_503": len(refused),
            "refused_with_retry_after": with_ra, "held_open": held,
            "other_answers": sorted({a[:20] for a in answers} - {a[:20] for a in refused}),
            "ok": len(refused) == extra and with_ra == extra and held == max_conns}


async def _overload_run(port: int, integ: Integrity, n_greedy: int, duration_s: float,
                        seed: int, big_paths: list[str]) -> tuple[dict, dict, list[dict]]:
    """(legit baseline, greedy generator's counts, one result per legit client) of one overload
    period. The generator's connections all come from GREEDY_IP (one client); each legit
    client has its own address from LEGIT_IPS."""
    # baseline: every legit client at once, so the OCA knows them all (for recent_s = 2 s) when
    # the generator floods it (one arriving later waits until the streams the greedy client
    # already holds end: none is cut)
    bases = await asyncio.gather(*(_legit_loop(port, time.monotonic() + 1.5, integ,
                                               random.Random(seed - 1 - i), 0.05, ip)
                                   for i, ip in enumerate(LEGIT_IPS)))
    gen = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.reliability_fuzz", "greedy", str(port),
        str(n_greedy), str(duration_s), "inf", GREEDY_IP, *big_paths,
        stdout=asyncio.subprocess.PIPE)
    await asyncio.sleep(0.5)  # let the generator start and saturate
    until = time.monotonic() + duration_s - 1.0
    legit = await asyncio.gather(*(_legit_loop(port, until, integ, random.Random(seed + i), 0.05,
                                               ip) for i, ip in enumerate(LEGIT_IPS)))
    base = {"p99_ms": max((b["p99_ms"] for b in bases if b["p99_ms"] is not None), default=None)}
    out, _ = await asyncio.wait_for(gen.communicate(), duration_s + 30)
    if gen.returncode != 0:
        raise RuntimeError(f"greedy load generator exited {gen.returncode}")
    return base, json.loads(out), list(legit)


def fair_shares(legit: list[dict], greedy: dict, min_ratio: float = FAIR_SHARE_MIN) -> dict:
    """Each legit client's successes against its fair share (pure).

    N clients compete: the legit ones plus the greedy generator (one client, one address).
    C = successful responses (200) of all of them during the overload period. A legit
    client's demand is every request it made (200 + 503: a closed loop, so refusals, which
    come back fast, only raise it), and its fair share of successes is min(demand, C / N).
    `fair_ok` iff every legit client got >= min_ratio x its fair share."""
    n = len(legit) + 1
    c = greedy.get("200", 0) + sum(lg.get("200", 0) for lg in legit)
    rows = []
    for lg in legit:
        demand = lg.get("200", 0) + lg.get("503", 0)
        share = min(demand, c / n)
        ratio = lg.get("200", 0) / share if share > 0 else 0.0
        rows.append({"successes": lg.get("200", 0), "demand": demand,
                     "fair_share": round(share, 2), "ratio": round(ratio, 3)})
    worst = min((r["ratio"] for r in rows), default=0.0)
    return {"clients": n, "successes_total": c, "per_client_share": round(c / n, 2),
            "legit": rows, "min_ratio": worst, "required_ratio": min_ratio,
            "fair_ok": bool(rows) and worst >= min_ratio}


def check_overload(port: int, integ: Integrity, n_greedy: int, duration_s: float,
                   seed: int, limits: dict) -> dict:
    """A greedy load generator (own process and address, full speed, big segments, ignores
    Retry-After) against an OCA with stream and egress limits; 4 legit clients (one address
    each) fetch small segments. Passes iff every 503 carries Retry-After, the greedy client
    is refused, nobody gets an error or wrong bytes, each legit client gets >= FAIR_SHARE_MIN
    of its fair share (`fair_shares`) and the legit p99 stays within its bound."""
    big = [seg_path(("t0006", 5800, i)) for i in range(4)]
    small = [seg_path((f"t000{t}", 235, i)) for t in range(4) for i in range(10)]
    for path in big + small:  # warm the store: every client is served from disk, so the
        http_get(port, path)  # figures measure admission, not first pulls from the origin
    base, g_total, legit = asyncio.run(_overload_run(port, integ, n_greedy, duration_s, seed,
                                                     big))
    integ.add_external(g_total.get("200", 0), g_total.pop("bytes_verified", 0),
                       g_total.get("bad_bytes", 0))
    l_status: dict[str, int] = {}
    for lg in legit:
        for k, v in lg["status"].items():
            l_status[k] = l_status.get(k, 0) + v
    lat_p99 = [lg["p99_ms"] for lg in legit if lg["p99_ms"] is not None]
    p99 = max(lat_p99) if lat_p99 else None
    refused = g_total.get("503", 0) + l_status.get("503", 0)
    functional = (g_total.get("503", 0) > 0 and not g_total.get("503_without_retry_after")
                  and not any(k.startswith("error") or k in ("bad_bytes", "503_without_retry_after")
                              for k in l_status) and set(l_status) <= {"200", "503"}
                  and set(g_total) <= {"200", "503", "bad_bytes"}
                  and not g_total.get("bad_bytes"))
    fair = fair_shares([lg["status"] for lg in legit], g_total)
    return {**limits, "greedy_clients": n_greedy, "legit_clients": len(legit),
            "duration_s": duration_s, "greedy": g_total, "legit_status": l_status,
            "refused_503_total": refused, "fairness": fair,
            "legit_p50_ms": max((lg["p50_ms"] for lg in legit if lg["p50_ms"]), default=None),
            "legit_p99_ms": p99, "baseline_p99_ms": base["p99_ms"],
            "p99_bound_ms": OVERLOAD_P99_BOUND_MS, "functional_ok": functional,
            "fair_ok": fair["fair_ok"],
            "ok": (functional and fair["fair_ok"] and p99 is not None
                   and p99 <= OVERLOAD_P99_BOUND_MS)}


def _store_audit(store: Path, catalog: Catalog) -> dict:
    """Files in objects/ whose bytes do not match their name's SHA-256 or the catalog size."""
    bad, n = [], 0
    for p in (store / "objects").glob("*/*/*"):
        n += 1
        index, _, sha = p.name.partition(".")
        data = p.read_bytes()
        key = (p.parent.parent.name, int(p.parent.name), int(index))
        if hashlib.sha256(data).hexdigest() != sha or len(data) != catalog.segment_size(*key):
            bad.append(str(p.relative_to(store)))
    return {"objects": n, "corrupt": bad, "tmp_files": len(list((store / "tmp").iterdir()))}


def _start_load_for_kill(mode: str, port: int, plan: dict, integ: Integrity, key: bytes):
    """Begin filling: POST the plan signed with `key` (mode fill) or pull misses through
    (mode proxy, in a thread that stops at the first connection error). Returns the thread
    or None."""
    if mode == "fill":
        st, _, _ = post_command(port, "/fill", json.dumps(plan).encode(), key)
        if st != 202:
            raise RuntimeError(f"kill-during-fill: fill plan refused with {st}")
        return None

    def pull() -> None:
        for seg in plan["segments"]:
            try:
                st, _, body = http_get(port, seg_path(tuple(seg)), timeout_s=5)
            except (OSError, http.client.HTTPException):
                return  # the OCA was killed: expected
            if st == 200:
                integ.check(tuple(seg), body)
    t = threading.Thread(target=pull, daemon=True)
    t.start()
    return t


def _kill_trial(servers: Servers, origin_port: int, store: Path, name: str, mode: str,
                delay_s: float, plan: dict, integ: Integrity) -> dict:
    """Start an OCA on `store`, load it (mode fill or proxy), SIGKILL it after delay_s, restart
    it without filling and GET every plan segment: counts of what it served."""
    port = servers.oca(name, origin_port, store, "--miss", mode if mode == "proxy"
                       else "redirect", "--mem-mb", "0")
    puller = _start_load_for_kill(mode, port, plan, integ, servers.command_key)
    time.sleep(delay_s)
    servers.kill(name)
    if puller is not None:
        puller.join(timeout=10)
    partial_on_disk = len(list((store / "tmp").iterdir()))
    port = servers.oca(name, origin_port, store, "--miss", "redirect", "--mem-mb", "0")
    served = redirected = wrong = 0
    for seg in plan["segments"]:
        key = tuple(seg)
        st, _, body = http_get(port, seg_path(key))
        if st == 200:
            served += 1
            wrong += not integ.check(key, body)
        elif st == 302:
            redirected += 1
        else:
            wrong += 1
    audit = _store_audit(store, integ.catalog)
    servers.stop_one(name)
    return {"partial_files_at_kill": partial_on_disk, "complete_served": served,
            "redirected": redirected, "partial_or_wrong_served": wrong,
            "corrupt_files": len(audit["corrupt"]), "tmp_after_restart": audit["tmp_files"]}


def check_kill_during_fill(servers: Servers, origin_port: int, work: Path, trials: int,
                           seed: int, integ: Integrity) -> dict:
    """SIGKILL an OCA at a random time while it fills (plan, or proxy misses), restart it on
    the same store: it must serve only complete, verified objects (302 for the rest)."""
    rng = random.Random(seed)
    segs = [["t0004", k, i] for i in range(4) for k in (750, 1750, 3000)]
    plan = {"segments": segs, "rate_mbps": 40, "sources": [f"http://127.0.0.1:{origin_port}"]}
    rows = []
    for t in range(trials):
        mode = "fill" if t % 2 == 0 else "proxy"
        delay_s = rng.uniform(0.1, 1.6) if mode == "fill" else rng.uniform(0.02, 0.4)
        rows.append({"trial": t, "mode": mode, "kill_after_s": round(delay_s, 3),
                     **_kill_trial(servers, origin_port, work / f"killfill{t}", f"killfill{t}",
                                   mode, delay_s, plan, integ)})
    ok = all(r["partial_or_wrong_served"] == 0 and r["corrupt_files"] == 0
             and r["tmp_after_restart"] == 0 for r in rows)
    return {"trials": trials, "plan_segments": len(segs), "rows": rows,
            "kills_mid_object": sum(r["partial_files_at_kill"] > 0 for r in rows),
            "partial_served_total": sum(r["partial_or_wrong_served"] for r in rows), "ok": ok}
