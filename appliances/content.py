"""Synthetic video catalog: titles, bitrate ladder, deterministic segment bytes.

Invariants:
- Every value (sizes, bytes, SHA-256, popularity) is a pure function of the CatalogSpec,
  so origin, OCAs, players and tests agree without exchanging data.
- Segment path is `/v/<title>/<kbps>/<index>`; titles are `t0000`, `t0001`, ...; index from 0.
- Every segment lasts `segment_s` seconds; a title has ceil(duration_s / segment_s) segments.
- Mean segment size is kbps*1000*segment_s/8 bytes; per-segment size varies within +-30%
  (a scene-complexity term shared by all rungs of one index, plus a small per-rung term).
"""
from __future__ import annotations

import functools
import hashlib
import math
import random
import re

from contracts.catalog import LADDER_KBPS, SEGMENT_S, CatalogSpec  # noqa: F401 (re-exported)

SCENE_VARIATION = 0.25  # shared by all rungs of one segment index
RUNG_VARIATION = 0.05  # independent per (kbps, index); total stays within +-30%

_PATH_RE = re.compile(r"^/v/(t[0-9]{4,6})/([0-9]{1,6})/([0-9]{1,6})$")


class ContentError(ValueError):
    """A path, title, rung or index that is not a valid segment of the catalog."""


def _unit(*parts: object) -> float:
    """Deterministic float in [0, 1) from the parts (SHA-256 based)."""
    h = hashlib.sha256("|".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(h[:8], "big") / 2.0**64


class Catalog:
    """The catalog of one CatalogSpec. Thread-safe for reads (caches are pure)."""

    def __init__(self, spec: CatalogSpec | None = None) -> None:
        self.spec = spec or CatalogSpec()
        self._titles = [f"t{i:04d}" for i in range(self.spec.n_titles)]
        self._title_set = frozenset(self._titles)
        self._ladder_set = frozenset(self.spec.ladder_kbps)
        self._n_segments = math.ceil(self.spec.duration_s / self.spec.segment_s)
        self._sha_cache: dict[tuple[str, int, int], str] = {}

    def titles(self) -> list[str]:
        return list(self._titles)

    def segment_count(self, title: str) -> int:
        self._check_title(title)
        return self._n_segments

    def ladder_of(self, title: str) -> tuple[int, ...]:
        """The rungs of one title (here every title has the spec's ladder)."""
        self._check_title(title)
        return self.spec.ladder_kbps

    def rungs_of(self, title: str) -> tuple[int, ...]:
        """Every rung id served for one title: the ladder, plus an audio rung where there is one."""
        return self.ladder_of(title)

    def _has_rung(self, title: str, kbps: int) -> bool:
        return kbps in self._ladder_set

    def _check_title(self, title: str) -> None:
        if title not in self._title_set:
            raise ContentError(f"unknown title {title!r}")

    def check_segment(self, title: str, kbps: int, index: int) -> None:
        """Raise ContentError unless (title, kbps, index) is a segment of this catalog."""
        self._check_title(title)
        if not self._has_rung(title, kbps):
            raise ContentError(f"bitrate {kbps} kbps is not a rung of {title}")
        if not 0 <= index < self._n_segments:
            raise ContentError(f"segment index {index} out of range 0..{self._n_segments - 1}")

    def segment_size(self, title: str, kbps: int, index: int) -> int:
        """Size in bytes; mean kbps*1000*segment_s/8, within +-30% of it."""
        self.check_segment(title, kbps, index)
        mean_bytes = kbps * 1000 * self.spec.segment_s / 8
        scene = 2 * _unit(self.spec.seed, "scene", title, index) - 1
        rung = 2 * _unit(self.spec.seed, "rung", title, kbps, index) - 1
        return max(1, int(mean_bytes * (1 + SCENE_VARIATION * scene + RUNG_VARIATION * rung)))

    def title_bytes(self, title: str, n_segments: int) -> int:
        """Bytes of the title's first n_segments at every rung: a title as a cache holds it
        when it was filled (or asked for) at every rung."""
        return sum(self.segment_size(title, k, i) for k in self.spec.ladder_kbps
                   for i in range(n_segments))

    def segment_bytes(self, title: str, kbps: int, index: int) -> bytes:
        """Deterministic pseudo-random payload (Mersenne Twister seeded by a SHA-256)."""
        size = self.segment_size(title, kbps, index)
        seed = hashlib.sha256(f"{self.spec.seed}|bytes|{title}|{kbps}|{index}".encode()).digest()
        return random.Random(int.from_bytes(seed, "big")).randbytes(size)

    def segment_sha256(self, title: str, kbps: int, index: int) -> str:
        key = (title, kbps, index)
        sha = self._sha_cache.get(key)
        if sha is None:
            sha = hashlib.sha256(self.segment_bytes(title, kbps, index)).hexdigest()
            self._sha_cache[key] = sha
        return sha

    def title_manifest(self, title: str) -> dict:
        """{"title", "segment_s", "ladder_kbps", "segments": {kbps: [[size, sha256], ...]}}.

        The first call for a title generates and hashes all its segments (~0.3 s for the
        default ladder and 120 s); results are cached.
        """
        m = _title_manifest_cached(self, title)
        segments = {k: [list(pair) for pair in v] for k, v in m["segments"].items()}
        return {**m, "ladder_kbps": list(m["ladder_kbps"]), "segments": segments}

    def popularity(self) -> dict[str, float]:
        """Seeded Zipf: a seeded permutation of titles gets probabilities ~ 1/rank**alpha."""
        return dict(_popularity_cached(self))

    def parse_path(self, path: str) -> tuple[str, int, int]:
        """Map `/v/<title>/<kbps>/<index>` to (title, kbps, index) or raise ContentError.

        Strict: no query, no percent-encoding, no leading zeros, no dot segments.
        """
        if not isinstance(path, str):
            raise ContentError("path must be a string")
        m = _PATH_RE.match(path)
        if m is None:
            raise ContentError("not a segment path of the form /v/<title>/<kbps>/<index>")
        title, kbps_s, index_s = m.groups()
        for s in (kbps_s, index_s):
            if len(s) > 1 and s[0] == "0":
                raise ContentError("leading zeros are not allowed in segment paths")
        kbps, index = int(kbps_s), int(index_s)
        self.check_segment(title, kbps, index)
        return title, kbps, index

    def __hash__(self) -> int:
        return hash(self.spec)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Catalog) and other.spec == self.spec


def segment_path(title: str, kbps: int, index: int) -> str:
    return f"/v/{title}/{kbps}/{index}"


@functools.lru_cache(maxsize=4096)
def _title_manifest_cached(cat: Catalog, title: str) -> dict:
    cat._check_title(title)
    segments = {}
    for kbps in cat.ladder_of(title):
        segments[kbps] = [[cat.segment_size(title, kbps, i), cat.segment_sha256(title, kbps, i)]
                          for i in range(cat._n_segments)]
    return {"title": title, "segment_s": cat.spec.segment_s,
            "ladder_kbps": list(cat.ladder_of(title)), "segments": segments}


@functools.lru_cache(maxsize=64)
def _popularity_cached(cat: Catalog) -> tuple[tuple[str, float], ...]:
    order = list(cat._titles)
    random.Random(f"{cat.spec.seed}|popularity").shuffle(order)
    weights = [1.0 / (rank ** cat.spec.zipf_alpha) for rank in range(1, len(order) + 1)]
    total = sum(weights)
    return tuple((t, w / total) for t, w in zip(order, weights))
