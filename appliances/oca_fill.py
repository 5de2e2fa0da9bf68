"""Fill engine of the OCA: executes a fill plan from cache-control.

Plan JSON (contract): {"segments": [[title, kbps, index], ...], "sources": [base URLs, ranked:
peer, tier, origin], "rate_mbps": R, "window_end_unix": T, optional "window_start_unix": S}.
Invariants:
- `parse_fill_plan` is pure and rejects any malformed plan with a ValueError naming the field.
- Up to `parallel` objects (1..MAX_FILL_PARALLEL) are in flight at once; objects are started
  in plan order, each exactly once (one shared iterator). Per object the ranked sources are
  tried in order; a source that answers anything but 200 with the expected size (or whose
  bytes fail the catalog SHA-256 when verify_sha is on) is skipped. Bytes stream into a store
  temp file and become visible only on commit, so a crash mid-fill never exposes a partial
  object.
- The cumulative pull rate of all workers together stays <= rate_mbps (one shared byte count
  paced after every chunk; overshoot at most one chunk per worker); no object is started
  before window_start_unix or after window_end_unix (checked before each object); an object
  still in flight at window_end_unix is cut off and dropped (status `window_end`,
  `cut_at_window_end`), so no fill runs into the day.
- Counters are exact under concurrency (updated only between awaits): every plan object ends
  as exactly one of present | filled | no_room | failed, unless the window closed first;
  `bytes` = sum(bytes_by_source) = payload bytes written to store temp files per source,
  failed and no-room attempts included (the load each source's link carried);
  `by_source` = bytes of committed objects per source.
- State machine: idle -> waiting -> running -> done | window_closed; a newer plan marks the old
  status `replaced` and cancels its workers.
- A new plan replaces the running one; under the `pinned` policy its segments become the
  pinned set. Every object outcome is one JSON line in the fill log and in `status()`.
"""
from __future__ import annotations

import asyncio
import collections
import json
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Callable, TextIO

import aiohttp

from appliances.content import Catalog, ContentError, segment_path
from appliances.store import Key, Store, StoreError

MAX_PLAN_SEGMENTS = 200_000
FILL_HEADER = "X-Ocalab-Fill"  # sent with every fill pull; a source OCA answers a miss with 404
MAX_SOURCES = 8
CHUNK_BYTES = 64 * 1024
DEFAULT_FILL_PARALLEL = 4
MAX_FILL_PARALLEL = 32


def check_fill_parallel(k) -> int:
    """The number of objects in flight, validated: an int in 1..MAX_FILL_PARALLEL."""
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_FILL_PARALLEL:
        raise ValueError(f"--fill-parallel must be an integer in 1..{MAX_FILL_PARALLEL}, "
                         f"got {k!r}")
    return k


class FillSourceError(Exception):
    """A fill source that did not deliver the object (status or size)."""


@dataclass(frozen=True)
class FillPlan:
    segments: tuple[Key, ...]
    sources: tuple[str, ...]
    rate_mbps: float
    window_end_unix: float | None = None
    window_start_unix: float | None = None


def parse_fill_plan(obj, catalog: Catalog) -> FillPlan:
    """Validate a decoded JSON fill plan against the catalog."""
    if not isinstance(obj, dict):
        raise ValueError("fill plan must be a JSON object")
    unknown = set(obj) - {"segments", "sources", "rate_mbps", "window_end_unix",
                          "window_start_unix", "plan_id"}
    if unknown:
        raise ValueError(f"{len(unknown)} unknown fill plan field(s); allowed: segments, "
                         "sources, rate_mbps, window_start_unix, window_end_unix, plan_id")
    segs = obj.get("segments")
    if not isinstance(segs, list) or len(segs) > MAX_PLAN_SEGMENTS:
        raise ValueError(f"segments must be a list of at most {MAX_PLAN_SEGMENTS} items")
    keys: list[Key] = []
    seen = set()
    for i, item in enumerate(segs):
        if (not isinstance(item, list) or len(item) != 3 or not isinstance(item[0], str)
                or not all(isinstance(x, int) and not isinstance(x, bool) for x in item[1:])):
            raise ValueError(f"segments[{i}] must be [title, kbps, index]")
        key = (item[0], item[1], item[2])
        try:
            catalog.check_segment(*key)
        except ContentError:  # its message quotes the client's value: name the item instead
            raise ValueError(f"segments[{i}] is not a segment of the catalog") from None
        if key not in seen:
            seen.add(key)
            keys.append(key)
    sources = obj.get("sources")
    if (not isinstance(sources, list) or not 1 <= len(sources) <= MAX_SOURCES
            or not all(isinstance(s, str) and _valid_source(s) for s in sources)):
        raise ValueError(f"sources must be a list of 1..{MAX_SOURCES} http(s) base URLs "
                         "(host, optional port, optional path; no query)")
    rate = obj.get("rate_mbps", 100)
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 < rate <= 100_000:
        raise ValueError("rate_mbps must be a number in (0, 100000]")
    windows = []
    for name in ("window_end_unix", "window_start_unix"):
        v = obj.get(name)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))
                              or not 0 <= v < 2**40):
            raise ValueError(f"{name} must be a finite unix time number")
        windows.append(None if v is None else float(v))
    return FillPlan(tuple(keys), tuple(s.rstrip("/") for s in sources), float(rate), *windows)


def _valid_source(url: str) -> bool:
    """An http(s) base URL aiohttp can fetch: visible ASCII, a host, a valid port, no query."""
    if len(url) > 2048 or not url.isascii() or any(not 0x21 <= ord(c) <= 0x7E for c in url):
        return False
    try:
        u = urllib.parse.urlsplit(url)
        port = u.port  # ValueError when out of range or not a number
    except ValueError:
        return False
    del port
    return (u.scheme in ("http", "https") and bool(u.hostname) and not u.query
            and not u.fragment and u.username is None)


@dataclass
class FillStatus:
    plan_id: int = 0
    state: str = "idle"  # idle | waiting | running | done | window_closed | replaced
    total: int = 0
    filled: int = 0
    present: int = 0
    failed: int = 0
    no_room: int = 0
    cut_at_window_end: int = 0  # objects in flight when the window closed: dropped, not stored
    bytes: int = 0
    current: list | None = None  # the object started last, while any is in flight
    current_bytes: int = 0  # bytes received so far of the objects in flight
    in_flight: list = field(default_factory=list)  # [title, kbps, index] of each object in flight
    by_source: dict = field(default_factory=dict)  # source URL -> bytes of committed objects
    bytes_by_source: dict = field(default_factory=dict)  # source URL -> payload bytes pulled
    recent: collections.deque = field(default_factory=lambda: collections.deque(maxlen=200))

    def to_dict(self) -> dict:
        return {"plan_id": self.plan_id, "state": self.state, "total": self.total,
                "filled": self.filled, "present": self.present, "failed": self.failed,
                "no_room": self.no_room, "cut_at_window_end": self.cut_at_window_end,
                "bytes": self.bytes, "current": self.current,
                "current_bytes": self.current_bytes, "in_flight": list(self.in_flight),
                "by_source": dict(self.by_source),
                "bytes_by_source": dict(self.bytes_by_source), "recent": list(self.recent)}


def _remaining_s(plan: FillPlan) -> float | None:
    """Seconds left in the fill window (None: no end). An object still in flight when the window
    closes is cut off and dropped (its temp file removed): fill never runs into the day."""
    return None if plan.window_end_unix is None else max(0.0, plan.window_end_unix - time.time())


class Filler:
    def __init__(self, store: Store, catalog: Catalog, session: Callable[[], aiohttp.ClientSession],
                 sign_query: Callable[[str], str | None], log: TextIO | None,
                 verify_sha: bool = True, parallel: int = DEFAULT_FILL_PARALLEL) -> None:
        self.store, self.catalog, self.session = store, catalog, session
        self.sign_query, self.log, self.verify_sha = sign_query, log, verify_sha
        self.parallel = check_fill_parallel(parallel)
        self.status = FillStatus()
        self._task: asyncio.Task | None = None
        self.fills_total = 0

    def submit(self, plan: FillPlan) -> int:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            self.status.state = "replaced"
        if self.store.policy.kind == "pinned":
            self.store.set_pins(plan.segments)
        self.status = FillStatus(plan_id=self.status.plan_id + 1, state="waiting",
                                 total=len(plan.segments))
        self._task = asyncio.create_task(self._run(plan, self.status))
        return self.status.plan_id

    async def close(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def _record(self, st: FillStatus, **rec) -> None:
        rec.update(ts=round(time.time(), 6), plan_id=st.plan_id)
        st.recent.append(rec)
        if self.log is not None:
            self.log.write(json.dumps(rec, sort_keys=True) + "\n")
            self.log.flush()

    async def _run(self, plan: FillPlan, st: FillStatus) -> None:
        if plan.window_start_unix is not None and plan.window_start_unix > time.time():
            await asyncio.sleep(plan.window_start_unix - time.time())
        st.state = "running"
        t_start = time.monotonic()
        keys = iter(plan.segments)  # shared: each object is taken by one worker, in plan order
        n_workers = min(self.parallel, max(1, len(plan.segments)))
        async with asyncio.TaskGroup() as tg:  # a failing worker cancels its siblings
            workers = [tg.create_task(self._worker(keys, plan, st, t_start))
                       for _ in range(n_workers)]
        st.state = "window_closed" if any(w.result() for w in workers) else "done"
        st.current = None

    async def _worker(self, keys, plan: FillPlan, st: FillStatus, t_start: float) -> bool:
        """Fill the next plan object until none is left; True if it stopped at the window end."""
        for key in keys:
            if plan.window_end_unix is not None and time.time() > plan.window_end_unix:
                return True
            if key in self.store:
                st.present += 1
                self._record(st, event="fill", title=key[0], kbps=key[1], index=key[2],
                             status="present", source=None, bytes=0)
                continue
            st.current = list(key)
            st.in_flight.append(list(key))
            try:
                async with asyncio.timeout(_remaining_s(plan)):  # the window is a hard end
                    await self._fill_one(key, plan, st, t_start)
            except TimeoutError:
                st.cut_at_window_end += 1
                self._record(st, event="fill", title=key[0], kbps=key[1], index=key[2], source=None,
                             bytes=0, status="window_end")
                return True
            finally:
                st.in_flight.remove(list(key))
        return False

    async def _fill_one(self, key: Key, plan: FillPlan, st: FillStatus, t_start: float) -> None:
        want_size = self.catalog.segment_size(*key)
        want_sha = self.catalog.segment_sha256(*key) if self.verify_sha else None
        errors = []
        for source in plan.sources:
            t0 = time.monotonic()
            try:
                obj = await self._pull(source, key, want_size, want_sha, plan, st, t_start)
            except (aiohttp.ClientError, asyncio.TimeoutError, FillSourceError, StoreError,
                    OSError) as exc:
                errors.append(f"{source}: {type(exc).__name__}: {exc}"[:200])
                continue
            rec = dict(event="fill", title=key[0], kbps=key[1], index=key[2], source=source,
                       bytes=want_size, duration_ms=round((time.monotonic() - t0) * 1000, 3),
                       attempts=len(errors) + 1, errors=errors)
            if obj is None:
                st.no_room += 1
                self._record(st, status="no_room", **rec)
            else:
                st.filled += 1
                self.fills_total += 1
                st.by_source[source] = st.by_source.get(source, 0) + want_size
                self._record(st, status="ok", **rec)
            return
        st.failed += 1
        self._record(st, event="fill", title=key[0], kbps=key[1], index=key[2], source=None,
                     bytes=0, status="failed", errors=errors)

    async def _pull(self, source: str, key: Key, want_size: int, want_sha: str | None,
                    plan: FillPlan, st: FillStatus, t_start: float):
        path = segment_path(*key)
        query = self.sign_query(path)
        url = source + path + (f"?{query}" if query else "")
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=5, sock_read=15)
        async with self.session().get(url, allow_redirects=False, timeout=timeout,
                                      headers={FILL_HEADER: "1"}) as r:
            if r.status != 200:
                raise FillSourceError(f"status {r.status}")
            if r.content_length is not None and r.content_length != want_size:
                raise FillSourceError(f"size {r.content_length} != catalog {want_size}")
            writer = self.store.open_writer(key, want_size, want_sha, pinned=True)
            received = 0
            try:
                async for chunk in r.content.iter_chunked(CHUNK_BYTES):
                    writer.write(chunk)
                    received += len(chunk)
                    self._count_bytes(st, source, len(chunk))
                    ahead_s = st.bytes * 8 / (plan.rate_mbps * 1e6) - (time.monotonic() - t_start)
                    if ahead_s > 0:
                        await asyncio.sleep(ahead_s)
                return writer.commit()
            finally:
                st.current_bytes -= received  # this object is no longer in flight
                writer.abort()  # no-op after commit; removes the temp file otherwise

    @staticmethod
    def _count_bytes(st: FillStatus, source: str, n_bytes: int) -> None:
        """Tally payload bytes received from `source`; keeps bytes == sum(bytes_by_source)."""
        st.bytes += n_bytes
        st.current_bytes += n_bytes
        st.bytes_by_source[source] = st.bytes_by_source.get(source, 0) + n_bytes
