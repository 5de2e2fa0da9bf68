"""Malformed and unusual frames through the relay, both engines, crafted with scapy: a runt, a
bare Ethernet header, a VLAN-tagged frame, an IPv4 packet with a bad checksum, a frame larger
than the far side's MTU and one larger than the native engine's in-ring slot. The relay forwards
what the far side accepts, counts what it cannot send, keeps its counters balanced and keeps
relaying ordinary traffic afterwards (issue 16's malformed-frame check)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from bench.links import ADDR_B, NetnsLab, build_chain, ping_rtts_ms, start_relay

pytestmark = [pytest.mark.emulation,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces")]

BIG_MTU, B_MTU = 9000, 4000  # A and the relay take 9000-byte frames, B 4000
MARKER_TYPE = 0x88B5  # local experimental EtherType: the sender's last frame, ends the capture
# run in B: argv = interface, seconds at most; prints READY once capturing, then what arrived
# from the crafted source up to the marker frame, as JSON
_SNIFFER = r"""
import json, sys
from scapy.all import Dot1Q, IP, conf, sniff
conf.verb = 0
got = sniff(iface=sys.argv[1], timeout=float(sys.argv[2]),
            lfilter=lambda p: p.src == "02:00:00:00:00:01",
            stop_filter=lambda p: p.type == 0x88B5,
            started_callback=lambda: print("READY", flush=True))
print(json.dumps([{"len": len(p), "vlan": p[Dot1Q].vlan if Dot1Q in p else None,
                   "chksum": p[IP].chksum if IP in p else None} for p in got
                  if p.type != 0x88B5]), flush=True)
"""
# run in the sending namespace: argv = interface, destination MAC; prints the frame count sent
_SENDER = r"""
import sys
from scapy.all import Dot1Q, Ether, ICMP, IP, Raw, conf, sendp
conf.verb = 0
iface, dst = sys.argv[1], sys.argv[2]
eth = Ether(dst=dst, src="02:00:00:00:00:01")
frames = [
    bytes(eth)[:10],                                                  # runt: not even a header
    bytes(eth / Raw(b"")),                                            # header only, no payload
    bytes(eth / Dot1Q(vlan=7) / IP(dst="198.18.250.2") / ICMP()),     # VLAN-tagged
    bytes(eth / IP(dst="198.18.250.2", chksum=0x1234) / ICMP()),      # bad IPv4 checksum
    bytes(eth / IP(dst="198.18.250.2") / ICMP() / Raw(b"x" * 3000)),  # over the native slot
    bytes(eth / IP(dst="198.18.250.2") / ICMP() / Raw(b"y" * 8000)),  # over B's MTU
]
for f in frames:
    sendp(Raw(f), iface=iface)
sendp(Ether(dst=dst, src="02:00:00:00:00:01", type=0x88B5) / Raw(b"end"), iface=iface)
print(len(frames))
"""


@pytest.fixture(scope="module")
def chain():
    with NetnsLab(f"ocrf{os.getpid() % 100000}") as lab:
        ns_a, ns_b, [(ns_r, ra, rb)] = build_chain(lab, 1)
        a_if = f"{lab.prefix}s0x"
        b_if = f"{lab.prefix}s1y"
        for ns, ifname in ((ns_a, a_if), (ns_r, ra), (ns_r, rb)):
            lab.sh(ns, "ip", "link", "set", ifname, "mtu", str(BIG_MTU))
        lab.sh(ns_b, "ip", "link", "set", b_if, "mtu", str(B_MTU))
        lab.sh(ns_b, "ethtool", "-K", b_if, "rxvlan", "off")  # B's capture sees the tag as sent
        yield lab, ns_a, ns_b, ns_r, ra, rb, a_if, b_if


@pytest.mark.parametrize("engine", ["python", "native"])
def test_malformed_frames_neither_kill_nor_unbalance_the_relay(chain, engine):
    lab, ns_a, ns_b, ns_r, ra, rb, a_if, b_if = chain
    proc, stats_path = start_relay(lab, ns_r, ra, rb, f"f{engine}", delay_ms_ab=1.0,
                                   delay_ms_ba=1.0, extra_args=("--engine", engine))
    try:
        _check_frames(lab, ns_a, ns_b, a_if, b_if, proc)
    finally:
        status = lab.stop(proc)  # a failed check must not leave it relaying for the next test
    assert status == 0
    stats = json.loads(stats_path.read_text())
    assert stats["engine"] == engine
    ab = stats["ab"]
    # all six reach the relay (with 8 pings); the one over B's MTU cannot go on and is counted
    # as a send error, not lost silently (B's veth drops it: ENOBUFS)
    assert ab["frames_in"] >= 6 + 8 and ab["frames_queued"] == 0
    assert ab["frames_forwarded"] + ab["frames_dropped_queue"] + ab["frames_dropped_loss"] == ab["frames_in"]
    assert ab["frames_send_errors"] == 1, (ab, stats["last_send_error"])
    assert "No buffer space" in (stats["last_send_error"] or ""), stats


def _check_frames(lab, ns_a, ns_b, a_if, b_if, proc) -> None:
    assert len(ping_rtts_ms(lab, ns_a, ADDR_B, 3, interval_s=0.05)) == 3
    b_mac = json.loads(lab.sh(ns_b, "ip", "-j", "link", "show", b_if))[0]["address"]
    sniffer = lab.popen(ns_b, [sys.executable, "-c", _SNIFFER, b_if, "120"],
                        stdout=subprocess.PIPE, text=True)
    assert sniffer.stdout.readline().strip() == "READY"  # capturing before the first frame
    sent = subprocess.run(["ip", "netns", "exec", ns_a, sys.executable, "-c", _SENDER, a_if, b_mac],
                          capture_output=True, text=True, timeout=60)
    assert sent.returncode == 0, sent.stderr[-2000:]
    assert int(sent.stdout.strip()) == 6
    arrived = json.loads(sniffer.communicate(timeout=30)[0])
    # at B: the header-only frame, the VLAN frame with its tag, the bad checksum unchanged, the
    # 3000-byte frame whole (the runt arrives truncated and has no source MAC to match)
    assert {"len": 14, "vlan": None, "chksum": None} in arrived, arrived
    assert any(a["vlan"] == 7 for a in arrived), arrived
    assert any(a["chksum"] == 0x1234 for a in arrived), arrived
    assert any(a["len"] == 14 + 20 + 8 + 3000 for a in arrived), arrived
    assert not any(a["len"] > B_MTU + 18 for a in arrived), arrived
    rtts = ping_rtts_ms(lab, ns_a, ADDR_B, 5, interval_s=0.05)
    assert proc.poll() is None, "the relay died on a malformed frame"
    assert len(rtts) == 5 and min(rtts) >= 2.0 - 0.1
