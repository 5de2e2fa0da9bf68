"""TCP connect times, measured inside an emulated host:

    python -m emulation.connect_probe HOST PORT COUNT [--burst N | --tls-ca PATH]

Without --burst: prints a JSON list of COUNT connect times in ms (SYN to SYN-ACK as the client
sees it), one connection after another. With --burst N: COUNT rounds, each opening N new
connections at once (N new flows, as a traceroute or a flash crowd does), and prints a JSON list
of rounds, each the N handshake RTTs in ms as the kernel measured them (TCP_INFO tcpi_rtt right
after the handshake: the SYN's RTT, free of this process's scheduling). A failed connect ends the
probe with a traceback and a non-zero exit status.
With --tls-ca PATH: COUNT rounds of a TCP connect, a full TLS 1.3 handshake (trusting PATH, the
IP SAN checked) and one GET /health, then a second connection resuming that session; prints
{"connect_ms": [...], "full_ms": [...], "resumed_ms": [...]} (handshake: ClientHello to the
client's Finished, as the client sees it). A connection that did not resume is an error.
"""
from __future__ import annotations

import argparse
import json
import select
import socket
import ssl
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


def _get_health(s: ssl.SSLSocket) -> None:
    """One request read to EOF: the server's session tickets arrive with the answer."""
    s.sendall(b"GET /health HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n")
    while s.recv(65536):
        pass


def tls_times_ms(host: str, port: int, count: int, ca_file: str) -> dict[str, list[float]]:
    """Per round: TCP connect, full TLS 1.3 handshake, resumed handshake (ms)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_verify_locations(cafile=ca_file)
    out: dict[str, list[float]] = {"connect_ms": [], "full_ms": [], "resumed_ms": []}
    for _ in range(count):
        session = None
        for kind in ("full_ms", "resumed_ms"):
            t0 = time.perf_counter()
            raw = socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S)
            t1 = time.perf_counter()
            with ctx.wrap_socket(raw, server_hostname=host, session=session) as s:
                out[kind].append(round((time.perf_counter() - t1) * 1000, 3))
                if kind == "full_ms":
                    out["connect_ms"].append(round((t1 - t0) * 1000, 3))
                elif not s.session_reused:
                    raise ConnectionError(f"{host}:{port} did not resume the TLS session")
                _get_health(s)
                session = s.session
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
    p.add_argument("--tls-ca", default=None, metavar="PATH",
                   help="time full and resumed TLS 1.3 handshakes, trusting this CA")
    a = p.parse_args(argv)
    if a.burst < 0 or a.count < 1 or (a.burst and a.tls_ca):
        p.error("count must be at least 1, --burst at least 0, and not with --tls-ca")
    if a.tls_ca:
        print(json.dumps(tls_times_ms(a.host, a.port, a.count, a.tls_ca)))
        return 0
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
