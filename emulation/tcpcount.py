"""TCP payload accounting of one relay direction (pure; emulation/native/relay.c does the same).

`PayloadCounter.count(frame)` looks at an Ethernet frame as it was on the wire (up to two
802.1Q/802.1ad tags) and, for an unfragmented IPv4 TCP segment, adds
- `tcp_payload_bytes`: IP total length - IP header - TCP header (every copy, retransmissions too);
- `tcp_new_payload_bytes`: the part of the segment's sequence range this counter has not seen
  before on its flow (src, dst, sport, dport), so a retransmission that crossed the relay once
  already is not counted twice, while one that fills a hole (a segment lost before it reached
  the relay) is. Per flow: the highest sequence end seen and up to MAX_HOLES holes below it (the
  lowest hole is forgotten when there are more: `holes_forgotten`, its bytes then never count). A
  SYN starts the flow afresh (a reused 4-tuple).
- `sport_*`: the same two figures for segments whose source port is `sport` (0: none), e.g. the
  content servers' port, whose payload is the HTTP responses the servers log.
Frames of other kinds, fragments and malformed headers (lengths that do not fit the frame) count
nothing. The Python engine keeps at most FLOW_SLOTS flows (the oldest is evicted,
`flows_evicted`); the native engine keeps FLOW_SLOTS slots with FLOW_PROBES probes and evicts
the least recently used flow of a full probe sequence.
Invariants: new <= payload (both overall and for sport); sport figures <= overall figures.
"""
from __future__ import annotations

import bisect
import struct

FLOW_SLOTS = 256
FLOW_PROBES = 8
MAX_HOLES = 2048  # slow-start overshoot on a long fat path opens hundreds of holes at once
_VLAN_TPIDS = (0x8100, 0x88A8)
_U16 = struct.Struct("!H")
_IP = struct.Struct("!BxHxxHxB")       # ver/ihl, total length, flags/fragment offset, protocol
_ADDRS = struct.Struct("!II")
_TCP = struct.Struct("!HHI")            # sport, dport, seq
KEYS = ("tcp_segments", "tcp_payload_bytes", "tcp_new_payload_bytes", "sport_payload_bytes",
        "sport_new_payload_bytes", "flows_evicted", "holes_forgotten")


def parse_segment(frame: bytes) -> tuple[tuple, int, int, int, bool] | None:
    """(flow key, sport, seq, payload bytes, syn) of an IPv4 TCP frame, else None. Pure."""
    n, off = len(frame), 12
    if n < 14:
        return None
    etype = _U16.unpack_from(frame, off)[0]
    for _ in range(2):
        if etype not in _VLAN_TPIDS or n < off + 6:
            break
        off += 4
        etype = _U16.unpack_from(frame, off)[0]
    off += 2
    if etype != 0x0800 or n < off + 20:
        return None
    vihl, total, frag, proto = _IP.unpack_from(frame, off)
    ihl = (vihl & 0x0F) * 4
    if vihl >> 4 != 4 or ihl < 20 or proto != 6 or frag & 0x3FFF or total > n - off \
            or n < off + ihl + 20:
        return None
    sport, dport, seq = _TCP.unpack_from(frame, off + ihl)
    thl = (frame[off + ihl + 12] >> 4) * 4
    payload = total - ihl - thl
    if thl < 20 or payload < 0:
        return None
    syn = bool(frame[off + ihl + 13] & 0x02)
    return (_ADDRS.unpack_from(frame, off + 12), sport, dport), sport, seq, payload, syn


def _unwrap(high: int, seq: int) -> int:
    """seq (32-bit) as the absolute sequence number nearest to `high`."""
    d = (seq - high) & 0xFFFFFFFF
    return high + (d - (1 << 32) if d >= 1 << 31 else d)


class _Flow:
    __slots__ = ("high", "holes")

    def __init__(self, high: int) -> None:
        self.high, self.holes = high, []  # holes: sorted, disjoint [lo, hi) below high


def fill_holes(holes: list, s: int, e: int) -> int:
    """Bytes of [s, e) inside `holes` (sorted, disjoint); those parts leave the holes (in
    place). Pure."""
    i = j = bisect.bisect_right(holes, s, key=lambda h: h[1])  # the first hole ending after s
    new = 0
    while j < len(holes) and holes[j][0] < e:
        new += min(holes[j][1], e) - max(holes[j][0], s)
        j += 1
    if i == j:
        return 0
    rest = ([(holes[i][0], s)] if holes[i][0] < s else []) + ([(e, holes[j - 1][1])] if holes[j - 1][1] > e else [])
    holes[i:j] = rest
    return new


class PayloadCounter:
    """TCP payload counters of one direction (see the module docstring)."""

    def __init__(self, sport: int = 0) -> None:
        self.sport = sport
        self.flows: dict[tuple, _Flow] = {}
        self.c = dict.fromkeys(KEYS, 0)

    def count(self, frame: bytes) -> None:
        seg = parse_segment(frame)
        if seg is None:
            return
        key, sport, seq, payload, syn = seg
        c = self.c
        c["tcp_segments"] += 1
        new = self._new_bytes(key, seq, payload, syn) if payload or syn else 0
        c["tcp_payload_bytes"] += payload
        c["tcp_new_payload_bytes"] += new
        if sport == self.sport:
            c["sport_payload_bytes"] += payload
            c["sport_new_payload_bytes"] += new

    def _flow(self, key: tuple, start: int, syn: bool) -> _Flow:
        flow = self.flows.get(key)
        if flow is None or syn:
            if flow is None and len(self.flows) >= FLOW_SLOTS:
                del self.flows[next(iter(self.flows))]
                self.c["flows_evicted"] += 1
            flow = self.flows[key] = _Flow(start)
        return flow

    def _new_bytes(self, key: tuple, seq: int, payload: int, syn: bool) -> int:
        """Bytes of this segment's sequence range not seen before on its flow."""
        start = (seq + 1) & 0xFFFFFFFF if syn else seq  # a SYN's data begins after it
        flow = self._flow(key, start, syn)
        s = _unwrap(flow.high, start)
        e = s + payload
        new = fill_holes(flow.holes, s, min(e, flow.high)) if s < flow.high else 0
        if e > flow.high:
            if s > flow.high:
                flow.holes.append((flow.high, s))
            new += e - max(s, flow.high)
            flow.high = e
        if len(flow.holes) > MAX_HOLES:  # a new or a split hole: forget the lowest
            self.c["holes_forgotten"] += len(flow.holes) - MAX_HOLES
            del flow.holes[:len(flow.holes) - MAX_HOLES]
        return new

    def stats(self) -> dict:
        return dict(self.c)
