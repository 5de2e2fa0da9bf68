"""One object being pulled through an OCA from upstream, shared by every request that waits on it.

Cut-through: a request for an object in flight is answered at once and sent the bytes as they
arrive from upstream, instead of after the whole pull (store-and-forward). So a miss costs about
one upstream round trip to the first byte, not the whole object's transfer time.

Invariants:
- `chunks()` yields the object's bytes in order, each byte once, but never the last
  HOLDBACK_BYTES before `finish(ok=True)`: the pull is verified (size, SHA-256) and stored first.
  So no client ever receives a complete body that did not verify.
- After `finish(ok=False)` (upstream error, short or corrupt object) `chunks()` raises EOFError
  once it has sent what it may: the connection is cut short and the client sees a short body.
- Bytes are appended only by the single pulling task; readers never block the pull.
"""
from __future__ import annotations

import asyncio
from typing import AsyncIterator

HOLDBACK_BYTES = 64 * 1024
CHUNK_BYTES = 256 * 1024


class Inflight:
    def __init__(self, size_bytes: int) -> None:
        if size_bytes < 0:
            raise ValueError("size_bytes must be >= 0")
        self.size_bytes = size_bytes
        self.buf = bytearray()
        self.done = False
        self.ok = False
        self.task: asyncio.Task | None = None  # the pull; its result is what store-and-forward waits for
        self._grew = asyncio.Event()

    def _wake(self) -> None:
        self._grew.set()
        self._grew = asyncio.Event()

    def append(self, data: bytes) -> None:
        if self.done:
            raise RuntimeError("append after finish")
        self.buf += data
        self._wake()

    def finish(self, ok: bool) -> None:
        self.done, self.ok = True, ok and len(self.buf) == self.size_bytes
        self._wake()

    def _sendable(self) -> int:
        """How many bytes readers may have now."""
        if self.done and self.ok:
            return self.size_bytes
        return min(len(self.buf), self.size_bytes - HOLDBACK_BYTES)

    async def chunks(self) -> AsyncIterator[bytes]:
        sent = 0
        while sent < self.size_bytes:
            limit = self._sendable()
            if sent < limit:
                end = min(limit, sent + CHUNK_BYTES)
                yield bytes(self.buf[sent:end])
                sent = end
                continue
            if self.done:  # finished, not ok, and everything allowed is sent
                raise EOFError(f"upstream pull failed after {len(self.buf)} of {self.size_bytes} bytes")
            grew = self._grew
            await grew.wait()
