"""RFC 9110 range and conditional-request conformance table (pure data + pure checks).

`conformance_cases(size_bytes, etag)` returns the cases for one object of `size_bytes` with
strong ETag `etag`; `check_case(case, status, headers, body, data)` compares one response
(status, lowercase header dict, body bytes) with the expectation, given the object's bytes,
and returns a list of problems (empty = pass). Servers under test send no Last-Modified, so
date validators never match (If-Range with a date -> full 200; If-Modified-Since is ignored).
Where RFC 9110 lets a server choose (invalid range-set: ignore or 416; too many ranges), the
expectation is our documented choice: 416 with `Content-Range: bytes */N`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

# body kinds: full object, one range [start, end), multipart ranges, no body, text error body
FULL, RANGE, MULTI, NONE, TEXT = "full", "range", "multi", "none", "text"


@dataclass(frozen=True)
class Case:
    name: str
    method: str
    headers: dict[str, str]
    status: int
    body: str  # FULL | RANGE | MULTI | NONE | TEXT
    ranges: tuple[tuple[int, int], ...] = ()  # expected [start, end) for RANGE / MULTI
    path: str | None = None  # None: the object under test
    extra: dict[str, str] = field(default_factory=dict)  # exact header values expected
    rfc: str = ""


def _r(spec: str) -> dict[str, str]:
    """Range header of a byte-range set (table shorthand)."""
    return {"Range": f"bytes={spec}"}


def _g(name: str, hdrs: dict[str, str], status: int, body: str, rngs=(), rfc: str = "14.2",
       method: str = "GET", **kw) -> Case:
    """One table row (shorthand for Case)."""
    return Case(name, method, hdrs, status, body, tuple(rngs), rfc=rfc, **kw)


def conformance_cases(size_bytes: int, etag: str) -> list[Case]:
    """At least 40 cases for an object of size_bytes (>= 1000) with strong ETag etag: range
    cases first, then validator and method cases, in a fixed order."""
    if size_bytes < 1000:
        raise ValueError(f"conformance object must be >= 1000 bytes, got {size_bytes}")
    return _range_cases(size_bytes) + _validator_cases(size_bytes, etag)


def _range_cases(n: int) -> list[Case]:
    """Plain GET and HEAD, then range requests (RFC 9110 14) on an object of n bytes."""
    unsat = {"Content-Range": f"bytes */{n}"}
    return [
        _g("plain GET", {}, 200, FULL, rfc="15.3.1"),
        _g("HEAD", {}, 200, NONE, method="HEAD", rfc="9.3.2"),
        _g("first byte", _r("0-0"), 206, RANGE, [(0, 1)]),
        _g("first 100 bytes", _r("0-99"), 206, RANGE, [(0, 100)]),
        _g("middle range", _r("100-199"), 206, RANGE, [(100, 200)]),
        _g("last byte by suffix", _r("-1"), 206, RANGE, [(n - 1, n)], rfc="14.1.2"),
        _g("suffix 100", _r("-100"), 206, RANGE, [(n - 100, n)], rfc="14.1.2"),
        _g("suffix longer than object", _r(f"-{n + 10}"), 206, RANGE, [(0, n)], rfc="14.1.2"),
        _g("open-ended from 100", _r("100-"), 206, RANGE, [(100, n)], rfc="14.1.2"),
        _g("open-ended from 0", _r("0-"), 206, RANGE, [(0, n)]),
        _g("open-ended last byte", _r(f"{n - 1}-"), 206, RANGE, [(n - 1, n)]),
        _g("end beyond object clipped", _r(f"0-{n + 1000}"), 206, RANGE, [(0, n)], rfc="14.1.2"),
        _g("last-pos equals size-1", _r(f"10-{n - 1}"), 206, RANGE, [(10, n)]),
        _g("huge last-pos digits", _r("5-" + "9" * 40), 206, RANGE, [(5, n)]),
        _g("start at size: unsatisfiable", _r(f"{n}-"), 416, TEXT, extra=unsat, rfc="15.5.17"),
        _g("start beyond end", _r(f"{n + 100}-{n + 200}"), 416, TEXT, extra=unsat, rfc="15.5.17"),
        _g("huge first-pos digits", _r("9" * 40 + "-"), 416, TEXT, extra=unsat),
        _g("suffix zero", _r("-0"), 416, TEXT, extra=unsat, rfc="14.1.2"),
        _g("all specs unsatisfiable", _r(f"{n}-,{n + 5}-{n + 9}"), 416, TEXT, extra=unsat),
        _g("invalid: last < first", _r("5-2"), 416, TEXT, extra=unsat, rfc="14.1.1"),
        _g("invalid: letters", _r("abc"), 416, TEXT, extra=unsat, rfc="14.1.1"),
        _g("invalid: empty set", _r(""), 416, TEXT, extra=unsat, rfc="14.1.1"),
        _g("invalid: lone dash", _r("-"), 416, TEXT, extra=unsat, rfc="14.1.1"),
        _g("invalid: three numbers", _r("1-2-3"), 416, TEXT, extra=unsat, rfc="14.1.1"),
        _g("invalid: one bad spec of two", _r("0-1,x-2"), 416, TEXT, extra=unsat, rfc="14.1.1"),
        _g("invalid: negative first", _r("-5-10"), 416, TEXT, extra=unsat, rfc="14.1.1"),
        _g("invalid: non-ASCII digits", _r("\xb2-\xb3"), 416, TEXT, extra=unsat),
        _g("unknown unit ignored", {"Range": "items=0-9"}, 200, FULL, rfc="14.2"),
        _g("missing unit ignored", {"Range": "0-9"}, 200, FULL, rfc="14.2"),
        _g("unit is case-insensitive", {"Range": "BYTES=0-9"}, 206, RANGE, [(0, 10)], rfc="14.1"),
        _g("whitespace around specs", {"Range": "bytes= 0-9 , 20-29"}, 206, MULTI,
          [(0, 10), (20, 30)], rfc="14.1.1"),
        _g("multi-range two parts", _r("0-9,20-29"), 206, MULTI, [(0, 10), (20, 30)],
          rfc="14.6"),
        _g("multi-range out of order sorted", _r("40-49,0-9,20-29"), 206, MULTI,
          [(0, 10), (20, 30), (40, 50)], rfc="14.6"),
        _g("multi-range with suffix", _r("0-9,-10"), 206, MULTI, [(0, 10), (n - 10, n)],
          rfc="14.6"),
        _g("overlapping ranges coalesced", _r("0-9,5-14"), 206, RANGE, [(0, 15)], rfc="14.2"),
        _g("adjacent ranges coalesced", _r("0-9,10-19"), 206, RANGE, [(0, 20)], rfc="14.2"),
        _g("one satisfiable of two", _r(f"0-9,{n + 10}-"), 206, RANGE, [(0, 10)], rfc="14.1.2"),
        _g("17 disjoint parts refused", _r(",".join(f"{i * 20}-{i * 20 + 1}" for i in range(17))),
          416, TEXT, extra=unsat, rfc="14.2"),
        _g("70 specs refused", _r(",".join(["0-0"] * 70)), 416, TEXT, extra=unsat, rfc="14.2"),
    ]


def _validator_cases(n: int, etag: str) -> list[Case]:
    """Conditional requests (RFC 9110 13), HEAD, unknown segments and a refused method."""
    weak = "W/" + etag
    return [
        _g("If-Range strong match", {**_r("0-9"), "If-Range": etag}, 206, RANGE, [(0, 10)],
          rfc="13.1.5"),
        _g("If-Range mismatch -> full", {**_r("0-9"), "If-Range": '"other"'}, 200, FULL,
          rfc="13.1.5"),
        _g("If-Range weak never matches", {**_r("0-9"), "If-Range": weak}, 200, FULL,
          rfc="13.1.5"),
        _g("If-Range date without Last-Modified", {**_r("0-9"),
          "If-Range": "Sat, 01 Jan 2000 00:00:00 GMT"}, 200, FULL, rfc="13.1.5"),
        _g("If-Range without Range", {"If-Range": etag}, 200, FULL, rfc="13.1.5"),
        _g("If-Range match, multi-range", {**_r("0-9,20-29"), "If-Range": etag}, 206, MULTI,
          [(0, 10), (20, 30)], rfc="13.1.5"),
        _g("If-None-Match match -> 304", {"If-None-Match": etag}, 304, NONE, rfc="13.1.2"),
        _g("If-None-Match weak compare", {"If-None-Match": weak}, 304, NONE, rfc="13.1.2"),
        _g("If-None-Match star", {"If-None-Match": "*"}, 304, NONE, rfc="13.1.2"),
        _g("If-None-Match in list", {"If-None-Match": f'"a", {etag}, "b"'}, 304, NONE,
          rfc="13.1.2"),
        _g("If-None-Match mismatch -> 200", {"If-None-Match": '"nope"'}, 200, FULL,
          rfc="13.1.2"),
        _g("If-None-Match beats Range", {**_r("0-9"), "If-None-Match": etag}, 304, NONE,
          rfc="13.2.2"),
        _g("If-None-Match malformed ignored", {"If-None-Match": "no-quotes"}, 200, FULL,
          rfc="13.1.2"),
        _g("If-Match match", {"If-Match": etag}, 200, FULL, rfc="13.1.1"),
        _g("If-Match star", {"If-Match": "*"}, 200, FULL, rfc="13.1.1"),
        _g("If-Match mismatch -> 412", {"If-Match": '"nope"'}, 412, NONE, rfc="13.1.1"),
        _g("If-Match weak -> 412", {"If-Match": weak}, 412, NONE, rfc="13.1.1"),
        _g("If-Match fails before Range", {**_r("0-9"), "If-Match": '"nope"'}, 412, NONE,
          rfc="13.2.2"),
        _g("If-Modified-Since ignored (no Last-Modified)",
          {"If-Modified-Since": "Sat, 01 Jan 2100 00:00:00 GMT"}, 200, FULL, rfc="13.1.3"),
        _g("HEAD ignores Range", _r("0-9"), 200, NONE, method="HEAD", rfc="14.2"),
        _g("HEAD If-None-Match -> 304", {"If-None-Match": etag}, 304, NONE, method="HEAD",
          rfc="13.1.2"),
        _g("HEAD with invalid Range", _r("zz"), 200, NONE, method="HEAD", rfc="14.2"),
        _g("unknown segment -> 404", {}, 404, TEXT, path="/v/t0000/999/0", rfc="15.5.5"),
        _g("Range on unknown segment -> 404", _r("0-9"), 404, TEXT, path="/v/t0000/235/99999",
          rfc="15.5.5"),
        _g("POST segment -> 405", {"Content-Length": "0"}, 405, TEXT, method="POST",
          extra={"Allow": "GET, HEAD"}, rfc="15.5.6"),
    ]


_CR_RE = re.compile(r"^bytes (\d+)-(\d+)/(\d+)$")


def _check_headers(case: Case, status: int, h: dict[str, str], body: bytes, size: int,
                   etag: str) -> list[str]:
    bad = []
    for k, v in case.extra.items():
        if h.get(k.lower()) != v:
            bad.append(f"{k}: want {v!r}, got {h.get(k.lower())!r}")
    if status in (200, 206, 304, 412, 416) and h.get("etag") != etag:
        bad.append(f"ETag: want {etag}, got {h.get('etag')!r}")
    if status in (200, 206) and h.get("accept-ranges") != "bytes":
        bad.append("Accept-Ranges: bytes missing")
    cl = h.get("content-length")
    if case.body != NONE and cl != str(len(body)):
        bad.append(f"Content-Length {cl} != body length {len(body)}")
    if case.body == NONE and case.method == "HEAD" and status == 200 and cl != str(size):
        bad.append(f"HEAD Content-Length {cl} != object size {size}")
    if status == 304 and cl not in (None, str(size)):
        bad.append(f"304 Content-Length {cl} is neither absent nor the 200's {size}")
    return bad


def check_case(case: Case, status: int, headers: dict[str, str], body: bytes, data: bytes,
               etag: str) -> list[str]:
    """Problems with one response to `case` for object `data`; [] means conformant."""
    if status != case.status:
        return [f"status: want {case.status}, got {status}"]
    size = len(data)
    h = {k.lower(): v for k, v in headers.items()}
    bad = _check_headers(case, status, h, body, size, etag)
    if case.body == FULL and body != data:
        bad.append(f"body: want the full {size} bytes, got {len(body)} differing bytes")
    elif case.body == NONE and body:
        bad.append(f"body: want none, got {len(body)} bytes")
    elif case.body == TEXT and (b"Traceback" in body or len(body) > 200):
        bad.append("error body leaks a traceback or is over 200 bytes")
    elif case.body == RANGE:
        (start, end), = case.ranges
        want_cr = f"bytes {start}-{end - 1}/{size}"
        if h.get("content-range") != want_cr:
            bad.append(f"Content-Range: want {want_cr!r}, got {h.get('content-range')!r}")
        if body != data[start:end]:
            bad.append(f"body: bytes differ from object[{start}:{end}]")
    elif case.body == MULTI:
        bad += check_multipart(h.get("content-type", ""), body, data, case.ranges)
    return bad


def check_multipart(content_type: str, body: bytes, data: bytes,
                    want: tuple[tuple[int, int], ...]) -> list[str]:
    """Parse a multipart/byteranges body and compare every part with the object bytes."""
    m = re.match(r"^multipart/byteranges;\s*boundary=([^\s;]+)$", content_type)
    if m is None:
        return [f"Content-Type {content_type!r} is not multipart/byteranges"]
    delim = b"--" + m.group(1).encode()
    chunks = body.split(b"\r\n" + delim)
    if not chunks or chunks[-1] != b"--\r\n":
        return ["multipart body does not end with the closing delimiter"]
    got = []
    for chunk in chunks[1:-1]:
        head, sep, payload = chunk.partition(b"\r\n\r\n")
        if not sep:
            return ["multipart part without a header block"]
        fields = dict(line.split(b": ", 1) for line in head.split(b"\r\n")[1:] if b": " in line)
        cr = _CR_RE.match(fields.get(b"Content-Range", b"").decode())
        if cr is None or int(cr.group(3)) != len(data):
            return [f"part Content-Range malformed: {fields.get(b'Content-Range')!r}"]
        start, end = int(cr.group(1)), int(cr.group(2)) + 1
        if payload != data[start:end]:
            return [f"part bytes differ from object[{start}:{end}]"]
        got.append((start, end))
    if tuple(got) != tuple(want):
        return [f"parts: want {list(want)}, got {got}"]
    return []


# --- token matrix -------------------------------------------------------------------------
@dataclass(frozen=True)
class TokenCase:
    name: str
    path: str
    query: str
    expect: int  # 200 for the genuine controls; 403 or 410 for every attack


def token_cases(key: bytes, other_key: bytes, now_unix: int, title: str = "t0001",
                other_title: str = "t0002", client_net: str = "127.0.0.0/8") -> list[TokenCase]:
    """Forged, tampered, expired and wrong-prefix tokens for a client inside client_net."""
    from urllib.parse import parse_qsl, urlencode

    from appliances import tokens
    path, other = f"/v/{title}/235/0", f"/v/{other_title}/235/0"
    exp = now_unix + 600
    good = tokens.sign(key, f"/v/{title}/", client_net, exp)
    q = dict(parse_qsl(good))

    def with_(**kw) -> str:
        return urlencode({**q, **kw}, safe="/:")

    tok = q["tok"]
    flip = ("B" if tok[0] == "A" else "A") + tok[1:]
    cases = [
        TokenCase("genuine", path, good, 200),
        TokenCase("genuine, other segment of the title", f"/v/{title}/750/3", good, 200),
        TokenCase("genuine any-client token", path,
                  tokens.sign(key, f"/v/{title}/", "0.0.0.0/0", exp), 200),
        TokenCase("no query", path, "", 403),
        TokenCase("missing tok", path, f"exp={exp}&cp={q['cp']}", 403),
        TokenCase("missing exp", path, f"cp={q['cp']}&tok={tok}", 403),
        TokenCase("missing cp", path, f"exp={exp}&tok={tok}", 403),
        TokenCase("forged random tok", path, with_(tok="Zm9yZ2VkLXRva2VuLWJ5LWF0dGFja2Vy"), 403),
        TokenCase("forged empty tok", path, with_(tok=""), 403),
        TokenCase("tok first char flipped", path, with_(tok=flip), 403),
        TokenCase("tok truncated", path, with_(tok=tok[:-1]), 403),
        TokenCase("tok padded", path, with_(tok=tok + "="), 403),
        TokenCase("tok upper-cased", path, with_(tok=tok.upper()), 403),
        TokenCase("exp tampered +1", path, with_(exp=str(exp + 1)), 403),
        TokenCase("exp extended a year", path, with_(exp=str(exp + 31536000)), 403),
        TokenCase("exp leading zero", path, with_(exp="0" + str(exp)), 403),
        TokenCase("exp non-ASCII digit", path, good.replace(f"exp={exp}", "exp=%C2%B2"), 403),
        TokenCase("exp negative", path, with_(exp="-1"), 403),
        TokenCase("cp widened to 0.0.0.0/0", path, with_(cp="0.0.0.0/0"), 403),
        TokenCase("cp non-canonical", path, with_(cp="127.0.0.1/8"), 403),
        TokenCase("duplicated tok", path, good + "&tok=" + tok, 403),
        TokenCase("duplicated exp", path, good + f"&exp={exp + 5}", 403),
        TokenCase("client outside cp", path,
                  tokens.sign(key, f"/v/{title}/", "198.18.0.0/15", exp), 403),
        TokenCase("IPv6 cp for IPv4 client", path, tokens.sign(key, f"/v/{title}/", "::/0", exp),
                  403),
        TokenCase("wrong key", path, tokens.sign(other_key, f"/v/{title}/", client_net, exp), 403),
        TokenCase("wrong prefix: other title", other, good, 403),
        TokenCase("wrong prefix: title prefix collision", f"/v/{title}0/235/0", good, 403),
        TokenCase("expired genuine", path, tokens.sign(key, f"/v/{title}/", client_net,
                                                       now_unix - 5), 410),
        TokenCase("expired, client outside cp", path,
                  tokens.sign(key, f"/v/{title}/", "198.18.0.0/15", now_unix - 5), 403),
        TokenCase("expired, other title", other,
                  tokens.sign(key, f"/v/{title}/", client_net, now_unix - 5), 403),
        TokenCase("token in fragment-like tail", path, good + "#x", 400),
    ]
    return cases


def mutate_query(rng, query: str) -> str:
    """One to four random character edits of a query string (for forgery counts)."""
    s = list(query)
    alphabet = "0123456789abcdefABCDEF-_=&%./:+"
    for _ in range(rng.randint(1, 4)):
        op, i = rng.randrange(3), rng.randrange(len(s) + 1)
        if op == 0 and i < len(s):
            s[i] = rng.choice(alphabet)
        elif op == 1 and i < len(s):
            del s[i]
        else:
            s.insert(i, rng.choice(alphabet))
    return "".join(s)


def token_fields(query: str) -> tuple | None:
    """(exp, cp, tok) as the verifier decodes them, or None; equal fields = same token."""
    from urllib.parse import parse_qsl
    try:
        d = dict(parse_qsl(query, keep_blank_values=True))
    except ValueError:
        return None
    return (d.get("exp"), d.get("cp"), d.get("tok"))
