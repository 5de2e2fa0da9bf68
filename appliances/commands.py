"""Signed control commands (control plane -> OCA), sans-IO: the caller passes `now`.

A command (today `POST /fill`, the only request that changes an OCA's state) carries headers
  X-Ocalab-Cmd-Ts: unix seconds (decimal, no leading zero)
  X-Ocalab-Cmd-Nonce: 32 lowercase hex digits (128 random bits, fresh per command)
  X-Ocalab-Cmd-Mac: 64 lowercase hex digits, HMAC-SHA256(key, "ocalab-cmd-v1" LF method LF
                    target LF ts LF nonce LF hex SHA-256 of the body)
where target is the request path plus `?query` when there is one. The key is a hex key file
read by appliances.tokens.load_key (the same format and checks as --token-key; use its own
file so a leaked URL-token key cannot command OCAs).
Verification order (`CommandVerifier.verify`): no command header at all -> UNSIGNED; a header
missing or malformed -> MALFORMED; MAC mismatch (constant-time compare) -> FORGED;
|now - ts| > window_s -> EXPIRED; nonce already accepted -> REPLAYED; nonce memory full ->
BUSY; else OK and the nonce is remembered. Only commands with a valid MAC and a fresh
timestamp reach the nonce memory, so without the key nobody can fill it. A nonce is kept
until ts + window_s (after that its timestamp is expired anyway): memory holds at most
`max_nonces` nonces, i.e. commands accepted within 2 x window_s; when full, new commands are
refused (BUSY, fail closed) rather than forgetting a nonce still replayable.
"""
from __future__ import annotations

import enum
import hashlib
import heapq
import hmac
import re
import secrets
from typing import Mapping
from urllib.parse import urlsplit

from appliances import tokens

TS_HEADER, NONCE_HEADER, MAC_HEADER = "X-Ocalab-Cmd-Ts", "X-Ocalab-Cmd-Nonce", "X-Ocalab-Cmd-Mac"
WINDOW_S = 30.0
MAX_NONCES = 4096
_TS_RE = re.compile(r"^(0|[1-9][0-9]{0,11})$")
_NONCE_RE = re.compile(r"^[0-9a-f]{32}$")
_MAC_RE = re.compile(r"^[0-9a-f]{64}$")


class CommandResult(enum.Enum):
    OK = "ok"
    UNSIGNED = "unsigned"  # HTTP 403 for every refusal but BUSY
    MALFORMED = "malformed"
    FORGED = "forged"
    EXPIRED = "expired"
    REPLAYED = "replayed"
    BUSY = "busy"  # HTTP 503 + Retry-After: nonce memory full


def _mac(key: bytes, method: str, target: str, ts: str, nonce: str, body: bytes) -> str:
    msg = "\n".join(("ocalab-cmd-v1", method, target, ts, nonce,
                     hashlib.sha256(body).hexdigest())).encode("utf-8", "replace")
    return hmac.new(key, msg, hashlib.sha256).hexdigest()


def target_of(url: str) -> str:
    """The request target a client sends for `url` (path, plus ?query), as the MAC covers it."""
    u = urlsplit(url)
    return (u.path or "/") + (f"?{u.query}" if u.query else "")


def sign(key: bytes, method: str, target: str, body: bytes, now_unix: float,
         nonce: str | None = None) -> dict[str, str]:
    """Command headers for one request; a fresh random nonce unless one is given (tests)."""
    tokens.check_key(key)
    nonce = secrets.token_hex(16) if nonce is None else nonce
    ts = str(int(now_unix))
    return {TS_HEADER: ts, NONCE_HEADER: nonce,
            MAC_HEADER: _mac(bytes(key), method, target, ts, nonce, body)}


class CommandVerifier:
    """Checks command signatures and remembers accepted nonces (bounded)."""

    def __init__(self, key: bytes, window_s: float = WINDOW_S, max_nonces: int = MAX_NONCES):
        tokens.check_key(key)
        if window_s <= 0 or max_nonces < 1:
            raise ValueError("window_s must be > 0 and max_nonces >= 1")
        self.key, self.window_s, self.max_nonces = bytes(key), window_s, max_nonces
        self._seen: set[str] = set()
        self._expiry: list[tuple[float, str]] = []  # heap of (forget after, nonce)

    def verify(self, method: str, target: str, body: bytes, headers: Mapping[str, str],
               now_unix: float) -> CommandResult:
        """The verdict on one request; `headers` has lower-case names (httpcore.Request)."""
        got = [headers.get(h.lower()) for h in (TS_HEADER, NONCE_HEADER, MAC_HEADER)]
        if all(v is None for v in got):
            return CommandResult.UNSIGNED
        ts, nonce, mac = got
        if not (ts and nonce and mac and _TS_RE.match(ts) and _NONCE_RE.match(nonce)
                and _MAC_RE.match(mac)):
            return CommandResult.MALFORMED
        want = _mac(self.key, method, target, ts, nonce, body)
        if not hmac.compare_digest(want.encode(), mac.encode()):
            return CommandResult.FORGED
        if abs(now_unix - int(ts)) > self.window_s:
            return CommandResult.EXPIRED
        self._forget(now_unix)
        if nonce in self._seen:
            return CommandResult.REPLAYED
        if len(self._seen) >= self.max_nonces:
            return CommandResult.BUSY
        self._seen.add(nonce)
        heapq.heappush(self._expiry, (int(ts) + self.window_s, nonce))
        return CommandResult.OK

    def remembered(self, now_unix: float) -> int:
        """Nonces still remembered at now_unix."""
        self._forget(now_unix)
        return len(self._seen)

    def _forget(self, now_unix: float) -> None:
        while self._expiry and self._expiry[0][0] < now_unix:
            self._seen.discard(heapq.heappop(self._expiry)[1])
