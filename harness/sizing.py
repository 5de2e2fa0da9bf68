"""OCA capacities relative to the catalog, as real storage appliances are sized. Pure.

A capacity rule is text, so it can come from `ocalab run ... --set embedded_capacity=...`:
- `head:S` (0 < S <= 1): the bytes of the smallest popularity-ordered set of whole titles whose
  *predicted* popularity (the OCA's own fill-plan popularity, from yesterday's requests) sums to
  at least S, divided by the fill plan's headroom, so that exactly that head fits the plan;
- `F` (a number, 0 < F <= 2): F times the catalog's bytes, divided by the headroom (`1` holds
  the whole catalog, as an IXP site does);
- `mb:M` (M > 0): exactly M MiB (a cache-size sweep, where capacity should bind).

Defaults follow Open Connect: an embedded storage OCA holds the predicted head that covers 95% of
predicted demand (Netflix: "95% of our traffic is directly connected", AfPIF 2018; with a
history-based prediction a 90% head covers only 86-90% of the next day's demand in this
catalog, measured over seeds and drifts); an IXP site holds the whole catalog (DEFAULT_RULES).
Invariants: a capacity is an integer number of bytes >= 1 MiB; the plan built with it
(`appliances.fillplan.plan_oca`, same headroom) holds at least the rule's titles.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

from appliances.fillplan import head_bytes

DEFAULT_RULES = {"embedded": "head:0.95", "ixp": "1"}
CAPACITY_KEYS = {"embedded_capacity": "embedded", "ixp_capacity": "ixp"}  # --set key -> tier
SLACK_BYTES = 1 << 20  # rounding room: the plan's int(capacity * headroom) must hold the head


@dataclass(frozen=True)
class CapacityRule:
    kind: str    # "head", "catalog" or "mb"
    value: float

    def __str__(self) -> str:
        return f"{self.value:g}" if self.kind == "catalog" else f"{self.kind}:{self.value:g}"


def parse_rule(text: str, key: str = "capacity") -> CapacityRule:
    """`head:S`, `mb:M` or a catalog fraction F (see module doc); ValueError names `key` and the text."""
    t = str(text).strip()
    kind, num = next(((k, t[len(k) + 1:]) for k in ("head", "mb") if t.startswith(k + ":")), ("catalog", t))
    try:
        value = float(num)
    except ValueError:
        raise ValueError(f"{key}={text!r}: expected head:S (0 < S <= 1), mb:M (M > 0) or a "
                         f"fraction of the catalog (0 < F <= 2)") from None
    hi = {"head": 1.0, "catalog": 2.0, "mb": 1e7}[kind]
    if not (0 < value <= hi) or math.isnan(value):
        raise ValueError(f"{key}={text!r}: value must be in (0, {hi:g}]")
    return CapacityRule(kind, value)


def tier_rules(overrides: Mapping[str, str] | None = None) -> dict[str, CapacityRule]:
    """tier -> rule: DEFAULT_RULES with `--set` keys of CAPACITY_KEYS applied."""
    out = {tier: parse_rule(r, f"{tier}_capacity") for tier, r in DEFAULT_RULES.items()}
    for key, text in (overrides or {}).items():
        if key not in CAPACITY_KEYS:
            raise ValueError(f"unknown capacity key {key!r}; known: {', '.join(CAPACITY_KEYS)}")
        out[CAPACITY_KEYS[key]] = parse_rule(text, key)
    return out


def capacity_bytes(rule: CapacityRule, popularity: Mapping[str, float],
                   title_bytes: Mapping[str, int], headroom: float) -> int:
    """Bytes of store for `rule`, given the OCA's predicted popularity and each title's bytes
    (the planned segments of every rung)."""
    if not 0 < headroom <= 1:
        raise ValueError(f"headroom must be in (0, 1], got {headroom}")
    if rule.kind == "mb":
        return int(rule.value * 2**20)
    if rule.kind == "head":
        want = head_bytes(popularity, title_bytes.__getitem__, rule.value)
    else:
        want = rule.value * sum(title_bytes.values())
    return max(SLACK_BYTES, math.ceil(want / headroom) + SLACK_BYTES)
