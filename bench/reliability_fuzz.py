"""Hostile-request generators, a bounded raw-socket fuzz runner, and an atheris harness.

Generators are pure functions of a seeded `random.Random`: the same seed gives the same
corpus. Every request carries a unique marker so a response that echoes client input can be
detected. `run_fuzz` sends each request on its own TCP connection (half-closing after the
request unless the case tests timeouts), reads until the server closes, and classifies:
status line, closed-without-response, hang (server kept the connection past `deadline_s`),
echo (marker in the response), traceback, canary (bytes of a file outside the store).

`python -m bench.reliability_fuzz TARGET -runs=N` runs atheris (coverage-guided) on a
pure parser: request-head, ranges, tokens. Any exception other than the documented error
type is a crash (non-zero exit).
"""
from __future__ import annotations

import asyncio
import collections
import random
import sys
import time
from dataclasses import dataclass

from appliances.content import Catalog
from bench.reliability_spec import SPEC

TRAVERSAL = ["/v/../../etc/passwd", "/v/%2e%2e/%2e%2e/etc/passwd", "/v/%2E%2E/%2E%2E/CANARY",
             "/v/..%2f..%2fCANARY", "/v/..%2F..%2Fetc/passwd", "/v/%252e%252e/%252e%252e/CANARY",
             "/v/..%5c..%5cCANARY", "/v/..\\..\\CANARY", "/v/t0000/235/../../../CANARY",
             "//etc/passwd", "/v//..//..//CANARY", "/v/./../CANARY", "/v/%2e/%2e%2e/CANARY",
             "/v/t0000/235/0%00.txt", "/v/%c0%ae%c0%ae/%c0%ae%c0%ae/CANARY",
             "/v/%e0%80%ae%e0%80%ae/CANARY", "/v/\xef\xbc\x8e\xef\xbc\x8e/CANARY",
             "/../../../../etc/passwd", "/etc/passwd", "/CANARY", "/objects/../CANARY",
             "/v/t0000/235/0/..", "/v/t0000/235/0/.", "/v/t0000/235/%2e%2e", "/%2e%2e/CANARY",
             "/v/t0000/235/0?../../CANARY", "/v/t0000/235/0#/../CANARY",
             "http://127.0.0.1/../../etc/passwd", "*", "/v/t0000/235/.%2e/.%2e/CANARY",
             "/v/t0000/235/0;/../../CANARY", "/v/%2fetc%2fpasswd", "/v/....//....//CANARY"]
METHODS = ["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "TRACE", "CONNECT", "PATCH",
           "get", "G ET", "GET\x00", "\x16\x03\x01", "PRI", "GETT", "M" * 300]


@dataclass(frozen=True)
class FuzzCase:
    category: str
    payload: bytes
    marker: bytes
    half_close: bool = True  # False: the server must end it by its own timeout


def _req(method: str, target: str, headers: list[tuple[str, str]], body: bytes = b"",
         version: str = "HTTP/1.1", eol: bytes = b"\r\n") -> bytes:
    lines = [f"{method} {target} {version}".encode("latin-1", "replace")]
    lines += [f"{k}: {v}".encode("latin-1", "replace") for k, v in headers]
    return eol.join(lines) + eol + eol + body


def _mark_headers(m: str) -> list[tuple[str, str]]:
    return [("Host", "oca.test"), ("X-Probe", m), ("Connection", "close")]


def g_request_line(rng, m, path):
    method = rng.choice(METHODS)
    target = rng.choice([path, path + "?" + m, "/" + m, m, "", " " + path, path + " x",
                         "/v/" + m * 3000, path + "\t"])
    version = rng.choice(["HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "HTTP/0.9", "http/1.1",
                          "HTTP/1.1 ", "HTTP/1.10", "HTTP/" + m, "", "HTTP/1.1\x00"])
    sep = rng.choice([" ", "  ", "\t", " "])
    line = sep.join(x for x in (method, target, version))
    return (line + "\r\n" + f"Host: x\r\nX-Probe: {m}\r\n\r\n").encode("latin-1", "replace")


def g_missing_version(rng, m, path):
    return rng.choice([f"GET {path}?{m}\r\n\r\n", f"GET /{m}\r\n\r\n", f"{m}\r\n\r\n",
                       f"GET\r\nHost: {m}\r\n\r\n"]).encode()


def g_huge_headers(rng, m, path):
    kind = rng.randrange(4)
    if kind == 0:
        return _req("GET", path, [("Host", "x"), ("X-Big", m + "a" * rng.randint(17000, 60000))])
    if kind == 1:
        many = [(f"X-{i}", m) for i in range(rng.randint(65, 400))]
        return _req("GET", path, [("Host", "x")] + many)
    if kind == 2:
        return _req("GET", path + "?" + m + "q" * rng.randint(4100, 15000), [("Host", "x")])
    return _req("GET", path, [("Host", "x"), (m + "N" * rng.randint(5000, 16000), "v")])


def g_chunked(rng, m, path):
    sizes = ["ffffffffffffffffffff", "-1", "0x10", "1;" + m, "zz", "5\r\nhello", "", "1 1"]
    body = f"{rng.choice(sizes)}\r\n{m}\r\n0\r\n\r\n".encode()
    te = rng.choice(["chunked", "Chunked", "chunked, identity", "x" + m, "gzip, chunked"])
    method = rng.choice(["POST", "GET", "PUT"])
    return _req(method, rng.choice([path, "/fill"]), _mark_headers(m) + [("Transfer-Encoding", te)],
                body)


def g_smuggling(rng, m, path):
    smug = f"GET /{m} HTTP/1.1\r\nHost: x\r\n\r\n"
    n = len(smug)
    shapes = [
        [("Content-Length", str(n)), ("Transfer-Encoding", "chunked")],
        [("Transfer-Encoding", "chunked"), ("Content-Length", str(n))],
        [("Content-Length", str(n)), ("Content-Length", "0")],
        [("Content-Length", f"{n}, 0")],
        [("Content-Length", f"+{n}")], [("Content-Length", f" {n} ")],
        [("Content-Length", f"0x{n:x}")], [("Content-Length", f"{n}\x00")],
        [("Content-Length ", str(n))], [("Content-Length\t", str(n))],
        [("Transfer-Encoding", "\tchunked")], [("X-A", "b"), (" Transfer-Encoding", "chunked")],
        [("X-Fold", "a"), ("\tTransfer-Encoding", "chunked")],
        [("Transfer-Encoding", "chunked\r\n x")], [("Transfer-Encoding", "xchunked")],
    ]
    headers = [("Host", "x"), ("X-Probe", m)] + rng.choice(shapes)
    return _req(rng.choice(["POST", "GET"]), rng.choice([path, "/fill"]), headers,
                smug.encode())


def g_obs_fold(rng, m, path):
    return (f"GET {path} HTTP/1.1\r\nHost: x\r\nX-Probe: a\r\n {m}\r\n"
            f"\t{m}\r\nConnection: close\r\n\r\n").encode()


def g_binary(rng, m, path):
    garbage = rng.randbytes(rng.randint(1, 3000))
    return rng.choice([garbage + b"\r\n\r\n", garbage.replace(b"\r\n\r\n", b"") + m.encode(),
                       b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + garbage + b"\r\n\r\n",
                       b"GET " + garbage + b" HTTP/1.1\r\nHost: x\r\n\r\n"])


def g_traversal(rng, m, path):
    target = rng.choice(TRAVERSAL).replace("CANARY", rng.choice(["canary.txt", "../canary.txt"]))
    q = rng.choice(["", "?" + m])
    return _req(rng.choice(["GET", "HEAD"]), target + q, _mark_headers(m))


def g_header_values(rng, m, path):
    bad = rng.choice(["\x00", "\r", "\x7f", "\x01", "\n\n", "\xff", " \r\n\r\n"])
    name = rng.choice(["Host", "Range", "If-None-Match", "If-Range", "X-A", "Connection",
                       "Expect", "Content-Length"])
    return _req("GET", path, [("Host", "x"), (name, m + bad + m), ("Connection", "close")])


def g_ranges(rng, m, path):
    spec = rng.choice(["bytes=" + ",".join(f"{rng.randint(0, 9**9)}-" for _ in range(200)),
                       "bytes=" + "9" * rng.randint(19, 9000) + "-", "bytes=-" + "9" * 5000,
                       f"bytes={m}", "bytes=0-0" + ",0-0" * 5000, "bytes=\xb2-\xb3",
                       "bytes=" + rng.choice("-,=") * 3000])
    extra = rng.choice([[], [("If-Range", m)], [("If-Range", "Mon, 31 Dec 99999 23:59:59 GMT")],
                        [("If-None-Match", "W/" * 2000)], [("If-Match", '"' + m)]])
    return _req("GET", path, [("Host", "x"), ("Range", spec), ("Connection", "close")] + extra)


def g_fill_bodies(rng, m, path):
    body = rng.choice([b"[" * 200000, b'{"segments": [["' + m.encode() + b'", 1, 1]]}',
                       b'{"' + m.encode() + b'": 1}', b"\xff\xfe" + m.encode(),
                       b'{"segments": [], "sources": ["http://127.0.0.1:99999"]}',
                       b'{"segments": [], "sources": ["http://x"], "rate_mbps": NaN}',
                       b'{"segments": [], "sources": ["http://x"], "window_start_unix": 1e308}',
                       b'{"segments": 1' + b"0" * 6000 + b"}", b"1" * 5000])
    return _req("POST", "/fill", _mark_headers(m) + [("Content-Length", str(len(body)))], body)


def g_mutate(rng, m, path):
    base = bytearray(_req(rng.choice(["GET", "HEAD"]), path,
                          [("Host", "x"), ("Range", "bytes=0-99"), ("X-Probe", m),
                           ("If-None-Match", '"abc"'), ("Connection", "close")]))
    for _ in range(rng.randint(1, 8)):
        op, i = rng.randrange(4), rng.randrange(len(base))
        if op == 0:
            base[i] = rng.randrange(256)
        elif op == 1:
            del base[i]
        elif op == 2:
            base[i:i] = rng.choice([b"\r", b"\n", b"\x00", b":", b" ", b"%", b"..", b"/", b"\xff"])
        else:
            j = min(len(base), i + rng.randint(1, 40))
            base[i:i] = base[i:j] * rng.randint(1, 20)
    return bytes(base)


def g_pipeline(rng, m, path):
    ok = _req("GET", path, [("Host", "x")])
    return ok + rng.choice([b"GARBAGE " + m.encode() + b"\r\n\r\n", ok * rng.randint(1, 20),
                            g_smuggling(rng, m, path)])


GENERATORS = {"request_line": (g_request_line, 8), "missing_version": (g_missing_version, 3),
              "huge_headers": (g_huge_headers, 4), "bad_chunked": (g_chunked, 6),
              "smuggling": (g_smuggling, 8), "obs_fold": (g_obs_fold, 2),
              "binary": (g_binary, 8), "traversal": (g_traversal, 10),
              "header_values": (g_header_values, 6), "ranges": (g_ranges, 6),
              "fill_bodies": (g_fill_bodies, 3), "mutation": (g_mutate, 30),
              "pipeline": (g_pipeline, 4)}
NO_HALF_CLOSE_SHARE = 0.02  # these rely on the server's header/idle timeouts


def fuzz_corpus(seed: int, n: int, paths: list[str]) -> list[FuzzCase]:
    """n hostile requests; every category appears at least once when n >= len(GENERATORS)."""
    rng = random.Random(seed)
    names = list(GENERATORS)
    weights = [GENERATORS[k][1] for k in names]
    out = []
    for i in range(n):
        cat = names[i] if i < len(names) else rng.choices(names, weights)[0]
        marker = f"ZQX{rng.getrandbits(48):012x}"
        payload = GENERATORS[cat][0](rng, marker, rng.choice(paths))
        out.append(FuzzCase(cat, payload, marker.encode(), rng.random() >= NO_HALF_CLOSE_SHARE))
    return out


@dataclass
class FuzzOutcome:
    category: str
    status: str  # "200".."599", "closed" (no response) or "hang"
    seconds: float
    echo: bool
    traceback: bool
    canary: bool
    smuggled: bool  # a smuggling shape produced a second response (hidden request ran)


async def _one(host: str, port: int, case: FuzzCase, deadline_s: float,
               canaries: tuple[bytes, ...]) -> FuzzOutcome:
    t0 = time.monotonic()
    data = b""
    hang = False
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError as exc:
        raise RuntimeError(f"fuzz: cannot connect to {host}:{port}: {exc}") from exc
    try:
        try:
            writer.write(case.payload)
            await writer.drain()
            if case.half_close:
                writer.write_eof()
        except (ConnectionError, OSError):
            pass  # the server may refuse and close before reading all of a huge request
        try:
            async with asyncio.timeout(deadline_s):
                while chunk := await reader.read(65536):
                    data += chunk
        except TimeoutError:
            hang = True
        except (ConnectionError, OSError):
            pass  # reset after the server answered and closed: what we read still counts
    finally:
        writer.close()
    if hang or not data:
        status = "hang" if hang else "closed"
    else:
        status = data[9:12].decode("latin-1") if data[:9] == b"HTTP/1.1 " else "junk"
    low = data.lower()
    return FuzzOutcome(case.category, status, time.monotonic() - t0, case.marker.lower() in low,
                       b"traceback" in low or b'file "' in low,
                       any(c in data for c in canaries),
                       case.category == "smuggling" and data.count(b"HTTP/1.1 ") > 1)


async def run_fuzz(host: str, port: int, cases: list[FuzzCase], deadline_s: float,
                   concurrency: int = 48, canaries: tuple[bytes, ...] = (),
                   late_s: float | None = None) -> dict:
    """Send every case; returns counts (by status, by category), worst times and failures.
    A connection the server kept longer than late_s (its longest configured timeout plus
    slack) counts in `over_timeout`; one still open at deadline_s is a `hang`."""
    sem = asyncio.Semaphore(concurrency)

    async def guarded(c: FuzzCase) -> FuzzOutcome:
        async with sem:
            return await _one(host, port, c, deadline_s, canaries)
    t0 = time.monotonic()
    outs = await asyncio.gather(*(guarded(c) for c in cases))
    by_status = collections.Counter(o.status for o in outs)
    by_cat: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for o in outs:
        by_cat[o.category][o.status] += 1
    bad = [o for o in outs if o.status in ("hang", "junk", "500") or o.echo or o.traceback
           or o.canary or o.smuggled]
    return {"requests": len(outs), "duration_s": round(time.monotonic() - t0, 2),
            "by_status": dict(sorted(by_status.items())),
            "by_category": {k: dict(sorted(v.items())) for k, v in sorted(by_cat.items())},
            "hangs": by_status.get("hang", 0), "status_500": by_status.get("500", 0),
            "junk_responses": by_status.get("junk", 0),
            "echoes": sum(o.echo for o in outs), "tracebacks": sum(o.traceback for o in outs),
            "canary_leaks": sum(o.canary for o in outs),
            "smuggled": sum(o.smuggled for o in outs),
            "max_seconds": round(max((o.seconds for o in outs), default=0.0), 3),
            "over_timeout": sum(late_s is not None and o.seconds > late_s for o in outs),
            "examples_bad": [f"{o.category}:{o.status}" for o in bad[:10]]}


# --- slow and greedy clients ----------------------------------------------------------------
async def slow_client(host: str, port: int, kind: str, step_s: float, max_s: float,
                      start_delay_s: float = 0.0) -> dict:
    """One slowloris connection: `head` (header bytes trickle), `late` (the same after
    start_delay_s of silence), `body` (body bytes trickle) or `silent` (sends nothing).
    Returns seconds from connect until the server cut it, and the status it answered
    (None = closed without a response)."""
    reader, writer = await asyncio.open_connection(host, port)
    t0 = time.monotonic()
    if kind == "late":
        await asyncio.sleep(start_delay_s)
    head = (b"GET /v/t0000/235/0 HTTP/1.1\r\nHost: x\r\n" if kind in ("head", "late") else
            b"POST /fill HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n{")
    data, cut = b"", None
    try:
        if kind != "silent":
            writer.write(head)
            await writer.drain()
        read = asyncio.ensure_future(reader.read(4096))
        while time.monotonic() - t0 < max_s:
            done, _ = await asyncio.wait({read}, timeout=step_s)
            if done:
                data = read.result()
                cut = time.monotonic() - t0
                break
            if kind != "silent":
                writer.write(b" " if kind == "body" else b"X-a: b\r\n")
                await writer.drain()
        else:
            read.cancel()
    except (ConnectionError, OSError):
        cut = time.monotonic() - t0
    finally:
        writer.close()
    status = int(data[9:12]) if data.startswith(b"HTTP/1.1 ") else None
    return {"kind": kind, "cut_s": None if cut is None else round(cut, 3), "status": status}


async def greedy_client(host: str, port: int, path: str, until: float, rate_bytes_s: float,
                        expected: bytes | None = None, rcvbuf_bytes: int = 8192,
                        src_ip: str | None = None) -> dict:
    """Loops GET `path` (from `src_ip` when given) with a small receive buffer and a capped
    read rate; retries refusals after 20 ms, ignoring Retry-After. Counts outcomes; compares
    every body byte of a 200 with `expected` (bytes_verified / bad_bytes) when given."""
    import socket as _socket
    counts = collections.Counter()
    while time.monotonic() < until:
        sock = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)
        sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_RCVBUF, rcvbuf_bytes)
        if src_ip is not None:
            sock.bind((src_ip, 0))
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (host, port))
        reader, writer = await asyncio.open_connection(sock=sock)
        try:
            writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            head = await reader.readuntil(b"\r\n\r\n")
            status = head[9:12].decode()
            counts[status] += 1
            if status == "503" and b"\r\nretry-after: " not in head.lower():
                counts["503_without_retry_after"] += 1
            t0, got = time.monotonic(), 0
            while time.monotonic() < until and (chunk := await reader.read(65536)):
                if status == "200" and expected is not None:
                    counts["bytes_verified"] += len(chunk)
                    counts["bad_bytes"] += chunk != expected[got:got + len(chunk)]
                got += len(chunk)
                ahead = got / rate_bytes_s - (time.monotonic() - t0)
                if ahead > 0:
                    await asyncio.sleep(ahead)
        except (ConnectionError, asyncio.IncompleteReadError, OSError):
            counts["conn_error"] += 1
        finally:
            writer.close()
        await asyncio.sleep(0.02)
    return dict(counts)


# --- atheris harness (coverage-guided) ---------------------------------------------------
def _atheris_target(name: str):
    from appliances import httpcore, ranges, tokens
    key = b"k" * 32

    def head(data: bytes) -> None:
        try:
            req = httpcore.parse_request_head(data)
        except httpcore.HttpError:
            return
        req.keep_alive  # noqa: B018 - exercise the property
        try:
            req.content_length()
        except httpcore.HttpError:
            pass  # documented refusal

    def rng(data: bytes) -> None:
        text = data.decode("latin-1")
        spec, _, etag = text.partition("\n")
        for size in (0, 1, 1000):
            d = ranges.evaluate("GET", {"range": spec, "if-range": etag, "if-none-match": etag},
                                size, '"abc"')
            if d.send_body and d.status != 416:
                assert sum(len(p.prefix) + p.end - p.start for p in d.parts) + len(d.trailer) \
                    == d.content_length

    def tok(data: bytes) -> None:
        text = data.decode("latin-1")
        path, _, query = text.partition("?")
        assert tokens.verify(key, "/v/t0001/235/0" if not path else path, "127.0.0.1", query,
                             0.0) is not tokens.TokenResult.OK
    return {"head": head, "ranges": rng, "tokens": tok}[name]


async def greedy_load(host: str, port: int, paths: list[str], n_clients: int,
                      duration_s: float, rate_bytes_s: float, src_ip: str | None = None) -> dict:
    """n_clients greedy_client loops (all from src_ip) for duration_s; summed outcome counts."""
    cat = Catalog(SPEC)
    want = {p: cat.segment_bytes(*cat.parse_path(p)) for p in paths}
    until = time.monotonic() + duration_s
    res = await asyncio.gather(*(greedy_client(host, port, paths[i % len(paths)], until,
                                               rate_bytes_s, want[paths[i % len(paths)]],
                                               src_ip=src_ip)
                                 for i in range(n_clients)))
    total = collections.Counter()
    for r in res:
        total.update(r)
    return dict(total)


def main(argv: list[str]) -> int:
    """`greedy PORT N DURATION_S RATE_BYTES_S SRC_IP PATH...` (JSON counts on stdout) or an
    atheris target `head|ranges|tokens [libFuzzer flags]`."""
    if len(argv) >= 8 and argv[1] == "greedy":
        import json
        port, n, dur, rate = int(argv[2]), int(argv[3]), float(argv[4]), float(argv[5])
        print(json.dumps(asyncio.run(greedy_load("127.0.0.1", port, argv[7:], n, dur, rate,
                                                 argv[6]))))
        return 0
    if len(argv) < 2 or argv[1] not in ("head", "ranges", "tokens"):
        print("usage: python -m bench.reliability_fuzz head|ranges|tokens [libFuzzer flags]"
              "\n       python -m bench.reliability_fuzz greedy PORT N DURATION_S "
              "RATE_BYTES_S SRC_IP PATH...", file=sys.stderr)
        return 2
    import atheris
    with atheris.instrument_imports():
        import appliances.httpcore  # noqa: F401
        import appliances.ranges  # noqa: F401
        import appliances.tokens  # noqa: F401
    atheris.Setup([argv[0]] + argv[2:], _atheris_target(argv[1]))
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
