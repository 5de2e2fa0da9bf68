"""emulation.tcpcount: TCP payload of frames as the relay reads them, retransmissions apart (pure)."""
from __future__ import annotations

from scapy.all import IP, TCP, Dot1Q, Ether, Raw, UDP

from emulation.tcpcount import MAX_HOLES, PayloadCounter, fill_holes, parse_segment

SPORT = 8080


def seg(seq: int, n: int, sport: int = SPORT, flags: str = "A", vlan: int | None = None,
        dport: int = 40000, opts: bool = True) -> bytes:
    """An Ethernet frame with one TCP segment of n payload bytes (timestamps option: 32-byte header)."""
    tcp = TCP(sport=sport, dport=dport, seq=seq, flags=flags,
              options=[("NOP", None), ("NOP", None), ("Timestamp", (1, 2))] if opts else [])
    ip = IP(src="198.18.0.1", dst="198.18.0.2") / tcp / Raw(b"x" * n)
    eth = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
    return bytes(eth / Dot1Q(vlan=vlan) / ip if vlan is not None else eth / ip)


def test_payload_is_total_length_minus_headers_vlan_too():
    for frame in (seg(1000, 1448), seg(1000, 1448, vlan=7), seg(1000, 1448, opts=False)):
        key, sport, seq, payload, syn = parse_segment(frame)
        assert (sport, seq, payload, syn) == (SPORT, 1000, 1448, False)


def test_padding_is_not_payload_and_other_frames_count_nothing():
    ack = seg(5, 0)
    assert parse_segment(ack + b"\0" * 6)[3] == 0  # Ethernet padding after a bare ACK
    udp = bytes(Ether() / IP(src="198.18.0.1", dst="198.18.0.2") / UDP() / Raw(b"y" * 100))
    frag = bytes(Ether() / IP(src="198.18.0.1", dst="198.18.0.2", flags="MF") / TCP() / Raw(b"z" * 8))
    for frame in (udp, frag, b"\x01" * 10, seg(1, 100)[:40]):
        assert parse_segment(frame) is None
    lying = bytearray(seg(1, 100))
    lying[16:18] = (4000).to_bytes(2, "big")  # IP total length beyond the frame
    assert parse_segment(bytes(lying)) is None


def test_retransmission_counts_once_as_new():
    c = PayloadCounter(SPORT)
    for s in (0, 1000, 2000, 1000, 2000, 3000):
        c.count(seg(s, 1000))
    st = c.stats()
    assert st["tcp_payload_bytes"] == 6000 and st["tcp_new_payload_bytes"] == 4000
    assert st["sport_payload_bytes"] == 6000 and st["sport_new_payload_bytes"] == 4000


def test_hole_filled_later_counts_new():
    """A segment lost before the relay leaves a hole; its retransmission is new here."""
    c = PayloadCounter(SPORT)
    for s in (0, 2000, 3000, 1000, 1000, 500):
        c.count(seg(s, 1000))
    st = c.stats()
    assert st["tcp_new_payload_bytes"] == 4000 and st["tcp_payload_bytes"] == 6000


def test_partial_overlap_and_other_port_and_syn():
    c = PayloadCounter(SPORT)
    c.count(seg(0, 1000))
    c.count(seg(500, 1000))  # half old, half new
    c.count(seg(77, 300, sport=9999))  # another flow, not the port of interest
    st = c.stats()
    assert st["tcp_new_payload_bytes"] == 1800 and st["sport_new_payload_bytes"] == 1500
    c.count(seg(10, 0, flags="S"))  # the 4-tuple reused: a SYN starts it afresh
    c.count(seg(11, 1000))
    assert c.stats()["sport_new_payload_bytes"] == 2500


def test_sequence_wraps():
    c = PayloadCounter()
    c.count(seg(2**32 - 500, 1000))
    c.count(seg(500, 1000))
    c.count(seg(2**32 - 500, 1000))
    assert c.stats()["tcp_new_payload_bytes"] == 2000


def test_holes_beyond_the_limit_are_forgotten_and_counted():
    c = PayloadCounter()
    for k in range(MAX_HOLES + 3):
        c.count(seg(2000 * k, 1000))  # every other 1000 bytes missing
    assert c.stats()["holes_forgotten"] == 2
    for k in range(MAX_HOLES + 2):
        c.count(seg(2000 * k + 1000, 1000))
    assert c.stats()["tcp_new_payload_bytes"] == 1000 * (MAX_HOLES + 3) + 1000 * MAX_HOLES


def test_fill_holes_splits():
    holes = [(0, 100), (200, 300)]
    assert fill_holes(holes, 50, 250) == 100 and holes == [(0, 50), (250, 300)]
    assert fill_holes(holes, 10, 20) == 10 and holes == [(0, 10), (20, 50), (250, 300)]


def test_a_thousand_open_holes_are_all_tracked():
    """Slow-start overshoot drops hundreds of a flow's segments before the relay at once: every
    retransmission that fills one is new."""
    c = PayloadCounter()
    for k in range(1000):
        c.count(seg(2000 * k, 1000))
    for k in reversed(range(999)):
        c.count(seg(2000 * k + 1000, 1000))
    st = c.stats()
    assert st["holes_forgotten"] == 0 and st["tcp_new_payload_bytes"] == 1999 * 1000
