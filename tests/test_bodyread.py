"""appliances.bodyread: the low-water mark rule (pure) and read_digest on loopback, plain and TLS."""
from __future__ import annotations

import asyncio
import hashlib
import socket
import ssl
import time

import aiohttp
from aiohttp import web

from appliances.tls import resuming_client_context
from harness.pki import ServerSpec, write_pki
from appliances.bodyread import MAX_LOWAT_BYTES, TLS_MARGIN_BYTES, lowat_bytes, read_digest

BODY = bytes(range(256)) * 1125  # 288000 bytes, like a top-rung segment
WANT = (len(BODY), hashlib.sha256(BODY).hexdigest())


def test_lowat_never_exceeds_what_is_owed_nor_the_cap():
    assert lowat_bytes(100, 1e9, tls=False) == 100  # the last byte wakes the reader
    assert lowat_bytes(10**6, 1e9, tls=False) == MAX_LOWAT_BYTES
    assert lowat_bytes(10**6, 50_000, tls=False) == 500  # 10 ms of a slow transfer
    assert lowat_bytes(10**6, 0.0, tls=False) == 1
    assert lowat_bytes(0, 1e9, tls=False) == 1


def test_lowat_over_tls_keeps_a_record_of_margin():
    assert lowat_bytes(TLS_MARGIN_BYTES + 10, 1e9, tls=True) == 10
    assert lowat_bytes(TLS_MARGIN_BYTES, 1e9, tls=True) == 1
    assert lowat_bytes(TLS_MARGIN_BYTES + 10**6, 1e9, tls=True) == MAX_LOWAT_BYTES


async def _trickle(request: web.Request) -> web.StreamResponse:
    """BODY in 1448-byte writes, 2 ms apart every 20 writes; chunked unless ?cl=1."""
    resp = web.StreamResponse()
    if request.query.get("cl") == "1":
        resp.content_length = len(BODY)
    await resp.prepare(request)
    for n, off in enumerate(range(0, len(BODY), 1448)):
        await resp.write(BODY[off:off + 1448])
        if n % 20 == 0:
            await asyncio.sleep(0.002)
    await resp.write_eof()
    return resp


def _lowat(resp: aiohttp.ClientResponse) -> int:
    return resp.connection.transport.get_extra_info("socket").getsockopt(
        socket.SOL_SOCKET, socket.SO_RCVLOWAT)


async def _fetch_twice(query: str, pki: dict | None = None) -> list[tuple[tuple[int, str], int, int]]:
    """Two requests on one keep-alive connection: ((length, sha256), mark before, mark after);
    over TLS with `pki` (server cert, key and CA: the player's client context)."""
    app = web.Application()
    app.router.add_get("/seg", _trickle)
    server_ctx = client_ctx = None
    if pki is not None:
        server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server_ctx.load_cert_chain(*pki["srv"])
        client_ctx = resuming_client_context(pki["ca"])
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_ctx)
    await site.start()
    port = runner.addresses[0][1]
    url = f"{'https' if pki else 'http'}://127.0.0.1:{port}/seg?{query}"
    out = []
    try:
        async with aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=1, ssl=client_ctx or True)) as http:
            for _ in range(2):
                async with http.get(url) as resp:
                    sock = resp.connection.transport.get_extra_info("socket")
                    before = _lowat(resp)
                    body = await read_digest(resp, time.monotonic())
                    out.append((body, before, sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT)))
    finally:
        await runner.cleanup()
    return out


def test_read_digest_with_content_length_returns_every_byte_and_resets_the_mark():
    got = asyncio.run(_fetch_twice("cl=1"))
    assert [b for b, _, _ in got] == [WANT, WANT]
    assert all(before == 1 and after == 1 for _, before, after in got)


def test_read_digest_over_tls_returns_every_byte(tmp_path):
    files = write_pki(tmp_path, [ServerSpec("srv", ips=("127.0.0.1",))])
    got = asyncio.run(_fetch_twice("cl=1", {"srv": files["srv"], "ca": tmp_path / "ca.pem"}))
    assert [b for b, _, _ in got] == [WANT, WANT]
    assert all(before == 1 and after == 1 for _, before, after in got)


def test_read_digest_without_content_length_reads_plainly():
    got = asyncio.run(_fetch_twice("cl=0"))
    assert [b for b, _, _ in got] == [WANT, WANT]
