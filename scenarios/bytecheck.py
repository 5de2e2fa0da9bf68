"""Independent byte accounting per link class (issue 16 item 3): four figures from three sources,
side by side per arm. Pure.

- kernel_wire_bytes: the kernel's interface counters at each link's switch port
  (emulation.probes.link_counters): every frame with its Ethernet, IP and TCP headers, ACKs,
  retransmissions, probes and control traffic.
- relay_wire_bytes: the link relay's own frame counters at the same point, same direction
  (emulation.probes.relay_rows): the same frames, counted by another program (frames as read
  from or written to its AF_PACKET sockets, VLAN tags put back).
- relay_payload_bytes: the TCP payload from the content servers' port (contracts.deployment
  OCA_PORT: OCAs and origin) in the frames the relay read, each sequence byte once per flow, so
  retransmissions do not count twice (emulation.tcpcount): HTTP response headers and bodies.
- log_payload_bytes: the response bodies of the serve phase's access-log rows (segment requests
  at OCAs and the origin, pull-throughs included) laid over their plan paths
  (scenarios.traffic.payload_by_class).
gap_wire_pct = 100 x (relay - kernel) / kernel; gap_payload_pct = 100 x (relay payload - log
payload) / log payload; empty when the denominator is under MIN_BYTES (a class that carried
almost nothing has no meaningful ratio). Transit and peering count at the ISP border only, as in
scenarios.traffic. Relay figures are empty for a class with a counted link that has no relay.
relay_lost_track_count: holes and flows the relays' payload counters forgot (0 unless a flow had
more than emulation.tcpcount.MAX_HOLES holes open or the flow table overflowed).
"""
from __future__ import annotations

from scenarios.traffic import bytes_by_class, counted, payload_by_class

CLASSES = ("transit", "peering", "backbone", "internal", "access")
JUDGED = ("transit", "peering")  # issue 16: the three sources agree within TOLERANCE_PCT here
TOLERANCE_PCT = 1.0
MIN_BYTES = 1_000_000
COLUMNS = ("arm", "cls", "kernel_wire_bytes", "relay_wire_bytes", "relay_payload_bytes",
           "log_payload_bytes", "relay_tcp_payload_bytes", "gap_wire_pct", "gap_payload_pct",
           "relay_lost_track_count")


def relay_delta(before: dict[str, dict], after: dict[str, dict]) -> tuple[list[dict], list[str]]:
    """(counter-delta rows, links left out): a link whose relay restarted between the readings
    (another pid) has counters that started again, so it is left out, never subtracted."""
    from scenarios.traffic import counter_delta
    restarted = sorted(n for n, r in after.items() if n in before and before[n]["relay_pid"] != r["relay_pid"])
    kept = {n: r for n, r in after.items() if n not in restarted}
    return counter_delta(before, kept), restarted


def gap_pct(value: int | None, reference: int) -> float | str:
    """100 x (value - reference) / reference, 3 decimals; "" without a value or below MIN_BYTES."""
    if value is None or reference < MIN_BYTES:
        return ""
    return round(100 * (value - reference) / reference, 3)


def relayed_classes(plan, relay_rows: list[dict]) -> set[str]:
    """Classes whose every counted link has a relay row."""
    have = {r["link"] for r in relay_rows}
    roles = {n.name: n.role for n in plan.nodes}
    from emulation.probes import kernel_read_point
    missing = {lk.cls for lk in plan.links
               if counted(lk.cls, roles[kernel_read_point(plan, lk)[1]]) and lk.name not in have}
    return {lk.cls for lk in plan.links} - missing


def byte_rows(arm: str, kernel: list[dict], relay: list[dict], access: list[dict], plan,
              origin: str = "origin") -> list[dict]:
    """One row per link class (COLUMNS) of one arm from counter-delta rows (ints) and access rows."""
    k = bytes_by_class(kernel, plan)
    rw, rp = bytes_by_class(relay, plan), bytes_by_class(relay, plan, "payload_")
    rt = bytes_by_class(relay, plan, "tcp_payload_")
    roles = {n.name: n.role for n in plan.nodes}
    lost: dict[str, int] = {}
    for r in relay:
        if counted(r["cls"], roles[r["node"]]):
            lost[r["cls"]] = lost.get(r["cls"], 0) + int(r.get("lost_track_count", 0))
    log = payload_by_class(access, plan, origin)
    ok = relayed_classes(plan, relay) if relay else set()
    rows = []
    for c in CLASSES:
        r = {"arm": arm, "cls": c, "kernel_wire_bytes": k.get(c, 0),
             "relay_wire_bytes": rw.get(c, 0) if c in ok else None,
             "relay_payload_bytes": rp.get(c, 0) if c in ok else None,
             "log_payload_bytes": log.get(c, 0),
             "relay_tcp_payload_bytes": rt.get(c, 0) if c in ok else None,
             "relay_lost_track_count": lost.get(c, 0) if c in ok else None}
        r["gap_wire_pct"] = gap_pct(r["relay_wire_bytes"], r["kernel_wire_bytes"])
        r["gap_payload_pct"] = gap_pct(r["relay_payload_bytes"], r["log_payload_bytes"])
        rows.append({key: "" if r[key] is None else r[key] for key in COLUMNS})
    return rows


def headline(rows: list[dict]) -> dict:
    """The largest absolute wire and payload gaps over JUDGED classes ("" when none applies)."""
    out = {}
    for key in ("gap_wire_pct", "gap_payload_pct"):
        gaps = [abs(float(r[key])) for r in rows if r["cls"] in JUDGED and r[key] not in ("", None)
                and r[key] == r[key]]
        out[key] = round(max(gaps), 3) if gaps else ""
    return out
