"""Port-stats samples -> per-link byte/packet counters and rates (pure: no IO, time passed in).

Invariants:
- totals only grow: a counter that goes down is a 64-bit wrap when the previous value was in the
  top quarter of the range, otherwise a reset (port re-created, switch restarted), and then the
  new raw value is the delta since the reset;
- an OpenFlow "unsupported" counter (all ones) is treated as absent, never as a value;
- rates are over the last interval between two samples of the same port, in Mbit/s (10^6 bit/s);
  the first sample of a port has no rate (None);
- a link is measured at one switch port: the first end (a, then b) that is on a switch. `tx` is
  what the switch sent out of that port toward the peer, `rx` what it received from the peer.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from topologies.plan import Link, Plan

COUNTER_BITS = 64
COUNTER_MOD = 1 << COUNTER_BITS
UNSUPPORTED = COUNTER_MOD - 1
WRAP_WINDOW = COUNTER_MOD // 4
COUNTERS = ("tx_bytes", "rx_bytes", "tx_packets", "rx_packets", "tx_dropped", "rx_dropped")


def counter_delta(prev: int, cur: int) -> tuple[int, str]:
    """Increase of a 64-bit counter from prev to cur, and how: "ok", "wrap" or "reset"."""
    if not (0 <= prev < COUNTER_MOD and 0 <= cur < COUNTER_MOD):
        raise ValueError(f"counter values must be in [0, 2^64): prev={prev} cur={cur}")
    if cur >= prev:
        return cur - prev, "ok"
    if prev >= COUNTER_MOD - WRAP_WINDOW and cur < WRAP_WINDOW:
        return cur + COUNTER_MOD - prev, "wrap"
    return cur, "reset"


def rate_mbps(delta_bytes: int, dt_s: float) -> float | None:
    """Mean rate in Mbit/s, or None when the interval is not positive."""
    if dt_s <= 0:
        return None
    return delta_bytes * 8 / dt_s / 1e6


@dataclass
class PortCounters:
    """Accumulated view of one switch port. `totals` survive wraps and resets."""
    raw: dict[str, int | None] = field(default_factory=dict)
    totals: dict[str, int] = field(default_factory=lambda: {c: 0 for c in COUNTERS})
    rates_mbps: dict[str, float | None] = field(default_factory=lambda: {"tx": None, "rx": None})
    t_s: float | None = None
    wall_s: float | None = None
    samples: int = 0
    resets: int = 0
    wraps: int = 0

    def update(self, values: dict[str, int], t_s: float, wall_s: float) -> None:
        """Fold one sample in. `t_s` is monotonic (for rates), `wall_s` is for display."""
        if self.t_s is not None and t_s < self.t_s:
            raise ValueError(f"sample time went backwards: {t_s} < {self.t_s}")
        dt = None if self.t_s is None else t_s - self.t_s
        deltas: dict[str, int | None] = {}
        hows: set[str] = set()
        for c in COUNTERS:
            cur = values.get(c)
            cur = None if cur is None or cur == UNSUPPORTED else int(cur)
            prev = self.raw.get(c)
            if cur is None:
                deltas[c] = None
            elif prev is None:
                deltas[c] = cur if self.samples == 0 else None
                if deltas[c] is not None:
                    self.totals[c] += cur
            else:
                d, how = counter_delta(prev, cur)
                hows.add(how)
                self.totals[c] += d
                deltas[c] = d
            self.raw[c] = cur
        self.resets += "reset" in hows
        self.wraps += "wrap" in hows
        for d in ("tx", "rx"):
            db = deltas.get(f"{d}_bytes")
            self.rates_mbps[d] = None if dt is None or db is None else rate_mbps(db, dt)
        self.t_s, self.wall_s = t_s, wall_s
        self.samples += 1


def measured_end(plan: Plan, lk: Link):
    """The link end whose switch port measures the link, or None if neither end is a switch."""
    for e in (lk.a, lk.b):
        if plan.node(e.node).kind == "switch":
            return e
    return None


class Accounting:
    """Per-port counters of a plan's switches, viewed per link and per link class."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.ports: dict[str, PortCounters] = {}  # key: interface name
        self._switch_intfs = {e.intf for lk in plan.links for e in (lk.a, lk.b)
                              if plan.node(e.node).kind == "switch"}

    def update(self, intf: str, values: dict[str, int], t_s: float, wall_s: float) -> bool:
        """Record a sample of switch port `intf`; returns False (and ignores it) if not in the plan."""
        if intf not in self._switch_intfs:
            return False
        self.ports.setdefault(intf, PortCounters()).update(values, t_s, wall_s)
        return True

    def link_rows(self) -> list[dict]:
        """One JSON-ready row per plan link, in plan order."""
        return [self._link_row(lk) for lk in self.plan.links]

    def _link_row(self, lk: Link) -> dict:
        end = measured_end(self.plan, lk)
        row = {"name": lk.name, "cls": lk.cls, "a": lk.a.intf, "b": lk.b.intf,
               "bw_mbps": lk.bw_mbps, "switch": end.node if end else None,
               "port": end.intf if end else None, "samples": 0, "updated_unix_s": None,
               "tx_mbps": None, "rx_mbps": None, "rate_mbps": None}
        row.update({c: None for c in COUNTERS})
        pc = self.ports.get(end.intf) if end else None
        if pc is None:
            return row
        row.update(pc.totals)
        rates = [r for r in pc.rates_mbps.values() if r is not None]
        row.update(samples=pc.samples, updated_unix_s=pc.wall_s, tx_mbps=pc.rates_mbps["tx"],
                   rx_mbps=pc.rates_mbps["rx"], rate_mbps=max(rates) if rates else None,
                   resets=pc.resets, wraps=pc.wraps)
        return row

    def class_rows(self) -> dict[str, dict]:
        """Totals per link class: bytes each way and the summed current rate."""
        out: dict[str, dict] = {}
        for row in self.link_rows():
            agg = out.setdefault(row["cls"], {"links": 0, "tx_bytes": 0, "rx_bytes": 0,
                                              "rate_mbps": 0.0})
            agg["links"] += 1
            for k in ("tx_bytes", "rx_bytes", "rate_mbps"):
                agg[k] += row[k] or 0
        return out
