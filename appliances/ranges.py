"""Sans-IO RFC 9110 conditional requests and byte ranges for one static representation.

`evaluate(method, headers, size_bytes, etag)` returns a Decision: the status, the response
headers (besides Content-Length/Date/Connection) and the body as byte slices of the object.
Invariants:
- Preconditions are evaluated in RFC 9110 section 13.2.2 order: If-Match, If-Unmodified-Since,
  If-None-Match, If-Modified-Since, then If-Range; only then Range.
- Range applies to GET only (RFC 9110 14.2); HEAD and other methods ignore it.
- Unknown range units are ignored (200). A `bytes` range-set that is syntactically invalid or
  unsatisfiable gives 416 with `Content-Range: bytes */N`. Overlapping or adjacent ranges are
  coalesced; one remaining range gives a single-part 206, several give multipart/byteranges.
- More than MAX_RANGE_SPECS specs, or more than MAX_PARTS parts after coalescing, is refused
  with 416 (RFC 9110 allows refusing excessive range requests).
- A zero-length representation ignores Range (there is no byte to select).
- content_length always equals the bytes a GET with these headers would carry, also for HEAD;
  for 304 it is the length a 200 would carry (the only Content-Length RFC 9110 8.6 allows).
"""
from __future__ import annotations

import email.utils
from dataclasses import dataclass
from typing import Mapping

MAX_RANGE_SPECS = 64
MAX_PARTS = 16
MULTIPART_BOUNDARY = "OCALAB_BYTERANGES_7f3a9c"


@dataclass(frozen=True)
class Part:
    """Body part: `prefix` bytes, then object bytes [start, end) (end exclusive)."""

    prefix: bytes
    start: int
    end: int


@dataclass(frozen=True)
class Decision:
    status: int
    headers: tuple[tuple[str, str], ...]
    parts: tuple[Part, ...] = ()
    trailer: bytes = b""
    content_length: int = 0
    send_body: bool = True  # False for HEAD and for bodiless statuses

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None


def parse_etag_list(value: str) -> list[tuple[bool, str]] | str | None:
    """Parse `*` or 1#entity-tag into [(weak, opaque_with_quotes)]; None if malformed."""
    value = value.strip(" \t")
    if value == "*":
        return "*"
    tags: list[tuple[bool, str]] = []
    i, n = 0, len(value)
    while i < n:
        while i < n and value[i] in " \t,":
            i += 1
        if i >= n:
            break
        weak = value.startswith("W/", i)
        if weak:
            i += 2
        if i >= n or value[i] != '"':
            return None
        j = value.find('"', i + 1)
        if j < 0:
            return None
        opaque = value[i:j + 1]
        if any(ord(c) < 0x21 or ord(c) == 0x7F for c in opaque):
            return None
        tags.append((weak, opaque))
        i = j + 1
        while i < n and value[i] in " \t":
            i += 1
        if i < n and value[i] != ",":
            return None
    return tags or None


def _split_etag(etag: str) -> tuple[bool, str]:
    if etag.startswith("W/"):
        return True, etag[2:]
    return False, etag


def _strong_match(tags, etag: str) -> bool:
    weak, opaque = _split_etag(etag)
    if tags == "*":
        return True
    return not weak and any(not w and o == opaque for w, o in tags)


def _weak_match(tags, etag: str) -> bool:
    _, opaque = _split_etag(etag)
    if tags == "*":
        return True
    return any(o == opaque for _, o in tags)


def _parse_http_date(value: str) -> float | None:
    try:
        dt = email.utils.parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError):
        return None
    if dt is None or dt.tzinfo is None:
        return None
    return dt.timestamp()


_NUM_CAP = 10**18  # above any object size; keeps int() off 4300-digit inputs


def _bounded_int(digits: str) -> int:
    """ASCII digits -> int, capped at _NUM_CAP. Any position >= _NUM_CAP is beyond every
    object, so capping only turns some invalid specs into unsatisfiable ones: 416 either way."""
    digits = digits.lstrip("0") or "0"
    return _NUM_CAP if len(digits) > 18 else int(digits)


def parse_byte_ranges(spec: str, size_bytes: int) -> list[tuple[int, int]] | None:
    """Parse a `bytes` range-set (without the unit) into satisfiable [start, end) pairs.

    Returns None if the set is syntactically invalid or too long; [] if valid but
    unsatisfiable. Pairs are in request order, unsatisfiable specs dropped.
    """
    items = [s.strip(" \t") for s in spec.split(",")]
    items = [s for s in items if s]
    if not items or len(items) > MAX_RANGE_SPECS:
        return None
    out: list[tuple[int, int]] = []
    for item in items:
        first, dash, last = item.partition("-")
        if not dash or (first and not first.isdigit()) or (last and not last.isdigit()):
            return None
        if not first.isascii() or not last.isascii():
            return None
        if not first:  # suffix-range
            if not last:
                return None
            suffix = _bounded_int(last)
            if suffix > 0:
                out.append((max(0, size_bytes - suffix), size_bytes))
            continue
        start = _bounded_int(first)
        if last and _bounded_int(last) < start:
            return None
        end = size_bytes if not last else min(_bounded_int(last) + 1, size_bytes)
        if start < size_bytes:
            out.append((start, end))
    return out


def coalesce(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sort and merge overlapping or adjacent [start, end) ranges."""
    merged: list[tuple[int, int]] = []
    for start, end in sorted(ranges):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def _h(headers: Mapping[str, str], name: str) -> str | None:
    return headers.get(name)


def _bodiless(status: int, base: list[tuple[str, str]], length: int = 0) -> Decision:
    """No body. A 304 carries the 200's length (RFC 9110 8.6 forbids any other value)."""
    return Decision(status, tuple(base), content_length=length, send_body=False)


def evaluate(method: str, headers: Mapping[str, str], size_bytes: int, etag: str,
             last_modified_unix: float | None = None,
             content_type: str = "application/octet-stream") -> Decision:
    """Decide the response to GET/HEAD of one object. `headers` keys are lowercase."""
    if size_bytes < 0:
        raise ValueError(f"size_bytes must be >= 0, got {size_bytes}")
    base = [("ETag", etag), ("Accept-Ranges", "bytes")]
    if last_modified_unix is not None:
        base.append(("Last-Modified", email.utils.formatdate(last_modified_unix, usegmt=True)))
    safe = method in ("GET", "HEAD")

    # 1-2: If-Match / If-Unmodified-Since
    im = _h(headers, "if-match")
    if im is not None:
        tags = parse_etag_list(im)
        if tags is None or not _strong_match(tags, etag):
            return _bodiless(412, base)
    elif (ius := _h(headers, "if-unmodified-since")) is not None and last_modified_unix is not None:
        t = _parse_http_date(ius)
        if t is not None and last_modified_unix > t:
            return _bodiless(412, base)
    # 3-4: If-None-Match / If-Modified-Since
    inm = _h(headers, "if-none-match")
    if inm is not None:
        tags = parse_etag_list(inm)
        if tags is not None and _weak_match(tags, etag):
            return _bodiless(304, base, size_bytes) if safe else _bodiless(412, base)
    elif (ims := _h(headers, "if-modified-since")) is not None and method in ("GET", "HEAD") \
            and last_modified_unix is not None:
        t = _parse_http_date(ims)
        if t is not None and int(last_modified_unix) <= t:
            return _bodiless(304, base, size_bytes)

    full = Decision(200, tuple(base + [("Content-Type", content_type)]),
                    (Part(b"", 0, size_bytes),), b"", size_bytes, method != "HEAD")
    rng = _h(headers, "range")
    if method != "GET" or rng is None or size_bytes == 0:
        return full
    # 5: If-Range (ignored without Range; weak validators never match)
    if_range = _h(headers, "if-range")
    if if_range is not None and not _if_range_holds(if_range, etag, last_modified_unix):
        return full
    unit, eq, spec = rng.partition("=")
    if not eq or unit.strip(" \t").lower() != "bytes":
        return full  # unknown or missing range unit: ignore Range
    ranges = parse_byte_ranges(spec, size_bytes)
    if not ranges:
        merged = []
    else:
        merged = coalesce(ranges)
    if ranges is None or not merged or len(merged) > MAX_PARTS:
        return Decision(416, tuple(base + [("Content-Range", f"bytes */{size_bytes}"),
                                           ("Content-Type", "text/plain")]),
                        (), b"range not satisfiable\n", len(b"range not satisfiable\n"), True)
    if len(merged) == 1:
        start, end = merged[0]
        hdrs = base + [("Content-Type", content_type),
                       ("Content-Range", f"bytes {start}-{end - 1}/{size_bytes}")]
        return Decision(206, tuple(hdrs), (Part(b"", start, end),), b"", end - start, True)
    return _multipart(base, merged, size_bytes, content_type)


def _if_range_holds(value: str, etag: str, last_modified_unix: float | None) -> bool:
    value = value.strip(" \t")
    if value.startswith('"') or value.startswith("W/"):
        tags = parse_etag_list(value)
        return isinstance(tags, list) and len(tags) == 1 and _strong_match(tags, etag)
    t = _parse_http_date(value)
    return t is not None and last_modified_unix is not None and int(last_modified_unix) == int(t)


def _multipart(base: list[tuple[str, str]], merged: list[tuple[int, int]], size_bytes: int,
               content_type: str) -> Decision:
    parts = []
    for start, end in merged:
        prefix = (f"\r\n--{MULTIPART_BOUNDARY}\r\nContent-Type: {content_type}\r\n"
                  f"Content-Range: bytes {start}-{end - 1}/{size_bytes}\r\n\r\n").encode()
        parts.append(Part(prefix, start, end))
    trailer = f"\r\n--{MULTIPART_BOUNDARY}--\r\n".encode()
    length = sum(len(p.prefix) + p.end - p.start for p in parts) + len(trailer)
    hdrs = base + [("Content-Type", f"multipart/byteranges; boundary={MULTIPART_BOUNDARY}")]
    return Decision(206, tuple(hdrs), tuple(parts), trailer, length, True)


def render_body(decision: Decision, data: bytes) -> bytes:
    """Concatenate the body a Decision describes from the full object bytes (for tests/memory)."""
    out = bytearray()
    for p in decision.parts:
        out += p.prefix
        out += data[p.start:p.end]
    out += decision.trailer
    return bytes(out)


__all__ = ["Decision", "Part", "evaluate", "parse_byte_ranges", "coalesce", "parse_etag_list",
           "render_body", "MAX_PARTS", "MAX_RANGE_SPECS", "MULTIPART_BOUNDARY"]
