"""The measurement lane of a shaped link, in real namespaces: with the data queue full, a ping
marked PROBE_TOS (both ways: the echo reply keeps the TOS) skips the queue; an unmarked ping,
as a lab user sends, waits in it like the video does."""
from __future__ import annotations

import os
import subprocess
import sys
from types import SimpleNamespace

import pytest

from bench.links import ADDR_A, ADDR_B, NetnsLab
from emulation.fidelity import parse_ping
from emulation.linkemu import PROBE_TOS, shaping_script

pytestmark = [pytest.mark.emulation,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces")]

RATE_MBPS = 5.0
FLOOD = """
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
end = time.monotonic() + float(sys.argv[2])
while time.monotonic() < end:  # ~22 Mbit/s into a 5 Mbit/s link: the 200-packet queue stays full
    s.sendto(b"x" * 1400, (sys.argv[1], 9))
    time.sleep(0.0005)
"""


def _rtts_ms(lab: NetnsLab, ns: str, dst: str, count: int, *extra: str) -> list[float]:
    return parse_ping(lab.sh(ns, "ping", "-n", "-i", "0.2", "-c", str(count), "-w", str(count + 3), *extra, dst))


def _shape(lab: NetnsLab, ns: str, intf: str) -> None:
    link = SimpleNamespace(bw_mbps=RATE_MBPS, delay_ms=0.0, jitter_ms=0.0, loss_pct=0.0, queue_pkts=200,
                           impaired=False)
    lab.sh(ns, "sh", "-e", "-c", shaping_script(intf, link, "relay"))


def test_marked_probes_skip_the_full_queue_and_plain_pings_wait_in_it():
    with NetnsLab(f"ocpl{os.getpid() % 10000}") as lab:
        a, b = lab.add_ns("a"), lab.add_ns("b")
        lab.veth(a, "oclane-a", b, "oclane-b")
        lab.sh(a, "ip", "addr", "add", f"{ADDR_A}/24", "dev", "oclane-a")
        lab.sh(b, "ip", "addr", "add", f"{ADDR_B}/24", "dev", "oclane-b")
        _shape(lab, a, "oclane-a")
        _shape(lab, b, "oclane-b")
        _rtts_ms(lab, a, ADDR_B, 3)  # ARP before the queue fills
        flood = [lab.popen(ns, [sys.executable, "-c", FLOOD, dst, "6"]) for ns, dst in ((a, ADDR_B), (b, ADDR_A))]
        try:
            subprocess.run(["sleep", "1.5"], check=True)  # 200 x 1442 B at 5 Mbit/s: ~0.46 s of queue
            plain = _rtts_ms(lab, a, ADDR_B, 10)
            marked = _rtts_ms(lab, a, ADDR_B, 10, "-Q", str(PROBE_TOS))
        finally:
            for p in flood:
                lab.stop(p)
    assert len(plain) >= 5 and len(marked) >= 8
    # a full 200-packet queue each way at 5 Mbit/s holds ~0.46 s; the lane holds nothing
    assert min(plain) > 200, plain
    assert max(marked) < 20, marked
