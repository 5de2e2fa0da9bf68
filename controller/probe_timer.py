"""Each OCA's health-probe timeout, from its measured probe round trips (sans-IO, pure).

After RFC 6298 (TCP's retransmission timer): SRTT and RTTVAR from answered probes, timeout =
SRTT + 4 x RTTVAR, doubled for every timeout in a row (5.5), and clamped to
[MIN_TIMEOUT_S, MAX_TIMEOUT_S]. Invariants:
- the floor outlasts TCP's own recovery of one lost packet on the probe's path: a lost SYN costs
  the 1 s initial RTO (RFC 6298 2.1) plus a round trip, a lost data segment 200 ms plus one. A
  probe that times out closes its kept-alive connection, so the next one needs a handshake: a
  floor below that turns one loss on a congested path into timeouts in a row (seen with 0.5 s
  over a congested transit link, ~90 ms RTT: every OCA of an ISP left out at the evening peak);
- a dead OCA process refuses or resets at once, so the timeout never delays that signal;
- only answers (any HTTP status) are RTT samples; refusals and timeouts are not (Karn).
"""
from __future__ import annotations

from dataclasses import dataclass

MIN_TIMEOUT_S = 1.5
MAX_TIMEOUT_S = 6.0
ALPHA, BETA, K = 1 / 8, 1 / 4, 4


@dataclass
class ProbeTimer:
    srtt_s: float | None = None
    rttvar_s: float = 0.0
    timeouts_in_row: int = 0

    def timeout_s(self) -> float:
        base = MIN_TIMEOUT_S if self.srtt_s is None else self.srtt_s + K * self.rttvar_s
        base = min(max(base, MIN_TIMEOUT_S), MAX_TIMEOUT_S)
        return min(base * 2 ** min(self.timeouts_in_row, 8), MAX_TIMEOUT_S)

    def answered(self, rtt_s: float) -> None:
        """An answer after rtt_s: a sample (RFC 6298 2.2/2.3); the backoff ends."""
        if self.srtt_s is None:
            self.srtt_s, self.rttvar_s = rtt_s, rtt_s / 2
        else:
            self.rttvar_s = (1 - BETA) * self.rttvar_s + BETA * abs(self.srtt_s - rtt_s)
            self.srtt_s = (1 - ALPHA) * self.srtt_s + ALPHA * rtt_s
        self.timeouts_in_row = 0

    def timed_out(self) -> None:
        self.timeouts_in_row += 1
