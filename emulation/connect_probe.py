"""TCP connect times, measured inside an emulated host:

    python -m emulation.connect_probe HOST PORT COUNT [--burst N]

Without --burst: prints a JSON list of COUNT connect times in ms (SYN to SYN-ACK as the client
sees it), one connection after another. With --burst N: COUNT rounds, each opening N new
connections at once (N new flows, as a traceroute or a flash crowd does), and prints a JSON list
of rounds, each the N handshake RTTs in ms as the kernel measured them (TCP_INFO tcpi_rtt right
after the handshake: the SYN's RTT, free of this process's scheduling). A failed connect ends the
probe with a traceback and a non-zero exit status.
"""
from __future__ import annotations

import argparse
import json
import select
import socket
import struct
import sys
import time

CONNECT_TIMEOUT_S = 5.0
PAUSE_S = 0.02  # between connects, so the previous connection's teardown is out of the way
ROUND_PAUSE_S = 0.5  # between bursts
TCPI_RTT_OFFSET = 68  # struct tcp_info: u8 x 8, then u32 rto, ato, ..., rcv_ssthresh, rtt (us)


def connect_times_ms(host: str, port: int, count: int) -> list[float]:
    out = []
    for _ in range(count):
        t = time.perf_counter()
        s = socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S)
        out.append((time.perf_counter() - t) * 1000)
        s.close()
        time.sleep(PAUSE_S)
    return out


def kernel_rtt_ms(sock: socket.socket) -> float:
    """The connection's smoothed RTT from TCP_INFO (after the handshake: the SYN's RTT)."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    return struct.unpack_from("I", info, TCPI_RTT_OFFSET)[0] / 1000


def burst_rtts_ms(host: str, port: int, n: int) -> list[float]:
    """Open n connections at once; their handshake RTTs (kernel-measured), in ms."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            s.connect_ex((host, port))
            socks.append(s)
        pending, deadline = set(socks), time.monotonic() + CONNECT_TIMEOUT_S
        while pending:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{len(pending)} of {n} connects to {host}:{port} unfinished")
            _, ready, _ = select.select([], list(pending), [], left)
            for s in ready:
                err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    raise ConnectionError(f"connect to {host}:{port}: errno {err}")
                pending.discard(s)
        return [round(kernel_rtt_ms(s), 3) for s in socks]
    finally:
        for s in socks:
            s.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m emulation.connect_probe", description=__doc__.split("\n")[0])
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("count", type=int)
    p.add_argument("--burst", type=int, default=0, help="connections opened at once per round")
    a = p.parse_args(argv)
    if a.burst < 0 or a.count < 1:
        p.error("count must be at least 1 and --burst at least 0")
    if not a.burst:
        print(json.dumps(connect_times_ms(a.host, a.port, a.count)))
        return 0
    rounds = []
    for _ in range(a.count):
        rounds.append(burst_rtts_ms(a.host, a.port, a.burst))
        time.sleep(ROUND_PAUSE_S)
    print(json.dumps(rounds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
