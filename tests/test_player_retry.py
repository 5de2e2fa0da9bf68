"""A failed segment attempt makes the player ask its ABR again: on 127.0.0.1, a real control plane
and a segment server that cuts one transfer mid-body after a stall (what a killed OCA does to a
viewer fetching the top rung). The retry must go out at the rung the drained buffer affords."""
from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer

from appliances.abr import AbrInput
from appliances.content import Catalog, CatalogSpec
from appliances.control import build_control
from contracts.deployment import parse_deployment
from appliances.player_session import SessionConfig, ViewerSession

CATALOG = {"n_titles": 3, "duration_s": 16, "seed": 5, "ladder_kbps": [235, 750, 1750]}
CUT_INDEX = 2
STALL_S = 0.6  # x speed 20 = 12 s of media: longer than the buffer the first two segments fill


@dataclass
class TopWhileBuffered:
    """Top rung while more than 2 s are buffered, else the lowest; records what it was asked."""
    asked: list[float] = field(default_factory=list)
    name: str = "top-while-buffered"

    def choose(self, state: AbrInput) -> int:
        self.asked.append(state.buffer_s)
        return state.ladder_kbps[-1] if state.buffer_s > 2.0 else state.ladder_kbps[0]


def _segment_app(catalog: Catalog, requests: list[tuple[int, int]]) -> web.Application:
    async def segment(request: web.Request) -> web.StreamResponse:
        kbps, index = int(request.match_info["kbps"]), int(request.match_info["index"])
        requests.append((kbps, index))
        data = catalog.segment_bytes(request.match_info["title"], kbps, index)
        resp = web.StreamResponse(headers={"Content-Type": "video/mp4"})
        resp.content_length = len(data)
        await resp.prepare(request)
        if index == CUT_INDEX and all(i != index for _, i in requests[:-1]):  # the first attempt
            await resp.write(data[:len(data) // 2])
            await asyncio.sleep(STALL_S)
            request.transport.close()  # cut mid-body, as a killed server's socket is
            return resp
        await resp.write(data)
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_get("/v/{title}/{kbps}/{index}", segment)
    return app


def _play(abr: TopWhileBuffered) -> tuple[ViewerSession, list[dict], list[tuple[int, int]]]:
    async def main():
        requests: list[tuple[int, int]] = []
        chunks: list[dict] = []
        catalog = Catalog(CatalogSpec(**CATALOG))
        async with TestServer(_segment_app(catalog, requests), host="127.0.0.1") as seg:
            dep = parse_deployment({"ocas": [], "catalog": CATALOG, "origin": {
                "name": "origin", "url": f"http://127.0.0.1:{seg.port}"}})
            cp = build_control(dep, bytes(range(32)))
            async with TestServer(cp.app, host="127.0.0.1") as ctl:
                cfg = SessionConfig(control_url=f"http://127.0.0.1:{ctl.port}", abr=abr,
                                    speed=20, segment_timeout_s=5.0)
                s = ViewerSession("v-0001", "t0001", cfg, chunks.append)
                async with aiohttp.ClientSession() as http:
                    await s.run(http)
        return s, chunks, requests
    return asyncio.run(main())


def test_a_cut_transfer_is_retried_at_the_rung_the_buffer_affords():
    abr = TopWhileBuffered()
    s, chunks, requests = _play(abr)
    assert s.status == "ok" and [c["index"] for c in chunks] == [0, 1, 2, 3]
    cut = [r for r in requests if r[1] == CUT_INDEX]
    # the first attempt went out at the top rung with the buffer full, the retry at the lowest
    assert cut == [(1750, CUT_INDEX), (235, CUT_INDEX)], requests
    assert chunks[CUT_INDEX]["kbps"] == 235 and chunks[CUT_INDEX]["fallback"] == 1
    assert s.failed_attempts == 1 and s.retry_rung_changes == 1
    assert s.summary("x")["retry_rung_changes"] == 1
    # asked once per attempt: 4 segments + 1 retry, the retry with a drained buffer
    assert len(abr.asked) == 5 and abr.asked[CUT_INDEX] > 2.0 >= abr.asked[CUT_INDEX + 1]


def test_a_throughput_sample_leaves_out_connect_and_handshake():
    from appliances.player_session import Attempt, request_ms
    new = Attempt(True, {}, size_bytes=40_000, download_ms=358.0,
                  conn={"conn": "tls", "connect_ms": 100.5, "tls_ms": 101.0})
    assert request_ms(new) == 156.5
    plain = Attempt(True, {}, download_ms=250.0, conn={"conn": "tcp", "connect_ms": 100.0, "tls_ms": ""})
    assert request_ms(plain) == 150.0
    reused = Attempt(True, {}, download_ms=152.0, conn={"conn": "reused", "connect_ms": "", "tls_ms": ""})
    assert request_ms(reused) == 152.0
