"""`ocalab bench reliability`: HTTP conformance, fuzzing, slow/greedy clients, tokens,
integrity and kill-during-fill against real origin/OCA subprocesses on 127.0.0.1.

`run_reliability(out_dir, quick)` starts its own servers (port 0, READY line), runs every
check with bounded counts and time, writes reliability.md and reliability.json into out_dir,
prints a summary table and returns the result dict; `ok` is True iff every pass/fail check
passed. Figures that are speed (latencies) are reported; only functional properties gate `ok`
except the overload p99 bound, which is a documented bench target.
"""
from __future__ import annotations

import asyncio
import hashlib
import http.client
import json
import random
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from appliances import tokens
from appliances.content import Catalog, CatalogSpec
from bench import reliability_cases as rc
from bench import reliability_fuzz as rf

SPEC = CatalogSpec(seed=7, n_titles=8, duration_s=40)  # 10 segments per title
CAT_FLAGS = ["--catalog-seed", "7", "--titles", "8", "--duration-s", "40"]
CONF_KEY = ("t0001", 750, 2)
HEADER_TIMEOUT_S, IDLE_TIMEOUT_S = 2.0, 3.0
OVERLOAD_P99_BOUND_MS = 1000.0
LOAD_LIMITS = {"max_streams": 8, "egress_limit_mbps": 400.0}
LOAD_FLAGS = ["--max-streams", "8", "--egress-mbps", "400"]


class Servers:
    """Subprocess origin/OCAs; stderr to files under logs/; stop() terminates what it started."""

    def __init__(self, out_dir: Path) -> None:
        self.logs = out_dir / "reliability-logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, name: str, module: str, *args: str, timeout_s: float = 20.0) -> int:
        err = open(self.logs / f"{name}.stderr", "a", encoding="utf-8")
        proc = subprocess.Popen([sys.executable, "-m", module, "--listen", "127.0.0.1:0",
                                 *args, *CAT_FLAGS], stdout=subprocess.PIPE, stderr=err, text=True)
        err.close()
        ready, _, _ = select.select([proc.stdout], [], [], timeout_s)
        line = proc.stdout.readline() if ready else ""
        if not line.startswith("READY "):
            proc.kill()
            proc.wait(timeout=5)
            raise RuntimeError(f"{name} ({module}) did not print READY: {line!r}; see "
                               f"{self.logs / (name + '.stderr')}")
        self.procs[name] = proc
        return int(line.strip().rsplit(":", 1)[1])

    def oca(self, name: str, origin_port: int, store: Path, *flags: str) -> int:
        return self.start(name, "appliances.oca", "--upstream", f"http://127.0.0.1:{origin_port}",
                          "--store", str(store), "--capacity-mb", "256", "--name", name, *flags)

    def kill(self, name: str) -> None:
        proc = self.procs.pop(name)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)

    def stop_one(self, name: str) -> int:
        proc = self.procs.pop(name)
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout=10)
        finally:
            proc.stdout.close()

    def rss_kib(self, name: str) -> int:
        """Resident set size of a running server (from /proc)."""
        for line in Path(f"/proc/{self.procs[name].pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError(f"no VmRSS for {name}")

    def alive(self, name: str) -> bool:
        return self.procs[name].poll() is None

    def tracebacks(self) -> dict[str, int]:
        return {p.stem: p.read_text(errors="replace").count("Traceback")
                for p in sorted(self.logs.glob("*.stderr"))}

    def stop(self) -> dict[str, int | None]:
        codes = {}
        for name, proc in list(self.procs.items()):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=5)
            codes[name] = proc.returncode
            proc.stdout.close()
        self.procs.clear()
        return codes


class Integrity:
    """Verifies served bytes against the catalog manifest (SHA-256 per segment)."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self.responses = self.bytes = self.mismatches = 0
        self._data: dict[tuple, bytes] = {}

    def data(self, key: tuple) -> bytes:
        """Catalog bytes of `key`, checked once against the title manifest's SHA-256."""
        if key not in self._data:
            data = self.catalog.segment_bytes(*key)
            size, sha = self.catalog.title_manifest(key[0])["segments"][key[1]][key[2]]
            if len(data) != size or hashlib.sha256(data).hexdigest() != sha:
                raise RuntimeError(f"catalog bytes of {key} disagree with the manifest")
            self._data[key] = data
        return self._data[key]

    def check(self, key: tuple, body: bytes, start: int = 0, end: int | None = None) -> bool:
        want = self.data(key)[start:end]
        ok = hashlib.sha256(body).digest() == hashlib.sha256(want).digest()
        self.responses += 1
        self.bytes += len(body)
        self.mismatches += not ok
        return ok

    def add_external(self, responses: int, n_bytes: int, mismatches: int) -> None:
        """Counts from a load generator that compared bytes itself against the catalog."""
        self.responses += responses
        self.bytes += n_bytes
        self.mismatches += mismatches

    def to_dict(self) -> dict:
        return {"responses_verified": self.responses, "bytes_verified": self.bytes,
                "mismatches": self.mismatches, "ok": self.mismatches == 0 and self.responses > 0}


def http_get(port: int, path: str, headers: dict | None = None, method: str = "GET",
             body: bytes | None = None, timeout_s: float = 15.0):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        return r.status, dict(r.getheaders()), r.read()
    finally:
        c.close()


def seg_path(key: tuple) -> str:
    return f"/v/{key[0]}/{key[1]}/{key[2]}"


# --- checks -----------------------------------------------------------------------------
def check_conformance(targets: dict[str, int], integ: Integrity) -> dict:
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
    after = []
    for key in [("t0000", 235, 0), ("t0003", 1750, 4), ("t0005", 5800, 9)]:
        target = seg_path(key) + (f"?{sign(seg_path(key))}" if sign else "")
        st, _, body = http_get(port, target)
        after.append(st == 200 and integ.check(key, body))
        st, _, body = http_get(port, target, {"Range": "bytes=100-4099"})
        after.append(st == 206 and integ.check(key, body, 100, 4100))
    res["correct_bytes_after"] = all(after)
    log_ok = res.get("access_log", {}).get("max_line_bytes", 0) <= 1024
    res["ok"] = (log_ok and res["requests"] >= n and res["hangs"] == 0 and res["over_timeout"] == 0
                 and res["status_500"] == 0
                 and res["junk_responses"] == 0 and res["echoes"] == 0
                 and res["tracebacks"] == 0 and res["canary_leaks"] == 0 and res["smuggled"] == 0
                 and res["alive_after"] and res["correct_bytes_after"])
    return res


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


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return round(s[min(len(s) - 1, int(q * len(s)))], 2)


async def _legit_loop(port: int, until: float, integ: Integrity, rng: random.Random,
                      pause_s: float = 0.02) -> dict:
    """Sequential GETs of small segments; latency of every exchange, bytes verified."""
    lat, counts = [], {}
    while time.monotonic() < until:
        key = ("t000" + str(rng.randrange(4)), 235, rng.randrange(10))
        t0 = time.monotonic()
        try:
            st, hdrs, body = await asyncio.to_thread(http_get, port, seg_path(key), None, "GET",
                                                     None, 10.0)
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
        await asyncio.sleep(1.0)  # the server has accepted and counted them (a busy host is slow to)
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


def check_overload(port: int, integ: Integrity, n_greedy: int, duration_s: float,
                   seed: int, limits: dict) -> dict:
    """A greedy load generator (own process, full speed, big segments, ignores Retry-After)
    against an OCA with stream and egress limits; 4 legit clients fetch small segments."""
    big = [("t0006", 5800, i) for i in range(4)]
    for key in big:  # warm the store so the greedy load is served from disk
        http_get(port, seg_path(key))

    async def run():
        rng = random.Random(seed)
        base = await _legit_loop(port, time.monotonic() + 1.5, integ, rng, 0.05)
        gen = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.reliability_fuzz", "greedy", str(port),
            str(n_greedy), str(duration_s), "inf", *[seg_path(k) for k in big],
            stdout=asyncio.subprocess.PIPE)
        await asyncio.sleep(0.5)  # let the generator start and saturate
        until = time.monotonic() + duration_s - 1.0
        legit = await asyncio.gather(*(_legit_loop(port, until, integ, random.Random(seed + i),
                                                   0.05) for i in range(4)))
        out, _ = await asyncio.wait_for(gen.communicate(), duration_s + 30)
        if gen.returncode != 0:
            raise RuntimeError(f"greedy load generator exited {gen.returncode}")
        return base, json.loads(out), legit
    base, g_total, legit = asyncio.run(run())
    integ.add_external(g_total.get("200", 0), g_total.pop("bytes_verified", 0),
                       g_total.get("bad_bytes", 0))
    l_status: dict[str, int] = {}
    lat_p99 = [lg["p99_ms"] for lg in legit if lg["p99_ms"] is not None]
    for lg in legit:
        for k, v in lg["status"].items():
            l_status[k] = l_status.get(k, 0) + v
    p99 = max(lat_p99) if lat_p99 else None
    refused = g_total.get("503", 0) + l_status.get("503", 0)
    functional = (g_total.get("503", 0) > 0 and not g_total.get("503_without_retry_after")
                  and not any(k.startswith("error") or k in ("bad_bytes", "503_without_retry_after")
                              for k in l_status) and set(l_status) <= {"200", "503"}
                  and set(g_total) <= {"200", "503", "bad_bytes"}
                  and not g_total.get("bad_bytes"))
    return {**limits, "greedy_clients": n_greedy, "legit_clients": len(legit),
            "duration_s": duration_s, "greedy": g_total, "legit_status": l_status,
            "refused_503_total": refused,
            "legit_p50_ms": max((lg["p50_ms"] for lg in legit if lg["p50_ms"]), default=None),
            "legit_p99_ms": p99, "baseline_p99_ms": base["p99_ms"],
            "p99_bound_ms": OVERLOAD_P99_BOUND_MS, "functional_ok": functional,
            "ok": functional and p99 is not None and p99 <= OVERLOAD_P99_BOUND_MS}


def check_tokens(port: int, key: bytes, n_socket_mutations: int, n_pure_mutations: int,
                 seed: int, integ: Integrity) -> dict:
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
    rng = random.Random(seed)
    good = tokens.sign(key, "/v/t0001/", "127.0.0.0/8", now + 600)
    good_fields = rc.token_fields(good)
    socket_accepted = pure_accepted = pure_tried = 0
    statuses: dict[str, int] = {}
    for i in range(n_socket_mutations + n_pure_mutations):
        q = rc.mutate_query(rng, good)
        if rc.token_fields(q) == good_fields:
            continue  # an equivalent encoding of the genuine token, not a forgery
        if i < n_socket_mutations:
            st, _, _ = http_get(port, "/v/t0001/235/1?" + q)
            statuses[str(st)] = statuses.get(str(st), 0) + 1
            socket_accepted += st not in (400, 403, 410)
        else:
            pure_tried += 1
            pure_accepted += tokens.verify(key, "/v/t0001/235/1", "127.0.0.1", q,
                                           time.time()) is tokens.TokenResult.OK
    attacks = [r for r, c in zip(rows, cases) if c.expect != 200]
    accepted = sum(r["got"] not in (400, 403, 410) for r in attacks)
    return {"matrix": rows, "matrix_attacks": len(attacks), "matrix_accepted": accepted,
            "matrix_wrong": wrong, "socket_mutations": sum(statuses.values()),
            "socket_mutation_status": statuses, "socket_mutations_accepted": socket_accepted,
            "pure_mutations": pure_tried, "pure_mutations_accepted": pure_accepted,
            "ok": not wrong and accepted == 0 and socket_accepted == 0 and pure_accepted == 0}


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


def _start_load_for_kill(mode: str, port: int, plan: dict, integ: Integrity):
    """Begin filling: POST the plan (mode fill) or pull misses through (mode proxy, in a
    thread that stops at the first connection error). Returns the thread or None."""
    if mode == "fill":
        st, _, _ = http_get(port, "/fill", {"Content-Type": "application/json"}, "POST",
                            json.dumps(plan).encode())
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
        store, name = work / f"killfill{t}", f"killfill{t}"
        port = servers.oca(name, origin_port, store, "--miss", mode if mode == "proxy"
                           else "redirect", "--mem-mb", "0")
        puller = _start_load_for_kill(mode, port, plan, integ)
        delay_s = rng.uniform(0.1, 1.6) if mode == "fill" else rng.uniform(0.02, 0.4)
        time.sleep(delay_s)
        servers.kill(name)
        if puller is not None:
            puller.join(timeout=10)
        partial_on_disk = len(list((store / "tmp").iterdir()))
        port = servers.oca(name, origin_port, store, "--miss", "redirect", "--mem-mb", "0")
        served = redirected = wrong = 0
        for seg in segs:
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
        rows.append({"trial": t, "mode": mode, "kill_after_s": round(delay_s, 3),
                     "partial_files_at_kill": partial_on_disk, "complete_served": served,
                     "redirected": redirected, "partial_or_wrong_served": wrong,
                     "corrupt_files": len(audit["corrupt"]),
                     "tmp_after_restart": audit["tmp_files"]})
    ok = all(r["partial_or_wrong_served"] == 0 and r["corrupt_files"] == 0
             and r["tmp_after_restart"] == 0 for r in rows)
    return {"trials": trials, "plan_segments": len(segs), "rows": rows,
            "kills_mid_object": sum(r["partial_files_at_kill"] > 0 for r in rows),
            "partial_served_total": sum(r["partial_or_wrong_served"] for r in rows), "ok": ok}


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


def check_hypothesis() -> dict:
    repo = Path(__file__).resolve().parents[1]
    p = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        str(repo / "tests" / "test_parsers_fuzz.py")],
                       capture_output=True, text=True, timeout=300, cwd=repo)
    tail = [ln for ln in p.stdout.splitlines() if ln.strip()][-1:] or [p.stderr[-300:]]
    return {"exit": p.returncode, "summary": tail[0], "ok": p.returncode == 0}


# --- orchestration and report ------------------------------------------------------------
EMULATION_FAULTS = {
    "controller restart: flow tables equal to a fresh start, no stale cookies":
        "tests/test_controller_metro.py::test_controller_restart_leaves_fresh_flow_tables",
    "SIGKILLed run + ocalab clean: zero ocalab resources left, decoys untouched":
        "tests/test_clean.py::test_clean_after_sigkill",
}


def check_emulation_faults() -> dict:
    """The fault checks that need the emulated network, run as their real tests (root only)."""
    import os
    if os.geteuid() != 0:
        return {"skipped": "needs root (namespaces, OVS)", "ok": True}
    repo = Path(__file__).resolve().parent.parent
    out: dict = {}
    for what, test in EMULATION_FAULTS.items():
        t = time.monotonic()
        p = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test],
                           cwd=repo, capture_output=True, text=True, timeout=900)
        tail = [ln for ln in p.stdout.splitlines() if ln.strip()][-1:] or ["no output"]
        out[what] = {"test": test, "exit": p.returncode, "summary": tail[0],
                     "seconds": round(time.monotonic() - t, 1)}
    out["ok"] = all(v["exit"] == 0 for v in out.values() if isinstance(v, dict))
    return out


def run_checks(out_dir: Path, quick: bool, seed: int = 1) -> dict:
    """Start servers, run every check, stop servers; the raw result dict."""
    catalog, work = Catalog(SPEC), out_dir / "reliability-work"
    work.mkdir(parents=True, exist_ok=True)
    integ, servers = Integrity(catalog), Servers(out_dir)
    canary = f"CANARY-{random.Random(seed).getrandbits(64):016x}".encode()
    (work / "canary.txt").write_bytes(canary)
    res: dict = {"quick": quick, "seed": seed}
    t0 = time.monotonic()
    try:
        origin = servers.start("origin", "appliances.origin")
        timeouts = ["--header-timeout-s", str(HEADER_TIMEOUT_S),
                    "--idle-timeout-s", str(IDLE_TIMEOUT_S)]
        disk = servers.oca("oca-disk", origin, work / "disk", "--miss", "proxy", "--mem-mb", "0",
                           "--access-log", str(servers.logs / "oca-disk-access.jsonl"), *timeouts)
        (work / "disk" / "canary.txt").write_bytes(canary)
        mem = servers.oca("oca-mem", origin, work / "mem", "--miss", "proxy")
        keyfile = work / "token.key"
        key = tokens.write_key(keyfile)
        tok = servers.oca("oca-tok", origin, work / "tok", "--miss", "proxy",
                          "--token-key", str(keyfile), *timeouts)
        origin_fuzz = servers.start("origin-fuzz", "appliances.origin", *timeouts)
        load = servers.oca("oca-load", origin, work / "load", "--miss", "proxy", "--mem-mb", "0",
                           "--max-conns", "48", *LOAD_FLAGS)  # default 10 s header timeout
        res["conformance"] = check_conformance({"origin": origin, "oca-disk": disk,
                                                "oca-mem": mem}, integ)
        n_fuzz, canaries = 2000 if quick else 10000, (canary, b"root:x:0:0:")
        res["fuzz"] = check_fuzz(disk, servers, "oca-disk", n_fuzz, seed, integ, canaries)
        res["traversal"] = check_traversal(disk, canaries)
        res["fuzz_origin"] = check_fuzz(origin_fuzz, servers, "origin-fuzz", n_fuzz // 5,
                                        seed + 1, integ, canaries)

        def sign(path: str) -> str:
            return tokens.sign(key, "/".join(path.split("/")[:3]) + "/", "127.0.0.0/8",
                               int(time.time()) + 600)
        res["fuzz_oca_tok"] = check_fuzz(tok, servers, "oca-tok", n_fuzz // 5, seed + 2, integ,
                                         canaries, sign)
        res["slowloris"] = check_slowloris(disk, 32 if quick else 96, integ, seed)
        res["conn_cap"] = check_conn_cap(load, 48, 16)
        res["overload"] = check_overload(load, integ, 16 if quick else 32,
                                         4.0 if quick else 10.0, seed, LOAD_LIMITS)
        res["tokens"] = check_tokens(tok, key, 150 if quick else 1000,
                                     5000 if quick else 50000, seed, integ)
        res["kill_during_fill"] = check_kill_during_fill(servers, origin, work,
                                                         2 if quick else 10, seed, integ)
        res["atheris"] = check_atheris(20000 if quick else 300000, 5 if quick else 20)
        res["hypothesis"] = ({"skipped": "quick run", "ok": True} if quick
                             else check_hypothesis())
        alive = {name: servers.alive(name) for name in servers.procs}
    finally:
        codes = servers.stop()
    tracebacks = servers.tracebacks()
    res["servers"] = {"alive_at_end": alive, "exit_codes": codes, "stderr_tracebacks": tracebacks,
                      "ok": all(alive.values()) and all(c == 0 for c in codes.values())
                      and not any(tracebacks.values())}
    res["integrity"] = integ.to_dict()
    res["emulation_faults"] = ({"skipped": "quick run", "ok": True} if quick
                               else check_emulation_faults())
    res["fixed"] = [{"failure": what, "regression_test": test} for what, test in FIXED]
    res["duration_s"] = round(time.monotonic() - t0, 1)
    res["ok"] = all(v.get("ok", True) for v in res.values() if isinstance(v, dict))
    if res["ok"]:  # stores are tens of MB; keep them only to debug a failure
        shutil.rmtree(work)
    res["work_dir"] = None if res["ok"] else str(work)
    res["server_logs"] = str(servers.logs)
    return res


FIXED = [  # failures these checks found, fixed in the server code, each with a regression test
    ("tokens.verify: a non-ASCII digit expiry (`exp=%C2%B2`) passed str.isdigit() and made "
     "int() raise -> 500 + traceback", "tests/test_tokens.py::"
     "test_non_ascii_digit_expiry_is_forbidden_not_a_crash"),
    ("ranges: a Range position over 4300 digits made int() raise (Python's integer-string "
     "limit) -> 500 + traceback", "tests/test_ranges.py::test_huge_range_positions_do_not_raise"),
    ("OCA POST /fill: deeply nested JSON raised RecursionError -> 500 + traceback",
     "tests/test_oca_http.py::test_fill_endpoint_survives_hostile_bodies"),
    ("OCA POST /fill: 400 bodies echoed client values (unknown field names, titles)",
     "tests/test_oca_http.py::test_parse_fill_plan_errors_never_quote_client_values"),
    ("connection cap: the 503 to a client over the cap was followed by close() with its "
     "request unread, so the kernel sent a RST and 38 of 40 such clients read 'connection "
     "reset' instead of 503 + Retry-After; error responses now end with a bounded lingering "
     "close", "tests/test_oca_http.py::test_over_cap_client_sending_at_once_reads_503_not_reset"),
    ("slowloris: the header timeout restarted at the first byte, so a client silent for "
     "almost header_timeout_s and then trickling a head held its connection for up to twice "
     "the timeout; a new connection's first head now has one deadline from accept",
     "tests/test_oca_http.py::test_late_starting_slow_head_is_cut_at_the_header_timeout"),
    ("access log: a 16 KB Range value or a 4 KB path was copied whole into every log line; "
     "client text is now cut to 200 characters per field (lines < 1 KB)",
     "tests/test_oca_http.py::test_access_log_cuts_client_text"),
    ("fill plans with unusable source URLs (bad port, no host, query, userinfo) or non-finite "
     "windows were accepted and failed later in the fill task; now refused with 400",
     "tests/test_oca_http.py::test_parse_fill_plan_refuses_unusable_sources_and_windows"),
]


def fuzz_figures(f: dict) -> str:
    return (f"{f['requests']} requests, {f['hangs']} hangs, {f['over_timeout']} over "
            f"{f['late_s']} s (max {f['max_seconds']} s), {f['status_500']} x 500, "
            f"{f['echoes']} echoes, {f['tracebacks']} tracebacks, {f['canary_leaks']} "
            f"outside-store leaks, {f['smuggled']} smuggled, alive {f['alive_after']}, "
            f"correct bytes after {f['correct_bytes_after']}, RSS {f['rss_kib_before']} -> "
            f"{f['rss_kib_after']} KiB"
            + (f", access log {f['access_log']['bytes_per_request']} B/request (longest line "
               f"{f['access_log']['max_line_bytes']} B)" if "access_log" in f else ""))


def summary_rows(res: dict) -> list[tuple[str, bool, str]]:
    c, s, cc = res["conformance"], res["slowloris"], res["conn_cap"]
    o, t, k, i = res["overload"], res["tokens"], res["kill_during_fill"], res["integrity"]
    a = res["atheris"]
    atheris = a.get("skipped") or ", ".join(f"{n}: {v['summary']}" for n, v in a.items()
                                            if isinstance(v, dict))
    return [
        ("HTTP conformance", c["ok"], f"{c['passed']}/{c['checks']} ({c['cases']} cases x "
                                      f"{len(c['targets'])} servers)"),
        *[(f"fuzzing {f['server']}", f["ok"], fuzz_figures(f))
          for f in (res["fuzz"], res["fuzz_origin"], res["fuzz_oca_tok"])],
        ("path traversal", res["traversal"]["ok"], f"{res['traversal']['requests']} shapes, "
         f"{len(res['traversal']['served_outside_store'])} served from outside the store"),
        ("coverage-guided (atheris)", a["ok"], atheris),
        ("property tests (hypothesis)", res["hypothesis"]["ok"],
         res["hypothesis"].get("summary") or res["hypothesis"].get("skipped", "")),
        ("slowloris", s["ok"], f"{s['connections']} conns cut p50 {s['cut_p50_s']} s, max "
         f"{s['cut_max_s']} s (header timeout {s['header_timeout_s']} s), not cut {s['not_cut']}; "
         f"legit p99 {s['legit_baseline']['p99_ms']} -> {s['legit_during']['p99_ms']} ms"),
        ("connection cap", cc["ok"], f"{cc['opened']} opened, {cc['held_open']} held, "
         f"{cc['refused_503']} refused 503 + Retry-After"),
        ("overload", o["ok"], f"limits {o['max_streams']} streams / {o['egress_limit_mbps']} "
         f"Mbit/s; greedy {o['greedy']}, legit {o['legit_status']}, legit p99 "
         f"{o['legit_p99_ms']} ms (baseline {o['baseline_p99_ms']}, bound {o['p99_bound_ms']})"),
        ("tokens", t["ok"], f"matrix {t['matrix_accepted']}/{t['matrix_attacks']} attacks "
         f"accepted, mutations {t['socket_mutations_accepted']}/{t['socket_mutations']} (sockets)"
         f" + {t['pure_mutations_accepted']}/{t['pure_mutations']} (pure) accepted"),
        ("kill during fill", k["ok"], f"{k['trials']} SIGKILLs ({k['kills_mid_object']} mid-object)"
         f", partial objects served {k['partial_served_total']}"),
        ("integrity", i["ok"], f"{i['responses_verified']} responses, {i['bytes_verified']} bytes "
         f"verified, {i['mismatches']} mismatches"),
        *[(what, v["exit"] == 0, f"{v['summary']} ({v['seconds']} s, {v['test']})")
          for what, v in res.get("emulation_faults", {}).items() if isinstance(v, dict)],
        ("servers", res["servers"]["ok"], f"exit codes {res['servers']['exit_codes']}, "
         f"tracebacks {sum(res['servers']['stderr_tracebacks'].values())}"),
    ]


def write_report(out_dir: Path, res: dict) -> None:
    (out_dir / "reliability.json").write_text(json.dumps(res, indent=1, default=str))
    lines = ["# ocalab reliability report", "",
             f"Overall: **{'PASS' if res['ok'] else 'FAIL'}** (quick={res['quick']}, "
             f"seed={res['seed']}, {res['duration_s']} s)", "", "| check | result | figures |",
             "|---|---|---|"]
    lines += [f"| {n} | {'pass' if ok else 'FAIL'} | {fig} |" for n, ok, fig in summary_rows(res)]
    c = res["conformance"]
    lines += ["", "## HTTP conformance (RFC 9110), over sockets", "",
              "| case | method | request headers | expect | " + " | ".join(c["targets"]) + " |",
              "|---|---|---|---|" + "---|" * len(c["targets"])]
    for r in c["rows"]:
        req = "; ".join(f"{k}: {v}" for k, v in r["request"].items())
        req = (req[:60] + "...") if len(req) > 63 else req
        req = req.replace("|", "\\|")
        lines.append(f"| {r['case']} | {r['method']} | `{req}` | {r['expect']} | "
                     + " | ".join(str(r[t]) for t in c["targets"]) + " |")
    f = res["fuzz"]
    lines += ["", "## Fuzzing: responses by category", "", "| category | statuses |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in f["by_category"].items()]
    lines += ["", "## Path traversal shapes (oca-disk)", "", "| target | status |", "|---|---|"]
    lines += [f"| `{r['target']}` | {r['status']} |" for r in res["traversal"]["rows"]]
    t = res["tokens"]
    lines += ["", "## Token matrix", "", "| case | expect | got |", "|---|---|---|"]
    lines += [f"| {r['case']} | {r['expect']} | {r['got']} |" for r in t["matrix"]]
    lines += ["", "## Failures found and fixed (with regression tests)", ""]
    lines += [f"- {what} (`{test}`)" for what, test in FIXED]
    k = res["kill_during_fill"]
    lines += ["", "## SIGKILL during fill", "", "| " + " | ".join(k["rows"][0]) + " |",
              "|" + "---|" * len(k["rows"][0])] if k["rows"] else []
    lines += ["| " + " | ".join(str(v) for v in r.values()) + " |" for r in k["rows"]]
    (out_dir / "reliability.md").write_text("\n".join(lines) + "\n")


def run_reliability(out_dir: Path, quick: bool = False) -> dict:
    """Run every reliability/security check; write reliability.md/.json; return the dict."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    res = run_checks(out_dir, quick)
    write_report(out_dir, res)
    width = max(len(n) for n, _, _ in summary_rows(res))
    for name, ok, fig in summary_rows(res):
        print(f"{name:<{width}}  {'pass' if ok else 'FAIL'}  {fig}")
    print(f"reliability: {'PASS' if res['ok'] else 'FAIL'} in {res['duration_s']} s; "
          f"report {out_dir / 'reliability.md'}")
    return res
