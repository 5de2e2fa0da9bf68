"""A TCP proxy that paces what the server sends to RATE per connection, in MSS-sized writes.

`python -m bench.pace_proxy --listen 127.0.0.1:0 --upstream HOST:PORT --rate-mbps R` prints
`READY host:port`. It lets `bench.players` reproduce, on loopback, how an emulated link hands
a player its bytes: a packet or two per wake-up spread over the transfer, instead of a whole
segment in a few reads. Client-to-server bytes pass unpaced. Not an emulator: no delay, no loss.
"""
from __future__ import annotations

import argparse
import asyncio
import socket
import sys

MSS_BYTES = 1448


async def _plain(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()


async def _paced(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 rate_bytes_s: float) -> None:
    """Each MSS leaves no earlier than its turn at rate_bytes_s (the schedule restarts when idle)."""
    loop = asyncio.get_running_loop()
    try:
        while data := await reader.read(65536):
            due = loop.time()
            for off in range(0, len(data), MSS_BYTES):
                wait_s = due - loop.time()
                if wait_s > 0:
                    await asyncio.sleep(wait_s)
                if writer.is_closing():  # the client went away: drop the rest
                    return
                writer.write(data[off:off + MSS_BYTES])
                due += MSS_BYTES / rate_bytes_s
            await writer.drain()
    finally:
        writer.close()


async def _serve(listen: tuple[str, int], upstream: tuple[str, int], rate_bytes_s: float) -> None:
    async def handle(c_reader, c_writer):
        c_writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            s_reader, s_writer = await asyncio.open_connection(*upstream)
        except OSError:
            c_writer.close()
            return
        await asyncio.gather(_plain(c_reader, s_writer), _paced(s_reader, c_writer, rate_bytes_s),
                             return_exceptions=True)

    server = await asyncio.start_server(handle, *listen)
    host, port = server.sockets[0].getsockname()[:2]
    print(f"READY {host}:{port}", flush=True)
    async with server:
        await server.serve_forever()


def _addr(s: str) -> tuple[str, int]:
    host, port = s.rsplit(":", 1)
    return host, int(port)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.pace_proxy", description=__doc__)
    p.add_argument("--listen", type=_addr, required=True)
    p.add_argument("--upstream", type=_addr, required=True)
    p.add_argument("--rate-mbps", type=float, required=True)
    a = p.parse_args(argv)
    if a.rate_mbps <= 0:
        p.error("--rate-mbps must be > 0")
    try:
        asyncio.run(_serve(a.listen, a.upstream, a.rate_mbps * 1e6 / 8))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
