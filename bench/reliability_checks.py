"""Request-level reliability checks: RFC 9110 conformance, hostile-request fuzzing, path
traversal, the token matrix and coverage-guided parser fuzzing.

Each `check_*` takes the ports of running servers (see reliability_servers) and returns a
JSON-able dict whose `ok` is True iff the functional property held; every 200 body it reads
goes through the shared `Integrity`.
"""
from __future__ import annotations

import asyncio
import hashlib
import random
import subprocess
import sys
import time

from appliances import tokens
from bench import reliability_cases as rc
from bench import reliability_fuzz as rf
from bench.reliability_servers import Integrity, Servers, http_get
from bench.reliability_spec import CONF_KEY, HEADER_TIMEOUT_S, IDLE_TIMEOUT_S, seg_path


def check_conformance(targets: dict[str, int], integ: Integrity) -> dict:
    """Every case of the RFC 9110 table against every target; ok needs >= 40 cases and no
    failure."""
    data = integ.data(CONF_KEY)
    etag = f'"{hashlib.sha256(data).hexdigest()[:32]}"'
    cases = rc.conformance_cases(len(data), etag)
    rows, failures = [], []
    for case in cases:
        row = {"case": case.name, "method": case.method, "request": case.headers,
               "expect": case.status, "rfc9110": case.rfc}
        for target, port in targets.items():
            st, hdrs, body = http_get(port, case.path or seg_path(CONF_KEY), case.headers,
                                      case.method, b"" if case.method == "POST" else None)
            problems = rc.check_case(case, st, hdrs, body, data, etag)
            if case.body in (rc.FULL, rc.RANGE) and not problems:  # multipart: parts checked
                span = case.ranges[0] if case.body == rc.RANGE else (0, None)
                integ.check(CONF_KEY, body, *span)
            row[target] = st if not problems else f"FAIL {st}: {'; '.join(problems)}"
            if problems:
                failures.append(f"{target} / {case.name}: {'; '.join(problems)}")
        rows.append(row)
    n_checks = len(cases) * len(targets)
    return {"cases": len(cases), "targets": list(targets), "checks": n_checks,
            "passed": n_checks - len(failures), "failures": failures, "rows": rows,
            "ok": not failures and len(cases) >= 40}


def check_fuzz(port: int, servers: Servers, name: str, n: int, seed: int, integ: Integrity,
               canaries: tuple[bytes, ...], sign=None) -> dict:
    """n hostile requests against server `name`; then it must be alive and serve correct
    bytes (requests signed with sign(path) -> query when it checks tokens)."""
    paths = [seg_path(("t0000", 235, i)) for i in range(3)] + ["/health", "/fill/status"]
    corpus = rf.fuzz_corpus(seed, n, paths)
    rss_before = servers.rss_kib(name)
    access_log = servers.logs / f"{name}-access.jsonl"
    log_before = access_log.stat().st_size if access_log.exists() else None
    deadline_s = max(HEADER_TIMEOUT_S, IDLE_TIMEOUT_S) * 2 + 2
    late_s = max(HEADER_TIMEOUT_S, IDLE_TIMEOUT_S) + 1.5
    res = asyncio.run(rf.run_fuzz("127.0.0.1", port, corpus, deadline_s, 48, canaries, late_s))
    res.update(server=name, deadline_s=deadline_s, late_s=late_s, rss_kib_before=rss_before,
               rss_kib_after=servers.rss_kib(name) if servers.alive(name) else None)
    res["alive_after"] = servers.alive(name)
    if log_before is not None:  # log bytes per hostile request, longest line
        lines = access_log.read_bytes()[log_before:].splitlines()
        res["access_log"] = {"bytes_per_request": round(sum(map(len, lines)) / n, 1),
                             "max_line_bytes": max(map(len, lines), default=0)}
    res["correct_bytes_after"] = _serves_correct_bytes(port, integ, sign)
    log_ok = res.get("access_log", {}).get("max_line_bytes", 0) <= 1024
    res["ok"] = (log_ok and res["requests"] >= n and res["hangs"] == 0 and res["over_timeout"] == 0
                 and res["status_500"] == 0
                 and res["junk_responses"] == 0 and res["echoes"] == 0
                 and res["tracebacks"] == 0 and res["canary_leaks"] == 0 and res["smuggled"] == 0
                 and res["alive_after"] and res["correct_bytes_after"])
    return res


def _serves_correct_bytes(port: int, integ: Integrity, sign=None) -> bool:
    """Whole and ranged GETs of three segments all return the catalog's bytes."""
    after = []
    for key in [("t0000", 235, 0), ("t0003", 1750, 4), ("t0005", 5800, 9)]:
        target = seg_path(key) + (f"?{sign(seg_path(key))}" if sign else "")
        st, _, body = http_get(port, target)
        after.append(st == 200 and integ.check(key, body))
        st, _, body = http_get(port, target, {"Range": "bytes=100-4099"})
        after.append(st == 206 and integ.check(key, body, 100, 4100))
    return all(after)


def check_traversal(port: int, canaries: tuple[bytes, ...]) -> dict:
    """Every traversal shape once over a raw socket: status, and no canary bytes served.
    A 200 is allowed only where the target is a real segment path plus a harmless query."""
    async def one(target: str) -> bytes:
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                .encode("latin-1", "replace"))
        data = await asyncio.wait_for(r.read(), 10)
        w.close()
        return data
    rows, bad = [], []
    for shape in rf.TRAVERSAL:
        for name in ("canary.txt", "../canary.txt"):
            target = shape.replace("CANARY", name)
            if target in (r["target"] for r in rows):
                continue
            data = asyncio.run(one(target))
            status = data[9:12].decode("latin-1")
            leak = any(c in data for c in canaries)
            legit = target.split("?")[0] == seg_path(("t0000", 235, 0))
            rows.append({"target": target, "status": status, "leak": leak})
            if leak or (status == "200" and not legit):
                bad.append(target)
    return {"requests": len(rows), "rows": rows, "served_outside_store": bad, "ok": not bad}


def check_tokens(port: int, key: bytes, n_socket_mutations: int, n_pure_mutations: int,
                 seed: int, integ: Integrity) -> dict:
    """The token matrix (forged, tampered, expired, wrong prefix) over sockets, then random
    mutations of a genuine token: no attack and no mutation may be accepted."""
    now = int(time.time())
    cases = rc.token_cases(key, b"\x01" * 32, now)
    rows, wrong = [], []
    for c in cases:
        st, _, body = http_get(port, c.path + (f"?{c.query}" if c.query else ""))
        rows.append({"case": c.name, "expect": c.expect, "got": st})
        if st != c.expect:
            wrong.append(f"{c.name}: want {c.expect}, got {st}")
        if st == 200:
            integ.check(integ.catalog.parse_path(c.path), body)
    attacks = [r for r, c in zip(rows, cases) if c.expect != 200]
    accepted = sum(r["got"] not in (400, 403, 410) for r in attacks)
    mut = _token_mutations(port, key, n_socket_mutations, n_pure_mutations, seed, now)
    return {"matrix": rows, "matrix_attacks": len(attacks), "matrix_accepted": accepted,
            "matrix_wrong": wrong, **mut,
            "ok": (not wrong and accepted == 0 and mut["socket_mutations_accepted"] == 0
                   and mut["pure_mutations_accepted"] == 0)}


def _token_mutations(port: int, key: bytes, n_socket: int, n_pure: int, seed: int,
                     now: int) -> dict:
    """Random edits of one genuine token: the first n_socket are sent to the OCA, the rest go
    to tokens.verify directly. An edit that decodes to the genuine fields is no forgery."""
    rng = random.Random(seed)
    good = tokens.sign(key, "/v/t0001/", "127.0.0.0/8", now + 600)
    good_fields = rc.token_fields(good)
    socket_accepted = pure_accepted = pure_tried = 0
    statuses: dict[str, int] = {}
    for i in range(n_socket + n_pure):
        q = rc.mutate_query(rng, good)
        if rc.token_fields(q) == good_fields:
            continue
        if i < n_socket:
            st, _, _ = http_get(port, "/v/t0001/235/1?" + q)
            statuses[str(st)] = statuses.get(str(st), 0) + 1
            socket_accepted += st not in (400, 403, 410)
        else:
            pure_tried += 1
            pure_accepted += tokens.verify(key, "/v/t0001/235/1", "127.0.0.1", q,
                                           time.time()) is tokens.TokenResult.OK
    return {"socket_mutations": sum(statuses.values()), "socket_mutation_status": statuses,
            "socket_mutations_accepted": socket_accepted, "pure_mutations": pure_tried,
            "pure_mutations_accepted": pure_accepted}


def check_atheris(runs: int, max_s: int) -> dict:
    """Coverage-guided fuzzing of the pure parsers in subprocesses (skipped if not installed)."""
    try:
        import atheris  # noqa: F401
    except ImportError:
        return {"skipped": "atheris is not installed (pip install 'atheris>=2.3,<3')", "ok": True}
    out = {}
    for target in ("head", "ranges", "tokens"):
        p = subprocess.run([sys.executable, "-m", "bench.reliability_fuzz", target,
                            f"-runs={runs}", f"-max_total_time={max_s}", "-seed=1"],
                           capture_output=True, text=True, timeout=max_s + 60)
        done = [ln for ln in p.stderr.splitlines() if ln.startswith("Done ")]
        out[target] = {"exit": p.returncode, "summary": done[-1] if done else p.stderr[-400:]}
    out["ok"] = all(v["exit"] == 0 for v in out.values())
    return out
