"""Property-based fuzzing (hypothesis) of the pure parsers: httpcore, ranges, tokens.

Each property states an invariant the IO shells rely on: parsers only ever raise their
documented error type, and whatever they accept is safe (no traversal, ranges inside the
object, body length equal to the announced length, no token accepted without the key).
"""
import hashlib
import time

from hypothesis import HealthCheck, example, given, settings, strategies as st

from appliances import httpcore, ranges, tokens
from appliances.httpcore import HttpError, parse_request_head, validate_path

FAST = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
KEY = b"0123456789abcdef0123456789abcdef"
ETAG = '"' + "a" * 32 + '"'

# header-ish text: printable ASCII plus the characters parsers trip over
HEADER_TEXT = st.text(alphabet=st.sampled_from(
    list("0123456789-,= \tbytesBYTES*W/\"abc;xX") + ["\xb2", "\u0661", "\x00", "\xff"]),
    max_size=60)
DIGITS = st.text(alphabet="0123456789", min_size=1, max_size=30)


@FAST
@given(st.binary(max_size=600))
@example(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
@example(b"GET /v/%2e%2e/x HTTP/1.1\r\nHost: x\r\n\r\n")
def test_parse_request_head_raises_only_http_error(raw):
    try:
        req = parse_request_head(raw)
    except HttpError as exc:
        assert exc.status in httpcore.REASONS and 400 <= exc.status < 600
        assert raw[:40].decode("latin-1") not in exc.message or len(raw) < 3
        return
    assert req.method and req.path.startswith("/")
    assert all(k == k.lower() for k in req.headers)


SEGMENT = st.sampled_from(["v", "t0000", "235", "..", ".", "%2e%2e", "%2E.", "%00", "%5c",
                           "%2f", "a%252e", "\\", "", "%c0%ae", "%ff", "x y", "etc", "passwd"])


@FAST
@given(st.lists(SEGMENT, max_size=6), st.sampled_from(["GET", "HEAD", "get", "POST"]),
       st.lists(st.tuples(st.sampled_from(["Host", "Range", "X", "Transfer-Encoding",
                                           "Content-Length", " Host"]), HEADER_TEXT), max_size=4))
def test_accepted_paths_never_traverse(segments, method, headers):
    target = "/" + "/".join(segments)
    lines = [f"{method} {target} HTTP/1.1", "Host: x"] + [f"{k}: {v}" for k, v in headers]
    raw = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace")
    try:
        req = parse_request_head(raw)
    except HttpError:
        return
    parts = req.path.split("/")[1:]
    assert not any(p in ("..", ".") for p in parts) and "\\" not in req.path
    assert "\x00" not in req.path and "%" not in req.path
    try:
        n = req.content_length()
    except HttpError as exc:
        assert exc.status in (400, 411, 413)
    else:
        assert 0 <= n <= httpcore.MAX_BODY_BYTES


@FAST
@given(st.text(max_size=80))
def test_validate_path_raises_only_http_error(path):
    try:
        out = validate_path(path)
    except HttpError as exc:
        assert exc.status == 400
    else:
        assert ".." not in out.split("/") and "\\" not in out


@FAST
@given(HEADER_TEXT, st.sampled_from(["GET", "HEAD"]), st.integers(0, 5000),
       st.one_of(st.none(), HEADER_TEXT), st.one_of(st.none(), st.just(ETAG), HEADER_TEXT))
@example("bytes=0-" + "9" * 5000, "GET", 100, None, None)  # past int()'s digit limit
@example("bytes=-" + "9" * 5000, "GET", 100, None, None)
def test_evaluate_body_matches_announced_length(spec, method, size, if_range, inm):
    headers = {"range": spec}
    if if_range is not None:
        headers["if-range"] = if_range
    if inm is not None:
        headers["if-none-match"] = inm
    d = ranges.evaluate(method, headers, size, ETAG)
    assert d.status in (200, 206, 304, 416)
    data = hashlib.sha256(str(size).encode()).digest() * (size // 32 + 1)
    data = data[:size]
    body = ranges.render_body(d, data)
    if d.send_body and method == "GET":
        assert len(body) == d.content_length
    for p in d.parts:
        assert 0 <= p.start <= p.end <= size
    if d.status == 206 and len(d.parts) == 1:
        p = d.parts[0]
        assert d.header("Content-Range") == f"bytes {p.start}-{p.end - 1}/{size}"
        assert body == data[p.start:p.end] and p.end > p.start
    if d.status == 206 and len(d.parts) > 1:
        starts = [(p.start, p.end) for p in d.parts]
        assert starts == sorted(starts) and all(a[1] < b[0] for a, b in zip(starts, starts[1:]))
    if d.status == 416:
        assert d.header("Content-Range") == f"bytes */{size}"


def reference_ranges(specs, size):
    """Model of RFC 9110 14.1.2 for well-formed specs: satisfiable [start, end) pairs."""
    out = []
    for first, last in specs:
        if first is None:
            if last > 0:
                out.append((max(0, size - last), size))
        elif first < size:
            out.append((first, size if last is None else min(last + 1, size)))
    return out


@FAST
@given(st.lists(st.one_of(
    st.tuples(st.none(), st.integers(0, 10**6)),
    st.tuples(st.integers(0, 10**6), st.none()),
    st.integers(0, 10**6).flatmap(lambda a: st.tuples(st.just(a), st.integers(a, a + 10**6)))),
    min_size=1, max_size=8), st.integers(0, 2 * 10**6))
def test_parse_byte_ranges_matches_reference_model(specs, size):
    text = ",".join(f"{'' if a is None else a}-{'' if b is None else b}" for a, b in specs)
    assert ranges.parse_byte_ranges(text, size) == reference_ranges(specs, size)


@FAST
@given(DIGITS, DIGITS)
def test_huge_positions_never_raise(first, last):
    for spec in (f"{first}-{last}", f"-{last}", f"{first}-"):
        got = ranges.parse_byte_ranges(spec, 1000)
        assert got is None or all(0 <= a < b <= 1000 for a, b in got)


@FAST
@given(st.text(max_size=120), st.sampled_from(["/v/t0001/235/0", "/v/t0001/", "/x", ""]),
       st.sampled_from(["127.0.0.1", "::1", "198.18.0.1", "bogus"]))
@example("exp=%C2%B2&cp=127.0.0.0/8&tok=x", "/v/t0001/235/0", "127.0.0.1")  # non-ASCII digit
@example("exp=\u0662&cp=127.0.0.0/8&tok=x", "/v/t0001/235/0", "127.0.0.1")
def test_token_verify_never_accepts_without_the_key(query, path, client):
    assert tokens.verify(KEY, path, client, query, time.time()) is not tokens.TokenResult.OK


@FAST
@given(st.data())
def test_mutated_genuine_token_accepted_only_if_equivalent(data):
    from bench.reliability_cases import token_fields
    good = tokens.sign(KEY, "/v/t0001/", "127.0.0.0/8", int(time.time()) + 600)
    i = data.draw(st.integers(0, len(good)))
    j = data.draw(st.integers(i, min(len(good), i + 4)))
    q = good[:i] + data.draw(st.text(alphabet="0123456789abcdefXYZ-_=&%/.", max_size=4)) + good[j:]
    ok = tokens.verify(KEY, "/v/t0001/235/0", "127.0.0.1", q, time.time()) is tokens.TokenResult.OK
    assert not ok or token_fields(q) == token_fields(good)


@FAST
@given(st.text(max_size=40), st.text(max_size=40))
def test_render_response_head_refuses_crlf(name, value):
    try:
        out = httpcore.render_response_head(200, [(name, value)], 0, True)
    except (ValueError, UnicodeEncodeError):
        text = name + value
        assert "\r" in text or "\n" in text or any(ord(c) > 255 for c in text)
    else:
        assert out.count(b"\r\n\r\n") == 1 and out.endswith(b"\r\n\r\n")
