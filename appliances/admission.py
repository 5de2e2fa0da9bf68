"""Admission of segment requests at an OCA under load, fair per client (sans-IO: the caller
passes `now`; no sockets, no clock reads).

A client is the peer IP address as the OCA sees it: in the testbed a viewer host (which may
run several player sessions, as a household behind one address does), a peer OCA filling
from this one, or the bench's load generator. Capacity is `max_streams` concurrent object
responses and `egress_limit_mbps` of response bytes scheduled in a sliding window; either
limit may be None (not enforced).

Policy `fair` (guaranteed shares, the default): with N recent clients (the asking one, every
client holding a stream or bytes in the egress window, and every client that asked within
`recent_s`), each client's share is max(1, max_streams // N) streams and egress_limit / N
Mbit/s. A request asks for `ask` Mbit/s: the object's size over the egress window.
- At the stream limit every request is refused (`at_capacity`): a running stream is never cut.
- A client that stays within both its shares with this request (streams < its stream share,
  its egress + ask <= its egress share) is admitted unless every client already uses its
  whole egress share (sum over clients of min(egress, share) >= egress_limit: `at_capacity`).
  So the egress limit is an admission threshold, not a rate cap: the egress may pass it by
  what clients within their shares ask for while an over-share client's bytes are still in
  the window (the old rule let every admission overshoot by one response, too).
- Any other request is refused at either limit (`at_capacity`), and is admitted only from
  capacity the other recent clients do not claim: it is refused (`over_share`) when
  streams + 1 + sum(others' unused stream shares) > max_streams, or
  egress + min(ask, egress share) + sum(others' unmet egress demand) > egress_limit
  (ask counts at most one share: an object bigger than a share is still served when nobody
  else claims the room). A client's unmet demand is min(its share, what it asked for in the
  window, refused requests included) minus what it got.
So a client asking for less than its share always finds room (a greedy client taking every
slot the moment it frees cannot starve it), while a greedy client keeps its own share plus
whatever nobody else asks for (egress stays work-conserving; stream slots of a recent but idle
client stay free for at most `recent_s` after its last request).
Policy `first-come` is the old behaviour (admit whoever asks while below the limits), kept
as the baseline the reliability bench shows to be unfair.

Fill pulls from peer OCAs (header X-Ocalab-Fill) are clients like any other (the header is
unauthenticated, so exempting it would let anyone skip the limits): a filling peer is one
client with its own guaranteed share, and a refusal (503) sends it to its next ranked source.
Control commands (/fill, /fill/status, /health) never go through admission.
Memory: a client is forgotten once it holds no stream, has no bytes in the egress window and
has not asked for `recent_s`; at most `max_clients` are tracked (a new client beyond that is
refused `at_capacity` until one is forgotten).
"""
from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Sequence

ADMISSION_POLICIES = ("fair", "first-come")
MAX_CLIENTS = 4096


class EgressMeter:
    """Bytes scheduled for sending in a sliding window -> Mbit/s (pure; caller passes now)."""

    def __init__(self, window_s: float = 1.0) -> None:
        self.window_s = window_s
        self._events: collections.deque[tuple[float, int]] = collections.deque()
        self._sum = 0

    def add(self, n_bytes: int, now: float) -> None:
        self._events.append((now, n_bytes))
        self._sum += n_bytes
        self._expire(now)

    def _expire(self, now: float) -> None:
        while self._events and self._events[0][0] <= now - self.window_s:
            self._sum -= self._events.popleft()[1]

    def mbps(self, now: float) -> float:
        self._expire(now)
        return self._sum * 8 / self.window_s / 1e6


@dataclass(frozen=True)
class Usage:
    """What one client (or the whole OCA) holds: concurrent streams and egress Mbit/s, and the
    egress it asked for in the window (served or refused; >= mbps)."""
    streams: int
    mbps: float
    asked_mbps: float = 0.0


@dataclass(frozen=True)
class Limits:
    max_streams: int | None
    egress_mbps: float | None

    def reached(self, total: Usage) -> bool:
        """True at either limit (nobody can be admitted without exceeding it)."""
        return ((self.max_streams is not None and total.streams >= self.max_streams)
                or (self.egress_mbps is not None and total.mbps >= self.egress_mbps))


def fair_decision(me: Usage, others: Sequence[Usage], total: Usage, limits: Limits,
                  ask_mbps: float) -> str:
    """`ok`, `at_capacity` or `over_share` for a request of `ask_mbps` from a client holding
    `me` while the other recent clients hold `others` and the OCA `total` (module docstring)."""
    if limits.max_streams is not None and total.streams >= limits.max_streams:
        return "at_capacity"
    n = 1 + len(others)
    s_share = None if limits.max_streams is None else max(1, limits.max_streams // n)
    e_share = None if limits.egress_mbps is None else limits.egress_mbps / n
    if ((s_share is None or me.streams < s_share)
            and (e_share is None or me.mbps + ask_mbps <= e_share)):  # within its shares
        entitled = 0.0 if e_share is None else sum(min(u.mbps, e_share) for u in (me, *others))
        return "at_capacity" if e_share is not None and entitled >= limits.egress_mbps else "ok"
    if limits.reached(total):
        return "at_capacity"
    if s_share is not None:
        unused = sum(max(0, s_share - o.streams) for o in others)
        if total.streams + 1 + unused > limits.max_streams:
            return "over_share"
    if e_share is not None:
        unmet = sum(max(0.0, min(e_share, o.asked_mbps) - o.mbps) for o in others)
        if total.mbps + min(ask_mbps, e_share) + unmet > limits.egress_mbps:
            return "over_share"
    return "ok"


@dataclass
class _Client:
    meter: EgressMeter  # bytes of its admitted responses
    asked: EgressMeter  # bytes of every object it asked for, admitted or refused
    last_seen: float
    streams: int = 0

    def usage(self, now: float) -> Usage:
        return Usage(self.streams, self.meter.mbps(now), self.asked.mbps(now))


@dataclass
class Admission:
    """Per-client and total streams and egress of one OCA, and its admission decisions.

    Invariants: `active_streams` = sum of the clients' streams; every `started` is matched by
    one `finished` (the server's on_done); the total meter holds the sum of the clients' bytes.
    """
    limits: Limits
    policy: str = "fair"
    window_s: float = 1.0
    recent_s: float = 2.0
    max_clients: int = MAX_CLIENTS
    active_streams: int = 0
    meter: EgressMeter = field(init=False)
    _clients: dict[str, _Client] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        if self.policy not in ADMISSION_POLICIES:
            raise ValueError(f"admission policy must be one of {ADMISSION_POLICIES}")
        if self.window_s <= 0 or self.recent_s < 0 or self.max_clients < 1:
            raise ValueError("window_s must be > 0, recent_s >= 0 and max_clients >= 1")
        self.meter = EgressMeter(self.window_s)

    def decide(self, client: str, n_bytes: int, now: float) -> str:
        """`ok` (admit), `at_capacity` or `over_share` (refuse) for `client` asking for an
        object of `n_bytes` (an upper bound of what it will be sent); records the request."""
        total = Usage(self.active_streams, self.meter.mbps(now))
        self._forget_idle(now)
        me = self._client(client, now, bounded=True)
        if me is None:
            return "at_capacity"
        me.last_seen = now
        me.asked.add(n_bytes, now)
        if self.policy == "first-come":
            return "at_capacity" if self.limits.reached(total) else "ok"
        others = [c.usage(now) for ip, c in self._clients.items() if ip != client]
        ask_mbps = n_bytes * 8 / self.window_s / 1e6
        return fair_decision(Usage(me.streams, me.meter.mbps(now)), others, total, self.limits,
                             ask_mbps)

    def _client(self, client: str, now: float, bounded: bool) -> _Client | None:
        """The state of `client`, created if new; None (if `bounded`) when max_clients are
        already tracked."""
        c = self._clients.get(client)
        if c is None and (not bounded or len(self._clients) < self.max_clients):
            c = self._clients[client] = _Client(EgressMeter(self.window_s),
                                                EgressMeter(self.window_s), now)
        return c

    def started(self, client: str, n_bytes: int, now: float) -> None:
        """An admitted response began: one more stream, `n_bytes` scheduled for sending."""
        self.active_streams += 1
        self.meter.add(n_bytes, now)
        c = self._client(client, now, bounded=False)  # new if forgotten meanwhile
        c.streams += 1
        c.meter.add(n_bytes, now)

    def finished(self, client: str) -> None:
        """The response started for `client` is over (sent, cut or failed)."""
        self.active_streams -= 1
        c = self._clients.get(client)
        if c is not None:
            c.streams -= 1

    def clients(self, now: float) -> int:
        """Recent clients (those a fair share is divided among)."""
        self._forget_idle(now)
        return len(self._clients)

    def _forget_idle(self, now: float) -> None:
        idle = [ip for ip, c in self._clients.items()
                if c.streams == 0 and now - c.last_seen > self.recent_s and c.asked.mbps(now) == 0]
        for ip in idle:
            del self._clients[ip]
