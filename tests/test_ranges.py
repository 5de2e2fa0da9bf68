"""RFC 9110 ranges and conditionals: a table of cases plus multipart and property checks."""
import pytest
from hypothesis import given, strategies as st

from appliances import ranges
from appliances.ranges import coalesce, evaluate, parse_byte_ranges, parse_etag_list, render_body

N = 1000
ETAG = '"abc"'
LM = 1_700_000_000  # Tue, 14 Nov 2023 22:13:20 GMT
LM_HTTP = "Tue, 14 Nov 2023 22:13:20 GMT"
BEFORE_HTTP = "Mon, 13 Nov 2023 00:00:00 GMT"
AFTER_HTTP = "Wed, 15 Nov 2023 00:00:00 GMT"
DATA = bytes(i % 251 for i in range(N))

# (id, method, headers, status, content-range or None, body slice (start, end) or None)
CASES = [
    ("plain-get", "GET", {}, 200, None, (0, N)),
    ("plain-head", "HEAD", {}, 200, None, None),
    ("first-10", "GET", {"range": "bytes=0-9"}, 206, "bytes 0-9/1000", (0, 10)),
    ("open-ended", "GET", {"range": "bytes=990-"}, 206, "bytes 990-999/1000", (990, N)),
    ("suffix", "GET", {"range": "bytes=-10"}, 206, "bytes 990-999/1000", (990, N)),
    ("suffix-larger-than-size", "GET", {"range": "bytes=-5000"}, 206, "bytes 0-999/1000", (0, N)),
    ("last-past-end-clamped", "GET", {"range": "bytes=500-5000"}, 206, "bytes 500-999/1000",
     (500, N)),
    ("single-byte", "GET", {"range": "bytes=999-999"}, 206, "bytes 999-999/1000", (999, N)),
    ("whole-as-range", "GET", {"range": "bytes=0-"}, 206, "bytes 0-999/1000", (0, N)),
    ("unit-case-insensitive", "GET", {"range": "BYTES=0-9"}, 206, "bytes 0-9/1000", (0, 10)),
    ("ows-around-specs", "GET", {"range": "bytes= 0-9 , "}, 206, "bytes 0-9/1000", (0, 10)),
    ("first-past-end-416", "GET", {"range": "bytes=1000-"}, 416, "bytes */1000", None),
    ("suffix-zero-416", "GET", {"range": "bytes=-0"}, 416, "bytes */1000", None),
    ("last-before-first-416", "GET", {"range": "bytes=9-0"}, 416, "bytes */1000", None),
    ("garbage-spec-416", "GET", {"range": "bytes=abc"}, 416, "bytes */1000", None),
    ("empty-spec-416", "GET", {"range": "bytes="}, 416, "bytes */1000", None),
    ("no-dash-416", "GET", {"range": "bytes=5"}, 416, "bytes */1000", None),
    ("double-dash-416", "GET", {"range": "bytes=--5"}, 416, "bytes */1000", None),
    ("negative-first-416", "GET", {"range": "bytes=-1-5"}, 416, "bytes */1000", None),
    ("unicode-digits-416", "GET", {"range": "bytes=\u0661-5"}, 416, "bytes */1000", None),
    ("one-satisfiable-of-two", "GET", {"range": "bytes=2000-3000,0-4"}, 206, "bytes 0-4/1000",
     (0, 5)),
    ("overlap-coalesced", "GET", {"range": "bytes=0-9,5-19"}, 206, "bytes 0-19/1000", (0, 20)),
    ("adjacent-coalesced", "GET", {"range": "bytes=10-19,0-9"}, 206, "bytes 0-19/1000", (0, 20)),
    ("unknown-unit-ignored", "GET", {"range": "items=0-9"}, 200, None, (0, N)),
    ("no-equals-ignored", "GET", {"range": "bytes 0-9"}, 200, None, (0, N)),
    ("head-ignores-range", "HEAD", {"range": "bytes=0-9"}, 200, None, None),
    ("post-ignores-range", "POST", {"range": "bytes=0-9"}, 200, None, (0, N)),
    ("too-many-specs-416", "GET", {"range": "bytes=" + ",".join(f"{2*i}-{2*i}" for i in range(65))},
     416, "bytes */1000", None),
    ("if-range-match", "GET", {"range": "bytes=0-9", "if-range": ETAG}, 206, "bytes 0-9/1000",
     (0, 10)),
    ("if-range-mismatch-full", "GET", {"range": "bytes=0-9", "if-range": '"zzz"'}, 200, None,
     (0, N)),
    ("if-range-weak-never", "GET", {"range": "bytes=0-9", "if-range": 'W/"abc"'}, 200, None,
     (0, N)),
    ("if-range-date-equal", "GET", {"range": "bytes=0-9", "if-range": LM_HTTP}, 206,
     "bytes 0-9/1000", (0, 10)),
    ("if-range-date-older", "GET", {"range": "bytes=0-9", "if-range": BEFORE_HTTP}, 200, None,
     (0, N)),
    ("if-range-garbage", "GET", {"range": "bytes=0-9", "if-range": "nonsense"}, 200, None, (0, N)),
    ("if-range-without-range", "GET", {"if-range": '"zzz"'}, 200, None, (0, N)),
    ("inm-match-304", "GET", {"if-none-match": ETAG}, 304, None, None),
    ("inm-weak-match-304", "GET", {"if-none-match": 'W/"abc"'}, 304, None, None),
    ("inm-list-match-304", "GET", {"if-none-match": '"x", "abc"'}, 304, None, None),
    ("inm-star-304", "HEAD", {"if-none-match": "*"}, 304, None, None),
    ("inm-nomatch-200", "GET", {"if-none-match": '"x"'}, 200, None, (0, N)),
    ("inm-beats-range", "GET", {"if-none-match": ETAG, "range": "bytes=0-9"}, 304, None, None),
    ("inm-nomatch-then-range", "GET", {"if-none-match": '"x"', "range": "bytes=0-9"}, 206,
     "bytes 0-9/1000", (0, 10)),
    ("inm-match-post-412", "POST", {"if-none-match": ETAG}, 412, None, None),
    ("inm-malformed-ignored", "GET", {"if-none-match": "abc"}, 200, None, (0, N)),
    ("if-match-ok", "GET", {"if-match": ETAG, "range": "bytes=0-0"}, 206, "bytes 0-0/1000", (0, 1)),
    ("if-match-fail-412", "GET", {"if-match": '"nope"'}, 412, None, None),
    ("if-match-weak-412", "GET", {"if-match": 'W/"abc"'}, 412, None, None),
    ("if-match-star", "GET", {"if-match": "*"}, 200, None, (0, N)),
    ("ius-older-412", "GET", {"if-unmodified-since": BEFORE_HTTP}, 412, None, None),
    ("ius-newer-ok", "GET", {"if-unmodified-since": AFTER_HTTP}, 200, None, (0, N)),
    ("ims-not-modified-304", "GET", {"if-modified-since": LM_HTTP}, 304, None, None),
    ("ims-modified-200", "GET", {"if-modified-since": BEFORE_HTTP}, 200, None, (0, N)),
    ("ims-ignored-with-inm", "GET", {"if-modified-since": AFTER_HTTP, "if-none-match": '"x"'},
     200, None, (0, N)),
    ("ims-garbage-ignored", "GET", {"if-modified-since": "yesterday"}, 200, None, (0, N)),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_table(case):
    _, method, headers, status, content_range, body = case
    d = evaluate(method, headers, N, ETAG, last_modified_unix=LM)
    assert d.status == status
    assert d.header("ETag") == ETAG and d.header("Accept-Ranges") == "bytes"
    assert d.header("Content-Range") == content_range
    if body is None:
        assert not d.send_body or status == 416
    else:
        start, end = body
        assert d.send_body
        assert render_body(d, DATA) == DATA[start:end]
        assert d.content_length == end - start


def test_at_least_thirty_cases():
    assert len(CASES) >= 30


def test_304_keeps_200_length_and_412_is_empty():
    d = evaluate("GET", {"if-none-match": ETAG}, N, ETAG)
    assert d.status == 304 and d.content_length == N and not d.send_body and d.parts == ()
    d = evaluate("GET", {"if-match": '"other"'}, N, ETAG)
    assert d.status == 412 and d.content_length == 0 and not d.send_body


def test_head_has_get_length_without_body():
    d = evaluate("HEAD", {}, N, ETAG)
    assert d.content_length == N and not d.send_body


def test_multipart_byteranges():
    d = evaluate("GET", {"range": "bytes=0-1,10-12,-2"}, N, ETAG)
    assert d.status == 206 and d.header("Content-Range") is None
    ctype = d.header("Content-Type")
    assert ctype == f"multipart/byteranges; boundary={ranges.MULTIPART_BOUNDARY}"
    body = render_body(d, DATA)
    assert len(body) == d.content_length
    b = ranges.MULTIPART_BOUNDARY.encode()
    chunks = body.split(b"--" + b)
    assert chunks[-1] == b"--\r\n"
    parts = chunks[1:-1]
    assert len(parts) == 3
    expect = [((0, 1), DATA[0:2]), ((10, 12), DATA[10:13]), ((998, 999), DATA[998:1000])]
    for part, ((s, e), payload) in zip(parts, expect):
        head, _, content = part.partition(b"\r\n\r\n")
        assert f"Content-Range: bytes {s}-{e}/{N}".encode() in head
        assert content == payload + b"\r\n"


def test_too_many_parts_after_coalescing_416():
    spec = ",".join(f"{3 * i}-{3 * i}" for i in range(ranges.MAX_PARTS + 1))
    assert evaluate("GET", {"range": "bytes=" + spec}, N, ETAG).status == 416


def test_zero_length_object_ignores_range():
    d = evaluate("GET", {"range": "bytes=0-0"}, 0, ETAG)
    assert d.status == 200 and d.content_length == 0


def test_weak_etag_resource_never_strong_matches():
    d = evaluate("GET", {"if-match": 'W/"abc"'}, N, 'W/"abc"')
    assert d.status == 412
    assert evaluate("GET", {"if-none-match": '"abc"'}, N, 'W/"abc"').status == 304


def test_etag_list_parser():
    assert parse_etag_list("*") == "*"
    assert parse_etag_list('"a", W/"b",,"c,d"') == [(False, '"a"'), (True, '"b"'), (False, '"c,d"')]
    assert parse_etag_list('"a" "b"') is None
    assert parse_etag_list('"unterminated') is None
    assert parse_etag_list("") is None


def test_coalesce():
    assert coalesce([(5, 10), (0, 3), (3, 4), (9, 20)]) == [(0, 4), (5, 20)]


@given(size=st.integers(1, 5000), a=st.integers(0, 6000), b=st.integers(0, 6000))
def test_single_range_invariants(size, a, b):
    lo, hi = min(a, b), max(a, b)
    d = evaluate("GET", {"range": f"bytes={lo}-{hi}"}, size, ETAG)
    if lo >= size:
        assert d.status == 416 and d.header("Content-Range") == f"bytes */{size}"
    else:
        assert d.status == 206
        (p,) = d.parts
        assert p.start == lo and p.end == min(hi + 1, size) and d.content_length == p.end - p.start


@given(size=st.integers(1, 3000),
       specs=st.lists(st.tuples(st.integers(0, 3500), st.integers(0, 3500)), min_size=1,
                      max_size=8))
def test_parsed_ranges_within_bounds(size, specs):
    text = ",".join(f"{min(a, b)}-{max(a, b)}" for a, b in specs)
    got = parse_byte_ranges(text, size)
    assert got is not None
    for s, e in got:
        assert 0 <= s < e <= size
    merged = coalesce(got)
    assert all(merged[i][1] < merged[i + 1][0] for i in range(len(merged) - 1))


@pytest.mark.parametrize("spec,status,content_range", [
    ("bytes=0-" + "9" * 5000, 206, "bytes 0-999/1000"),
    ("bytes=-" + "9" * 5000, 206, "bytes 0-999/1000"),
    ("bytes=" + "9" * 5000 + "-", 416, "bytes */1000"),
    ("bytes=" + "9" * 20 + "-" + "9" * 19, 416, "bytes */1000"),
    ("bytes=" + "0" * 30 + "5-9", 206, "bytes 5-9/1000"),
])
def test_huge_range_positions_do_not_raise(spec, status, content_range):
    """Regression (reliability fuzz): positions over 4300 digits made int() raise ValueError
    (Python's integer-string limit) -> 500 and a traceback for one Range header."""
    d = evaluate("GET", {"range": spec}, N, ETAG)
    assert d.status == status and d.header("Content-Range") == content_range
