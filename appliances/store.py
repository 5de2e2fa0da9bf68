"""Bounded segment store: disk objects + a small in-memory hot set.

Invariants:
- An object is visible (indexed, served) only after its bytes are complete and verified:
  writers fill a temp file under `tmp/`, then `os.replace` it to `objects/<title>/<kbps>/
  <index>.<sha256>`; a crash leaves at most a temp file, which startup deletes.
- The file name carries the SHA-256 of its bytes, so the ETag survives restarts unhashed.
- Sum of indexed object sizes <= capacity_bytes; sum of hot-set bytes <= mem_bytes.
- Eviction policy (pure, `EvictionPolicy`): `lru` evicts least recently used; `pinned`
  never evicts pinned objects (the fill plan's, i.e. the predicted-popular set) and evicts
  LRU among the rest; an object that cannot fit without evicting pinned ones is refused.
- Pins are in-memory: after a restart they come back with the next fill plan.
"""
from __future__ import annotations

import hashlib
import os
import re
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

Key = tuple[str, int, int]
EVICTION_POLICIES = ("lru", "pinned")
_NAME_RE = re.compile(r"^([0-9]{1,6})\.([0-9a-f]{64})$")
_TITLE_RE = re.compile(r"^t[0-9]{4,6}$")


class EvictionPolicy:
    """Pure bookkeeping of sizes, recency and pins; decides victims."""

    def __init__(self, kind: str = "lru") -> None:
        if kind not in EVICTION_POLICIES:
            raise ValueError(f"eviction policy must be one of {EVICTION_POLICIES}, got {kind!r}")
        self.kind = kind
        self._entries: OrderedDict[Key, int] = OrderedDict()  # LRU first
        self._pinned: set[Key] = set()
        self.used_bytes = 0

    def __contains__(self, key: Key) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def keys(self) -> list[Key]:
        return list(self._entries)

    def add(self, key: Key, size_bytes: int) -> None:
        if key in self._entries:
            self.remove(key)
        self._entries[key] = size_bytes
        self.used_bytes += size_bytes

    def touch(self, key: Key) -> None:
        if key in self._entries:
            self._entries.move_to_end(key)

    def remove(self, key: Key) -> None:
        size = self._entries.pop(key, None)
        if size is not None:
            self.used_bytes -= size

    def pin(self, key: Key) -> None:
        self._pinned.add(key)

    def set_pins(self, keys) -> None:
        self._pinned = set(keys)

    def is_pinned(self, key: Key) -> bool:
        return key in self._pinned

    def victims(self, need_bytes: int, capacity_bytes: int,
                incoming: Key | None = None) -> list[Key] | None:
        """Keys to evict so that need_bytes more fit; None if impossible under the policy."""
        if need_bytes > capacity_bytes:
            return None
        free = capacity_bytes - self.used_bytes
        if incoming is not None and incoming in self._entries:
            free += self._entries[incoming]
        out: list[Key] = []
        if free >= need_bytes:
            return out
        protect = self.kind == "pinned"
        for key, size in self._entries.items():
            if key == incoming or (protect and key in self._pinned):
                continue
            out.append(key)
            free += size
            if free >= need_bytes:
                return out
        return None


@dataclass(frozen=True)
class StoredObject:
    key: Key
    size_bytes: int
    sha256: str
    path: Path

    @property
    def etag(self) -> str:
        return etag_for(self.sha256)


def etag_for(sha256_hex: str) -> str:
    """The strong ETag of an object with this SHA-256 (the same before and after it is stored)."""
    return f'"{sha256_hex[:32]}"'


class StoreError(Exception):
    """A write that failed verification (size or SHA-256 mismatch)."""


class ObjectWriter:
    """Streams one object into a temp file; commit() verifies and publishes atomically."""

    def __init__(self, store: "Store", key: Key, expected_size: int | None,
                 expected_sha256: str | None, pinned: bool) -> None:
        self.store, self.key, self.pinned = store, key, pinned
        self.expected_size, self.expected_sha256 = expected_size, expected_sha256
        t, k, i = key
        self.tmp_path = store.tmp_dir / f"{t}_{k}_{i}.{uuid.uuid4().hex}.part"
        self._f = open(self.tmp_path, "wb")
        self._h = hashlib.sha256()
        self.bytes_written = 0
        self.done = False

    def write(self, chunk: bytes) -> None:
        if self.expected_size is not None and self.bytes_written + len(chunk) > self.expected_size:
            self.abort()
            raise StoreError(f"object {self.key} longer than expected {self.expected_size} bytes")
        self._f.write(chunk)
        self._h.update(chunk)
        self.bytes_written += len(chunk)

    def abort(self) -> None:
        if not self.done:
            self.done = True
            self._f.close()
            self.tmp_path.unlink(missing_ok=True)

    def commit(self) -> StoredObject | None:
        """Verify and publish; None if the policy refuses it (no room without pinned victims)."""
        if self.done:
            raise StoreError(f"writer for {self.key} already finished")
        sha = self._h.hexdigest()
        if self.expected_size is not None and self.bytes_written != self.expected_size:
            self.abort()
            raise StoreError(f"object {self.key}: got {self.bytes_written} bytes, "
                             f"expected {self.expected_size}")
        if self.expected_sha256 is not None and sha != self.expected_sha256:
            self.abort()
            raise StoreError(f"object {self.key}: SHA-256 mismatch")
        if self.store.fsync:
            self._f.flush()
            os.fsync(self._f.fileno())
        self._f.close()
        self.done = True
        return self.store._publish(self.key, self.tmp_path, self.bytes_written, sha, self.pinned)


class Store:
    """Disk store with capacity bound, eviction policy and a memory hot set (single-threaded)."""

    def __init__(self, root: Path | str, capacity_bytes: int, mem_bytes: int = 0,
                 eviction: str = "lru", fsync: bool = False,
                 expected_size: Callable[[Key], int | None] | None = None) -> None:
        if capacity_bytes <= 0:
            raise ValueError(f"capacity_bytes must be > 0, got {capacity_bytes}")
        if mem_bytes < 0:
            raise ValueError(f"mem_bytes must be >= 0, got {mem_bytes}")
        self.root = Path(root)
        self.capacity_bytes, self.mem_bytes, self.fsync = capacity_bytes, mem_bytes, fsync
        self.policy = EvictionPolicy(eviction)
        self.objects_dir, self.tmp_dir = self.root / "objects", self.root / "tmp"
        self.objects_dir.mkdir(parents=True, exist_ok=True)
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        self._index: dict[Key, StoredObject] = {}
        self._hot: OrderedDict[Key, bytes] = OrderedDict()
        self._hot_bytes = 0
        self._hits: dict[Key, int] = {}
        self.evictions = 0
        self.removed_partials = self._recover(expected_size)

    # --- startup -------------------------------------------------------------
    def _recover(self, expected_size) -> int:
        """Delete temp files; index complete objects (oldest first), dropping misfits."""
        removed = 0
        for p in self.tmp_dir.iterdir():
            if p.is_file():
                p.unlink()
                removed += 1
        found, seen = [], set()
        for p in self.objects_dir.glob("*/*/*"):
            m = _NAME_RE.match(p.name)
            key = None
            if m and _TITLE_RE.match(p.parent.parent.name) and p.parent.name.isdigit():
                key = (p.parent.parent.name, int(p.parent.name), int(m.group(1)))
            st = p.stat()
            want = expected_size(key) if (key and expected_size) else None
            if key is None or (expected_size and want != st.st_size) or key in seen:
                p.unlink()
                continue
            seen.add(key)
            found.append((st.st_mtime, key, st.st_size, m.group(2), p))
        for _, key, size, sha, p in sorted(found):
            if self.policy.victims(size, self.capacity_bytes) != []:
                p.unlink()
                continue
            self._index[key] = StoredObject(key, size, sha, p)
            self.policy.add(key, size)
        return removed

    # --- reads ---------------------------------------------------------------
    def lookup(self, key: Key, touch: bool = True) -> StoredObject | None:
        obj = self._index.get(key)
        if obj is not None and touch:
            self.policy.touch(key)
        return obj

    def __contains__(self, key: Key) -> bool:
        return key in self._index

    def hot_bytes(self, obj: StoredObject) -> bytes | None:
        """Bytes from the hot set; promotes an object on its second hit if it fits."""
        data = self._hot.get(obj.key)
        if data is not None:
            self._hot.move_to_end(obj.key)
            return data
        if obj.size_bytes > self.mem_bytes:
            return None
        hits = self._hits.get(obj.key, 0) + 1
        self._hits[obj.key] = hits
        if hits < 2:
            return None
        data = obj.path.read_bytes()
        while self._hot and self._hot_bytes + len(data) > self.mem_bytes:
            _, old = self._hot.popitem(last=False)
            self._hot_bytes -= len(old)
        self._hot[obj.key] = data
        self._hot_bytes += len(data)
        return data

    # --- writes --------------------------------------------------------------
    def open_writer(self, key: Key, expected_size: int | None = None,
                    expected_sha256: str | None = None, pinned: bool = False) -> ObjectWriter:
        return ObjectWriter(self, key, expected_size, expected_sha256, pinned)

    def put(self, key: Key, data: bytes, pinned: bool = False,
            expected_sha256: str | None = None) -> StoredObject | None:
        w = self.open_writer(key, len(data), expected_sha256, pinned)
        w.write(data)
        return w.commit()

    def _publish(self, key: Key, tmp: Path, size: int, sha: str, pinned: bool):
        if pinned:
            self.policy.pin(key)
        victims = self.policy.victims(size, self.capacity_bytes, key)
        if victims is None:
            tmp.unlink(missing_ok=True)
            return None
        for v in victims:
            self.remove(v)
            self.evictions += 1
        title, kbps, index = key
        final = self.objects_dir / title / str(kbps) / f"{index}.{sha}"
        final.parent.mkdir(parents=True, exist_ok=True)
        old = self._index.get(key)
        os.replace(tmp, final)
        if old is not None and old.path != final:
            old.path.unlink(missing_ok=True)
        self._drop_hot(key)
        obj = StoredObject(key, size, sha, final)
        self._index[key] = obj
        self.policy.add(key, size)
        return obj

    def remove(self, key: Key) -> None:
        obj = self._index.pop(key, None)
        self.policy.remove(key)
        self._drop_hot(key)
        self._hits.pop(key, None)
        if obj is not None:
            obj.path.unlink(missing_ok=True)

    def _drop_hot(self, key: Key) -> None:
        data = self._hot.pop(key, None)
        if data is not None:
            self._hot_bytes -= len(data)

    def set_pins(self, keys) -> None:
        self.policy.set_pins(keys)

    # --- stats ---------------------------------------------------------------
    @property
    def used_bytes(self) -> int:
        return self.policy.used_bytes

    def titles(self) -> list[str]:
        return sorted({k[0] for k in self._index})

    def keys(self) -> list[Key]:
        return list(self._index)

    def stats(self) -> dict:
        return {"capacity_bytes": self.capacity_bytes, "used_bytes": self.used_bytes,
                "objects": len(self._index), "hot_bytes": self._hot_bytes,
                "mem_bytes": self.mem_bytes, "evictions": self.evictions,
                "eviction": self.policy.kind}
