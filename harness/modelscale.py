"""Scaling the world model down to fit this machine, consistently, and saying so. Pure.

A full-size run needs >= 100 viewing sessions per arm (a sample that does not reverse between
runs), but 100 concurrent viewers at Netflix's bitrates move ~10x more bytes than two cores can
relay. So a scenario states one `ModelScale`: the bitrate divisor D and the viewer factor V
against its reference workload, and this module derives every rate and size from it:

- bitrates / D: the catalog's ladder (segment bytes follow), per-flow rates (fill, pre-position)
  and absolute store sizes (`mb:N` capacity rules);
- rates of links and servers that all viewers share x V / D (access, transit, core; an OCA's
  egress cap), so every viewer keeps the same share of each bottleneck as in the reference, and
  the links' drop-tail queues in packets x V / D, so a full queue holds the same time (a 1000
  packet queue at 8.5 Mbit/s would hold 1.4 s, not the reference's 240 ms at 50 Mbit/s);
- session counts x V (viewers per host, an OCA's stream limit);
- TCP's initial window / D on every host's routes (10 segments -> 1 at D = 10), so that slow start
  takes the world's number of round trips to a chunk, and a new flow's first burst holds the
  world's time on its link (IW10 at a tenth of the rate would be ten times longer);
- times and delays unchanged (segment length, windows, kill times, every link's RTT).

Invariants: D >= 1 and V >= 1; `ModelScale()` (D = V = 1) changes nothing; ratios between
arms (bytes, shares, hit ratios) are unchanged by D, and bitrates, Mbit/s and MB read in
model units (x D for the world's). What does not scale: the MSS stays real (1448 bytes),
so congestion avoidance adds one MSS per round trip, D times more relative to the rates, and a
window cannot shrink below a packet or two: a flow whose share of a link is under two packets per
round trip at / D (an embedded path: 1.7 Mbit/s x 6 ms = 1.3 KB) queues where the world's would
not; and per-request costs (RTT, handshakes) weigh more in a chunk's download time. The manifest's
`model_scale` records the scale and every derived value.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Mapping

from contracts.catalog import LADDER_KBPS

# metro's link rates that all sessions share, and its queue (topologies.catalog.MetroParams fields)
SHARED_LINK_FIELDS = ("access_bw_mbps", "transit_bw_mbps", "core_bw_mbps")
QUEUE_FIELD = "queue_pkts"
MIN_RUNG_KBPS = 16  # contracts.catalog's lowest legal rung
KERNEL_INITCWND = 10  # Linux's TCP_INIT_CWND (segments), RFC 6928


@dataclass(frozen=True)
class ModelScale:
    """D (`bitrate_divisor`) and V (`viewer_factor`); see the module doc."""
    bitrate_divisor: float = 1.0
    viewer_factor: float = 1.0

    def __post_init__(self) -> None:
        for name in ("bitrate_divisor", "viewer_factor"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 1:
                raise ValueError(f"model scale {name} must be a number >= 1, got {v!r}")

    def ladder(self, ladder_kbps) -> tuple[int, ...]:
        """Every rung / D, rounded; strictly increasing (a collapse is an error, not a merge)."""
        out = tuple(max(MIN_RUNG_KBPS, round(k / self.bitrate_divisor)) for k in ladder_kbps)
        if list(out) != sorted(set(out)):
            raise ValueError(f"ladder {tuple(ladder_kbps)} / {self.bitrate_divisor:g} collapses to {out}")
        return out

    def flow_mbps(self, mbps: float) -> float:
        """A rate one flow or one server moves for a fixed set of bytes (fill): / D."""
        return round(mbps / self.bitrate_divisor, 4)

    def shared_mbps(self, mbps: float) -> float:
        """A rate every viewer shares (a link, an OCA's egress cap): x V / D."""
        return round(mbps * self.viewer_factor / self.bitrate_divisor, 4)

    def sessions(self, n: int) -> int:
        """A count of sessions or streams: x V, at least 1."""
        return max(1, round(n * self.viewer_factor))

    def store_rule(self, rule: str) -> str:
        """A capacity rule: `mb:M` -> `mb:M/D`; relative rules (`head:S`, a catalog fraction)
        already follow the catalog's bytes and stay as they are."""
        rule = str(rule)
        if not rule.startswith("mb:"):
            return rule
        return f"mb:{float(rule[3:]) / self.bitrate_divisor:g}"

    def initcwnd(self, segments: int = KERNEL_INITCWND) -> int | None:
        """TCP's initial window / D, at least 1; None (the kernel's) without scaling."""
        return None if self.bitrate_divisor == 1 else max(1, round(segments / self.bitrate_divisor))

    def queue_pkts(self, pkts: int) -> int:
        """A drop-tail queue on a link whose rate is x V / D: the same x V / D, so it holds the
        same time; at least 10 packets."""
        return max(10, round(pkts * self.viewer_factor / self.bitrate_divisor))

    def plan_overrides(self, defaults: Mapping[str, float], explicit: Mapping[str, str]) -> dict[str, str]:
        """`--set` overrides for the plan: each shared link rate of `defaults` x V / D and the
        queue likewise, unless the user set it (`explicit` wins: a value given on the command line
        is the emulated one)."""
        if self == ModelScale():
            return dict(explicit)
        out = {k: f"{self.shared_mbps(float(defaults[k])):g}" for k in SHARED_LINK_FIELDS
               if k in defaults and k not in explicit}
        if QUEUE_FIELD in defaults and QUEUE_FIELD not in explicit:
            out[QUEUE_FIELD] = str(self.queue_pkts(int(defaults[QUEUE_FIELD])))
        return {**out, **explicit}

    def manifest(self, derived: Mapping[str, object] | None = None) -> dict:
        return {**asdict(self), "derived": dict(derived or {})}


def scale_catalog(catalog: Mapping, scale: ModelScale) -> dict:
    """A scenario's catalog dict with its ladder / D (the contract's default ladder if absent)."""
    return {**catalog, "ladder_kbps": list(scale.ladder(catalog.get("ladder_kbps", LADDER_KBPS)))}


def from_settings(cfg: Mapping) -> ModelScale:
    """The scale a scenario's settings state (`model_scale`: {bitrate_divisor, viewer_factor});
    none stated: no scaling. Unknown keys are an error naming them."""
    raw = dict(cfg.get("model_scale") or {})
    raw.pop("derived", None)
    unknown = set(raw) - {"bitrate_divisor", "viewer_factor"}
    if unknown:
        raise ValueError(f"model_scale: unknown keys {sorted(unknown)}")
    return ModelScale(**raw)


def apply(cfg: Mapping, scale: ModelScale, *, sessions=(), shared_mbps=(), flow_mbps=(),
          store_rules=()) -> dict:
    """A scenario's reference settings scaled: the catalog's ladder, and the named fields by kind
    (a field may hold a number, a list of them, or a {key: number} dict). `model_scale` in the
    result records the scale and each field's reference and scaled value."""
    fns = {**{f: scale.sessions for f in sessions}, **{f: scale.shared_mbps for f in shared_mbps},
           **{f: scale.flow_mbps for f in flow_mbps}, **{f: scale.store_rule for f in store_rules}}
    missing = [f for f in fns if f not in cfg]
    if missing:
        raise ValueError(f"model scale: settings have no field {missing}")
    out, derived = dict(cfg), {}
    for f, fn in fns.items():
        v = cfg[f]
        out[f] = ({k: fn(x) for k, x in v.items()} if isinstance(v, Mapping)
                  else [fn(x) for x in v] if isinstance(v, (list, tuple)) else fn(v))
        derived[f] = {"reference": v, "scaled": out[f]}
    if "catalog" in cfg:
        out["catalog"] = scale_catalog(cfg["catalog"], scale)
        derived["ladder_kbps"] = {"reference": list(cfg["catalog"].get("ladder_kbps", LADDER_KBPS)),
                                  "scaled": out["catalog"]["ladder_kbps"]}
    out["model_scale"] = scale.manifest(derived)
    return out
