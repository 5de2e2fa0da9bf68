"""HMAC-SHA256 signed URLs shared by the control plane (signer) and OCAs (verifier).

A token covers every segment of one title: path_prefix is `/v/<title>/`. The MAC covers
(path_prefix, client_prefix, expires_unix); the query carries `exp`, `cp` and `tok`, and the
verifier re-derives path_prefix from the requested path, so a token for one title fails for
every other path. Check order: malformed/missing/tampered/wrong client -> FORBIDDEN, and only a
genuine token past its expiry -> EXPIRED (a tampered `exp` is FORBIDDEN, never EXPIRED).
"""
from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import ipaddress
import re
import secrets
from pathlib import Path
from urllib.parse import parse_qsl, quote

MIN_KEY_BYTES = 16
_PREFIX_RE = re.compile(r"^/v/[A-Za-z0-9_-]{1,64}/$")
_PATH_PREFIX_RE = re.compile(r"^(/v/[A-Za-z0-9_-]{1,64}/)")


class TokenResult(enum.Enum):
    OK = "ok"
    FORBIDDEN = "forbidden"  # HTTP 403
    EXPIRED = "expired"  # HTTP 410


def _mac(key: bytes, path_prefix: str, client_prefix: str, expires_unix: int) -> str:
    msg = f"v1|{path_prefix}|{client_prefix}|{expires_unix}".encode()
    digest = hmac.new(key, msg, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def check_key(key: bytes) -> None:
    """ValueError unless `key` is bytes of at least MIN_KEY_BYTES (URL tokens and commands)."""
    if not isinstance(key, (bytes, bytearray)) or len(key) < MIN_KEY_BYTES:
        raise ValueError(f"key must be at least {MIN_KEY_BYTES} bytes")


def sign(key: bytes, path_prefix: str, client_prefix: str, expires_unix: int) -> str:
    """Return `exp=<unix>&cp=<network>&tok=<urlsafe b64 HMAC>` for one title's prefix."""
    check_key(key)
    if not _PREFIX_RE.match(path_prefix):
        raise ValueError(f"path_prefix must look like /v/<title>/, got {path_prefix!r}")
    try:
        net = ipaddress.ip_network(client_prefix, strict=True)
    except ValueError as exc:
        raise ValueError(f"client_prefix is not a network: {client_prefix!r} ({exc})") from None
    if isinstance(expires_unix, bool) or not isinstance(expires_unix, int) or expires_unix < 0:
        raise ValueError(f"expires_unix must be a non-negative int, got {expires_unix!r}")
    cp = str(net)
    tok = _mac(bytes(key), path_prefix, cp, expires_unix)
    return f"exp={expires_unix}&cp={quote(cp, safe='/:')}&tok={tok}"


def _client_in(client_ip: str, cp: str) -> bool:
    try:
        net = ipaddress.ip_network(cp, strict=True)
        ip = ipaddress.ip_address(client_ip)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.version == net.version and ip in net


def verify(key: bytes, path: str, client_ip: str, query: str, now_unix: float) -> TokenResult:
    """Check the token in `query` for `path` requested by `client_ip` at `now_unix`."""
    check_key(key)
    m = _PATH_PREFIX_RE.match(path or "")
    if m is None:
        return TokenResult.FORBIDDEN
    try:
        pairs = parse_qsl(query or "", keep_blank_values=True, strict_parsing=False,
                          max_num_fields=32)
    except ValueError:
        return TokenResult.FORBIDDEN
    params: dict[str, str] = {}
    for name, value in pairs:
        if name in ("exp", "cp", "tok"):
            if name in params:
                return TokenResult.FORBIDDEN  # duplicated parameter: ambiguous
            params[name] = value
    if set(params) != {"exp", "cp", "tok"}:
        return TokenResult.FORBIDDEN
    exp_s = params["exp"]
    if (not exp_s.isascii() or not exp_s.isdigit() or len(exp_s) > 12
            or (len(exp_s) > 1 and exp_s[0] == "0")):  # isdigit alone admits '²' (int() fails)
        return TokenResult.FORBIDDEN
    expected = _mac(bytes(key), m.group(1), params["cp"], int(exp_s))
    if not hmac.compare_digest(expected.encode(), params["tok"].encode("utf-8", "replace")):
        return TokenResult.FORBIDDEN
    if not _client_in(client_ip, params["cp"]):
        return TokenResult.FORBIDDEN
    if now_unix > int(exp_s):
        return TokenResult.EXPIRED
    return TokenResult.OK


def load_key(path: str | Path) -> bytes:
    """Read a hex key (whitespace ignored) from a file; at least 16 bytes."""
    text = Path(path).read_text(encoding="ascii", errors="strict").strip()
    try:
        key = bytes.fromhex("".join(text.split()))
    except ValueError:
        raise ValueError(f"key file {path} does not hold hex") from None
    check_key(key)
    return key


def new_key_hex(n_bytes: int = 32) -> str:
    """A fresh random key in the hex form load_key reads."""
    return secrets.token_hex(n_bytes)


def write_key(path: str | Path, n_bytes: int = 32) -> bytes:
    """Write a fresh hex key to `path` (mode 0600) and return its bytes."""
    hex_key = new_key_hex(n_bytes)
    p = Path(path)
    p.write_text(hex_key + "\n", encoding="ascii")
    p.chmod(0o600)
    return bytes.fromhex(hex_key)
