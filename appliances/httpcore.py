"""Sans-IO HTTP/1.1 request-head parsing with limits, and response-head rendering.

Invariants:
- `parse_request_head(raw)` takes the bytes of one request head (request line + fields +
  the empty line) and either returns a Request or raises HttpError carrying a status code and
  a fixed, generic message: client input is never echoed back.
- Limits: request line <= MAX_REQUEST_LINE_BYTES, at most MAX_HEADERS fields, whole head <=
  the caller's limit (the IO shell enforces it and answers 431).
- Targets must be origin-form (`/...`); the path is percent-decoded once and must be free of
  NUL, backslash, `..`/`.` segments and empty segments, so `/v/../../etc/passwd` and
  `/v/%2e%2e/...` are rejected with 400.
- Field names are lowercased; repeated fields are joined with ", " (RFC 9110 5.3).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from email.utils import formatdate
from urllib.parse import unquote

MAX_REQUEST_LINE_BYTES = 4096
NODE_HEADER = "X-Ocalab-Node"  # on every origin/OCA response: the server that sent the bytes
# "1" on an OCA's 404 in miss mode content_miss: it lacks the object and does not pull it at
# serve time, so the player moves to its next location (a plain 404 carries no such header).
CONTENT_MISS_HEADER = "X-Ocalab-Content-Miss"
# on every origin/OCA response, so a player in a web page (dash.js, hls.js) may read the
# segments and these headers across origins, as browsers require of a CDN
CORS_HEADERS = (("Access-Control-Allow-Origin", "*"),
                ("Access-Control-Expose-Headers", f"{NODE_HEADER}, {CONTENT_MISS_HEADER}"))
MAX_HEADERS = 64
MAX_BODY_BYTES = 4 * 1024 * 1024
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "TRACE", "PATCH",
                     "CONNECT"})
_TOKEN_RE = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_BAD_PCT_RE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_FIELD_VALUE_BAD = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")

REASONS = {200: "OK", 202: "Accepted", 206: "Partial Content", 302: "Found",
           304: "Not Modified", 400: "Bad Request", 403: "Forbidden", 404: "Not Found",
           405: "Method Not Allowed", 408: "Request Timeout", 410: "Gone",
           411: "Length Required", 412: "Precondition Failed", 413: "Content Too Large",
           414: "URI Too Long", 416: "Range Not Satisfiable",
           431: "Request Header Fields Too Large",
           500: "Internal Server Error", 501: "Not Implemented", 502: "Bad Gateway",
           503: "Service Unavailable", 504: "Gateway Timeout", 505: "HTTP Version Not Supported"}


class HttpError(Exception):
    """A request that must be refused with `status`; `message` is generic and safe to send."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status} {message}")
        self.status = status
        self.message = message


@dataclass
class Request:
    method: str
    target: str
    path: str  # percent-decoded, validated
    query: str  # raw query string (no '?')
    version: str  # "HTTP/1.1" or "HTTP/1.0"
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    @property
    def keep_alive(self) -> bool:
        conn = {t.strip().lower() for t in self.headers.get("connection", "").split(",")}
        if self.version == "HTTP/1.0":
            return "keep-alive" in conn
        return "close" not in conn

    def content_length(self) -> int:
        """Declared body length (0 if none); HttpError on malformed or chunked bodies."""
        if "transfer-encoding" in self.headers:
            raise HttpError(411, "transfer-encoding is not supported; send Content-Length")
        value = self.headers.get("content-length")
        if value is None:
            return 0
        values = {v.strip() for v in value.split(",")}
        if len(values) != 1:
            raise HttpError(400, "conflicting Content-Length")
        v = values.pop()
        if not v.isascii() or not v.isdigit() or len(v) > 12:
            raise HttpError(400, "malformed Content-Length")
        n = int(v)
        if n > MAX_BODY_BYTES:
            raise HttpError(413, "request body too large")
        return n


def validate_path(raw_path: str) -> str:
    """Percent-decode once and reject traversal, NUL, backslash and empty/dot segments."""
    if not raw_path.startswith("/"):
        raise HttpError(400, "request target must be an absolute path")
    if _BAD_PCT_RE.search(raw_path):
        raise HttpError(400, "malformed percent-encoding in path")
    try:
        path = unquote(raw_path, encoding="utf-8", errors="strict")
    except UnicodeDecodeError:
        raise HttpError(400, "malformed percent-encoding in path") from None
    if "%" in path:
        raise HttpError(400, "double percent-encoding in path")
    if any(c in path for c in ("\x00", "\\")) or any(ord(c) < 0x20 or ord(c) == 0x7F for c in path):
        raise HttpError(400, "forbidden character in path")
    segments = path.split("/")[1:]
    if path != "/" and any(s in ("", ".", "..") for s in segments):
        raise HttpError(400, "empty or dot segment in path")
    return path


def parse_request_head(raw: bytes) -> Request:
    """Parse one request head ending with CRLFCRLF (bare LF tolerated)."""
    try:
        text = raw.decode("latin-1")
    except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes every byte
        raise HttpError(400, "undecodable request head") from None
    lines = text.replace("\r\n", "\n").split("\n")
    while lines and lines[-1] == "":
        lines.pop()
    while lines and lines[0] == "":  # RFC 9112 2.2: ignore leading empty lines
        lines.pop(0)
    if not lines:
        raise HttpError(400, "empty request")
    request_line = lines[0]
    if len(request_line) > MAX_REQUEST_LINE_BYTES:
        raise HttpError(414, "request line too long")
    parts = request_line.split(" ")
    if len(parts) != 3:
        raise HttpError(400, "malformed request line")
    method, target, version = parts
    if not _TOKEN_RE.match(method):
        raise HttpError(400, "malformed method")
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        if re.fullmatch(r"HTTP/[0-9]\.[0-9]", version):
            raise HttpError(505, "HTTP version not supported")
        raise HttpError(400, "malformed HTTP version")
    if "\r" in text.replace("\r\n", ""):
        raise HttpError(400, "bare CR in request head")
    headers: dict[str, str] = {}
    if len(lines) - 1 > MAX_HEADERS:
        raise HttpError(431, "too many header fields")
    for line in lines[1:]:
        if line[:1] in (" ", "\t"):
            raise HttpError(400, "obsolete line folding is not accepted")
        name, colon, value = line.partition(":")
        if not colon or not _TOKEN_RE.match(name):
            raise HttpError(400, "malformed header field")
        value = value.strip(" \t")
        if _FIELD_VALUE_BAD.search(value):
            raise HttpError(400, "forbidden character in header value")
        key = name.lower()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    if version == "HTTP/1.1" and "host" not in headers:
        raise HttpError(400, "missing Host header")
    if "," in headers.get("host", ""):
        raise HttpError(400, "multiple Host headers")
    if any(not 0x21 <= ord(c) <= 0x7E for c in target):
        raise HttpError(400, "request target must be visible ASCII")
    if target == "*" or not target.startswith("/"):
        raise HttpError(400, "only origin-form request targets are accepted")
    raw_path, _, query = target.partition("?")
    if "#" in target:
        raise HttpError(400, "fragment in request target")
    path = validate_path(raw_path)
    return Request(method, target, path, query, version, headers)


def render_response_head(status: int, headers: list[tuple[str, str]] | tuple,
                         content_length: int | None, keep_alive: bool) -> bytes:
    """Status line + headers + CRLF; adds Date, Content-Length and Connection."""
    lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Unknown')}",
             f"Date: {formatdate(usegmt=True)}"]
    for k, v in headers:
        if "\r" in v or "\n" in v or "\r" in k or "\n" in k:
            raise ValueError(f"CR/LF in response header {k!r}")
        lines.append(f"{k}: {v}")
    if content_length is not None:
        lines.append(f"Content-Length: {content_length}")
    lines.append("Connection: keep-alive" if keep_alive else "Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
