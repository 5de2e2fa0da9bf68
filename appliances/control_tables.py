"""Per-title segment tables (sizes and SHA-256) for manifests: cached, deduplicated, warmed.

Hashing a title means generating its bytes (CPU-heavy: ~0.5 s per default title), so:
- one computation per (title, n) at a time: concurrent requests await the same future;
- a full-title table answers every shorter request by slicing;
- background warming (most popular titles first, in a worker thread) pauses while viewer
  requests are being computed, and stops promptly when asked.
"""
from __future__ import annotations

import asyncio
import threading
from typing import Callable

from appliances.content import Catalog

Table = dict[str, list]


class _Stopped(Exception):
    pass


def segment_table(catalog: Catalog, title: str, n_segments: int,
                  before_each: Callable[[], None] | None = None) -> Table:
    """{str(kbps): [[size_bytes, sha256], ...]} for the first n_segments of title."""
    table: Table = {}
    for k in catalog.rungs_of(title):
        rows = []
        for i in range(n_segments):
            if before_each is not None:
                before_each()
            rows.append([catalog.segment_size(title, k, i), catalog.segment_sha256(title, k, i)])
        table[str(k)] = rows
    return table


class SegmentTables:
    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self._done: dict[tuple[str, int], Table] = {}
        self._inflight: dict[tuple[str, int], asyncio.Future] = {}
        self._demand = 0  # viewer-driven computations running (event-loop thread only)
        self._idle = threading.Event()
        self._idle.set()
        self._stop = threading.Event()
        self.warmed_titles = 0
        self.warm_target = 0

    def _cached(self, title: str, n: int) -> Table | None:
        full = self._done.get((title, self.catalog.segment_count(title)))
        if full is not None:
            return {k: v[:n] for k, v in full.items()}
        return self._done.get((title, n))

    async def get(self, title: str, n: int) -> Table:
        """The table of the first n segments of title (computed at most once)."""
        table = self._cached(title, n)
        if table is not None:
            return table
        key = (title, n)
        fut = self._inflight.get(key)
        if fut is None:
            fut = asyncio.ensure_future(self._compute(title, n))
            self._inflight[key] = fut
            fut.add_done_callback(lambda _f: self._inflight.pop(key, None))
        return await asyncio.shield(fut)

    async def _compute(self, title: str, n: int) -> Table:
        self._demand += 1
        self._idle.clear()
        try:
            table = await asyncio.to_thread(segment_table, self.catalog, title, n)
        finally:
            self._demand -= 1
            if self._demand == 0:
                self._idle.set()
        self._done[(title, n)] = table
        return table

    def _yield(self) -> None:
        while not self._idle.wait(timeout=0.2):
            if self._stop.is_set():
                raise _Stopped
        if self._stop.is_set():
            raise _Stopped

    def warm(self, n_titles: int) -> int:
        """Blocking (run in a thread): precompute the n most popular titles; returns done."""
        pop = self.catalog.popularity()
        order = sorted(pop, key=lambda t: (-pop[t], t))[:n_titles]
        self.warm_target = len(order)
        for title in order:
            total = self.catalog.segment_count(title)
            if (title, total) not in self._done:
                try:
                    self._done[(title, total)] = segment_table(self.catalog, title, total,
                                                               self._yield)
                except _Stopped:
                    break
            self.warmed_titles += 1
        return self.warmed_titles

    def stop(self) -> None:
        self._stop.set()
