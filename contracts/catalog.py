"""The synthetic catalog's parameters: the one format origin, OCAs, control plane, deployment
file and scenarios share (`appliances.content` builds the catalog itself from it).

Invariants: a CatalogSpec is valid once constructed (bad values raise ValueError naming the
field); `from_json(spec.to_json()) == spec`; unknown JSON fields are rejected.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
from dataclasses import dataclass

LADDER_KBPS: tuple[int, ...] = (235, 750, 1750, 3000, 5800)
SEGMENT_S = 4


@dataclass(frozen=True)
class CatalogSpec:
    """Parameters of a synthetic catalog; validated on construction."""

    seed: int = 1
    n_titles: int = 100
    duration_s: int = 120
    ladder_kbps: tuple[int, ...] = LADDER_KBPS
    segment_s: int = SEGMENT_S
    zipf_alpha: float = 0.9

    def __post_init__(self) -> None:
        object.__setattr__(self, "ladder_kbps", tuple(int(k) for k in self.ladder_kbps))
        if not 1 <= self.n_titles <= 100_000:
            raise ValueError(f"n_titles must be in 1..100000, got {self.n_titles}")
        if not 1 <= self.duration_s <= 86_400:
            raise ValueError(f"duration_s must be in 1..86400, got {self.duration_s}")
        if not 1 <= self.segment_s <= 60:
            raise ValueError(f"segment_s must be in 1..60, got {self.segment_s}")
        if not self.ladder_kbps:
            raise ValueError("ladder_kbps must not be empty")
        if list(self.ladder_kbps) != sorted(set(self.ladder_kbps)):
            raise ValueError(f"ladder_kbps must be strictly increasing, got {self.ladder_kbps}")
        if not all(16 <= k <= 100_000 for k in self.ladder_kbps):
            raise ValueError(f"ladder_kbps values must be in 16..100000, got {self.ladder_kbps}")
        if not 0.0 <= self.zipf_alpha <= 5.0:
            raise ValueError(f"zipf_alpha must be in 0..5, got {self.zipf_alpha}")

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | dict) -> "CatalogSpec":
        data = json.loads(text) if isinstance(text, str) else dict(text)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown CatalogSpec fields: {sorted(unknown)}")
        if "ladder_kbps" in data:
            data["ladder_kbps"] = tuple(data["ladder_kbps"])
        return cls(**data)

    @staticmethod
    def add_cli_args(parser: argparse.ArgumentParser) -> None:
        d = CatalogSpec()
        parser.add_argument("--catalog-seed", type=int, default=d.seed, help="catalog seed")
        parser.add_argument("--titles", type=int, default=d.n_titles, help="number of titles")
        parser.add_argument("--duration-s", type=int, default=d.duration_s,
                            help="duration of every title in seconds")
        parser.add_argument("--zipf-alpha", type=float, default=d.zipf_alpha,
                            help="Zipf exponent of title popularity")
        parser.add_argument("--ladder-kbps", type=parse_ladder, default=d.ladder_kbps,
                            help="bitrate ladder, comma-separated kbit/s (default %(default)s)")

    @classmethod
    def from_cli_args(cls, ns: argparse.Namespace) -> "CatalogSpec":
        return cls(seed=ns.catalog_seed, n_titles=ns.titles, duration_s=ns.duration_s,
                   zipf_alpha=ns.zipf_alpha, ladder_kbps=ns.ladder_kbps)


def parse_ladder(text: str) -> tuple[int, ...]:
    """"235,750,1750" -> (235, 750, 1750); ValueError names a bad rung (argparse reports it)."""
    try:
        return tuple(int(x) for x in text.split(","))
    except ValueError:
        raise ValueError(f"ladder must be comma-separated integers (kbit/s), got {text!r}") from None


def format_ladder(ladder_kbps: tuple[int, ...] | list[int]) -> str:
    """The inverse of parse_ladder."""
    return ",".join(str(int(k)) for k in ladder_kbps)
