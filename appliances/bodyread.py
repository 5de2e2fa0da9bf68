"""Read and hash a response body with few wake-ups: SO_RCVLOWAT lets bytes gather in the kernel.

Over an emulated link a segment reaches the player a packet or two at a time, and each arrival
costs the asyncio loop a wake-up, an aiohttp `data_received` and a task switch (~40 us: most of
the player's CPU per chunk). While a body is read, the socket's receive low-water mark asks the
kernel to report it readable only once `lowat_bytes` have arrived (or FIN/an error).

Invariants (what keeps the timing and errors of a fetch unchanged):
- The mark never exceeds the body bytes still owed (Content-Length known), so the last byte
  wakes the reader at once: download_ms is unchanged. Without a Content-Length, or with a
  transfer or content coding (bytes read would not be bytes received), no mark is set.
- Over TLS the kernel counts ciphertext while asyncio's ssl layer may hold up to one partial
  record: the mark stays TLS_MARGIN_BYTES below what is owed.
- The mark is at most HOLD_S of the request's rate so far (body bytes over the time since it
  was sent, first-byte wait included, so it errs low) and at most MAX_LOWAT_BYTES: bytes wait
  unread for about 10 ms, far below the read timeout, and hold a small part of the receive
  window (the kernel grows rcvbuf only for a mark above half of it: default rcvbuf 87 KB+).
- It is reset to 1 before the connection can serve another request (keep-alive).
"""
from __future__ import annotations

import hashlib
import socket
import time

import aiohttp

MAX_LOWAT_BYTES = 16384
HOLD_S = 0.010
TLS_MARGIN_BYTES = 17 * 1024  # a TLS record: 16384 plaintext bytes + header, MAC and padding


def lowat_bytes(remaining_bytes: int, rate_bytes_s: float, tls: bool) -> int:
    """The receive low-water mark while `remaining_bytes` of the body are owed (>= 1)."""
    if tls:
        remaining_bytes -= TLS_MARGIN_BYTES
    return max(1, min(remaining_bytes, MAX_LOWAT_BYTES, int(rate_bytes_s * HOLD_S)))


async def read_digest(resp: aiohttp.ClientResponse, sent_at: float) -> tuple[int, str]:
    """Length and SHA-256 hex digest of the whole body of `resp` (read as `resp.read()` would,
    hashed as it arrives: no joined copy), setting SO_RCVLOWAT as it arrives. The rate is taken
    over the whole request since `sent_at` (time.monotonic()), which counts the wait for the
    first byte: an estimate that errs low, so the mark does too."""
    framed = "Transfer-Encoding" in resp.headers or \
        resp.headers.get("Content-Encoding", "identity").lower() != "identity"
    expected = None if framed else resp.content_length  # else bytes read != bytes on the wire
    transport = resp.connection.transport if resp.connection is not None else None
    sock = transport.get_extra_info("socket") if transport is not None else None
    if expected is None or sock is None:
        body = await resp.read()
        return len(body), hashlib.sha256(body).hexdigest()
    tls = transport.get_extra_info("ssl_object") is not None
    sha, got = hashlib.sha256(), 0
    try:
        while chunk := await resp.content.readany():
            sha.update(chunk)
            got += len(chunk)
            if got < expected:
                rate = got / max(time.monotonic() - sent_at, 1e-4)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT,
                                lowat_bytes(expected - got, rate, tls))
    except BaseException:
        resp.close()  # as resp.read() does: a half-read connection is not reused
        raise
    finally:
        if sock.fileno() >= 0:  # a connection closed meanwhile has no mark to reset
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, 1)
    return got, sha.hexdigest()
