"""The relay's own byte counters between real namespaces, both engines (issue 16 item 3): live
dumps on SIGUSR2 while it runs, wire bytes equal to the kernel's interface counters, and the TCP
payload of a transfer of known size counted once however often it was retransmitted.
Needs root; small and fast."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.links import ADDR_A, NetnsLab, build_chain, start_relay
from emulation.relay import live_stats

pytestmark = [pytest.mark.emulation,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces")]
engines = pytest.mark.parametrize("engine", ["python", "native"])
PORT = 45680
SIZE_BYTES = 3_000_000
# run in A: serve SIZE bytes to the first client on PORT, then close
_SERVER = r"""
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(1)
print("READY", flush=True)
c, _ = s.accept()
c.sendall(b"v" * int(sys.argv[3]))
c.close()
"""
# run in B: read to EOF, print the byte count
_CLIENT = r"""
import socket, sys
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=60)
n = 0
while (data := c.recv(1 << 16)):
    n += len(data)
print(n)
"""


@pytest.fixture(scope="module")
def topo():
    with NetnsLab(f"ocrb{os.getpid() % 100000}") as lab:
        ns_a, ns_b, [(ns_r, ra, rb)] = build_chain(lab, 1)
        yield lab, ns_a, ns_b, ns_r, ra, rb


def kernel_tx_bytes(lab: NetnsLab, ns: str) -> int:
    """tx_bytes of the only veth in `ns` (A's end of the chain)."""
    intf = lab.sh(ns, "sh", "-c", "ls /sys/class/net | grep -v '^lo$'").split()[0]
    return int(lab.sh(ns, "cat", f"/sys/class/net/{intf}/statistics/tx_bytes"))


def transfer(lab: NetnsLab, ns_a: str, ns_b: str) -> int:
    server = lab.popen(ns_a, [sys.executable, "-c", _SERVER, ADDR_A, str(PORT), str(SIZE_BYTES)],
                       stdout=subprocess.PIPE, text=True)
    assert server.stdout.readline().strip() == "READY"
    got = int(lab.sh(ns_b, sys.executable, "-c", _CLIENT, ADDR_A, str(PORT), timeout_s=90))
    server.wait(30)
    return got


@engines
def test_live_dump_and_payload_counted_once(topo, engine):
    """A 3 MB transfer A -> B through a lossy relay (python: 2% loss; native: a 20-frame queue):
    live dumps come from the running relay, its a->b wire bytes equal A's kernel tx bytes, and
    the new payload from the server port is exactly the bytes sent, however many copies crossed."""
    lab, ns_a, ns_b, ns_r, ra, rb = topo
    params = {"loss_pct": 2.0} if engine == "python" else {"queue_pkts": 20}
    proc, stats_path = start_relay(lab, ns_r, ra, rb, f"b{engine}", delay_ms_ab=1.0, delay_ms_ba=1.0,
                                   extra_args=("--engine", engine, "--payload-sport", str(PORT)), **params)
    try:
        tx0 = kernel_tx_bytes(lab, ns_a)
        first = live_stats({"r": (proc, stats_path)})["r"]
        assert first["pid"] == proc.pid and first["final"] is False and first["engine"] == engine
        assert transfer(lab, ns_a, ns_b) == SIZE_BYTES
        tx1 = kernel_tx_bytes(lab, ns_a)
        st = live_stats({"r": (proc, stats_path)})["r"]
    finally:
        lab.stop(proc)
    assert st["stats_dumps"] == first["stats_dumps"] + 1 and proc.poll() is not None
    ab, ba = st["ab"], st["ba"]
    assert ab["bytes_in"] - first["ab"]["bytes_in"] == tx1 - tx0  # the kernel saw what the relay read
    assert ab["sport_new_payload_bytes"] == SIZE_BYTES == ab["tcp_new_payload_bytes"]
    assert ab["sport_payload_bytes"] > SIZE_BYTES  # copies lost in the relay were sent again
    assert ba["sport_payload_bytes"] == 0 and ba["tcp_payload_bytes"] == 0  # the client sent no data
    assert ba["tcp_segments"] > 0 and ab["flows_evicted"] == 0 and ab["holes_forgotten"] == 0
    final = Path(stats_path).read_text()
    assert '"final": true' in final


# run in A: send the frames given as hex lines on stdin out of interface argv[1]
_SEND_HEX = r"""
import sys
from scapy.all import Raw, conf, sendp
conf.verb = 0
frames = [bytes.fromhex(x) for x in sys.stdin.read().split()]
for f in frames:
    sendp(Raw(f), iface=sys.argv[1])
print(len(frames))
"""


@engines
def test_crafted_segments_counted_as_the_pure_counter_does(topo, engine):
    """Plain, VLAN-tagged (the tag comes back from the kernel's metadata), retransmitted,
    hole-filling and SYN segments: each engine's counters equal emulation.tcpcount's on the
    same frames."""
    from emulation.tcpcount import KEYS, PayloadCounter
    from tests.test_tcpcount import seg
    lab, ns_a, _, ns_r, ra, rb = topo
    frames = [seg(1000, 1448), seg(1000, 1448), seg(2448, 1000, vlan=7), seg(5000, 500),
              seg(3448, 1000, vlan=7), seg(10, 0, flags="S", sport=9999), seg(11, 700, sport=9999),
              seg(11, 700, sport=9999)]
    expected = PayloadCounter(8080)
    for f in frames:
        expected.count(f)
    proc, stats_path = start_relay(lab, ns_r, ra, rb, f"c{engine}", delay_ms_ab=0.5, delay_ms_ba=0.5,
                                   extra_args=("--engine", engine, "--payload-sport", "8080"))
    try:
        before = live_stats({"r": (proc, stats_path)})["r"]["ab"]
        a_if = f"{lab.prefix}s0x"
        out = subprocess.run(["ip", "netns", "exec", ns_a, sys.executable, "-c", _SEND_HEX, a_if],
                             input="\n".join(f.hex() for f in frames), capture_output=True, text=True,
                             timeout=60)
        assert out.returncode == 0 and int(out.stdout) == len(frames), out.stderr[-1000:]
        after = live_stats({"r": (proc, stats_path)})["r"]["ab"]
    finally:
        lab.stop(proc)
    got = {k: after[k] - before[k] for k in KEYS}
    assert got == expected.stats()
    assert got["tcp_new_payload_bytes"] == 1448 + 1000 + 500 + 1000 + 700
