"""Open Connect's serve path as miss mode `content_miss`, on 127.0.0.1 with real servers: the OCA
answers a miss with 404 + X-Ocalab-Content-Miss and never pulls; the player moves to its next
location at once and skips the OCA for the rest of the session. A plain 404 stays an error."""
from __future__ import annotations

import asyncio
import contextlib
import json
import time

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from appliances import commands
from appliances.abr import FixedAbr
from appliances.content import Catalog, CatalogSpec
from appliances.control import build_control
from appliances.httpcore import CONTENT_MISS_HEADER
from appliances.oca import Oca, OcaConfig
from appliances.oca_fill import FILL_HEADER
from appliances.oca_http import HttpServer
from appliances.player_model import LocationCursor
from appliances.player_session import SessionConfig, ViewerSession
from contracts.deployment import parse_deployment

CATALOG = {"n_titles": 3, "duration_s": 32, "seed": 5, "ladder_kbps": [235, 750]}  # 8 segments
CAT = Catalog(CatalogSpec(**CATALOG))
TITLE = "t0001"
CMD_KEY = b"k" * 32  # the control plane's command key


@contextlib.asynccontextmanager
async def running_oca(tmp_path, upstream: str):
    """A content_miss OCA served by the project's HTTP server; yields (oca, base URL, log path)."""
    cfg = OcaConfig(name="oca1", upstream=upstream, store_dir=tmp_path / "store",
                    capacity_bytes=64 * 2**20, miss="content_miss", command_key=CMD_KEY)
    oca, log_path = Oca(cfg, CAT), tmp_path / "oca1.access.jsonl"
    with open(log_path, "a", encoding="utf-8") as log:
        server = HttpServer(oca.handle, access_log=log, name="oca1")
        _, port = await server.start("127.0.0.1", 0)
        try:
            yield oca, f"http://127.0.0.1:{port}", log_path
        finally:
            await server.close()
            await oca.stop()


def _recording_upstream(http_stub, pulls: list[str]) -> str:
    def respond(path: str) -> bytes:
        pulls.append(path)
        return b""
    return http_stub(respond)


def _catalog_source(http_stub) -> str:
    """A fill source serving the catalog's bytes (stands in for the origin at night)."""
    def respond(path: str) -> bytes:
        _, _, title, kbps, index = path.split("?")[0].split("/")
        return CAT.segment_bytes(title, int(kbps), int(index))
    return http_stub(respond)


async def _filled(oca: Oca, plan_id, timeout_s: float = 30.0) -> None:
    for _ in range(int(timeout_s / 0.05)):  # the filler runs in this event loop
        st = oca.filler.status.to_dict()
        if st["plan_id"] == plan_id and st["state"] in ("done", "window_closed"):
            assert st["filled"] == 3, st
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"fill did not finish: {oca.filler.status.to_dict()}")


def _access(log_path) -> list[dict]:
    return [json.loads(x) for x in log_path.read_text().splitlines()]


# --- the OCA -------------------------------------------------------------------------------

@pytest.mark.integration
def test_content_miss_oca_answers_404_with_header_and_never_pulls(tmp_path, http_stub):
    pulls: list[str] = []
    upstream, source = _recording_upstream(http_stub, pulls), _catalog_source(http_stub)

    async def main():
        async with running_oca(tmp_path, upstream) as (oca, base, log_path), \
                aiohttp.ClientSession() as http:
            async with http.get(f"{base}/v/{TITLE}/235/0") as r:
                assert r.status == 404 and r.headers[CONTENT_MISS_HEADER] == "1"
            async with http.get(f"{base}/v/{TITLE}/235/1", headers={FILL_HEADER: "1"}) as r:
                assert r.status == 404 and CONTENT_MISS_HEADER not in r.headers  # fill: plain miss
            plan = {"segments": [[TITLE, 235, i] for i in range(3)], "rate_mbps": 500,
                    "sources": [source]}
            data = json.dumps(plan).encode()  # signed as the control plane signs its pushes
            headers = commands.sign(CMD_KEY, "POST", "/fill", data, time.time())
            async with http.post(f"{base}/fill", data=data, headers=headers) as r:
                plan_id = (await r.json())["plan_id"]
            await _filled(oca, plan_id)
            async with http.get(f"{base}/v/{TITLE}/235/2") as r:
                body = await r.read()
                assert r.status == 200 and body == CAT.segment_bytes(TITLE, 235, 2)
            async with http.get(f"{base}/health") as r:
                health = await r.json()
            return oca.counters, health, _access(log_path)
    counters, health, access = asyncio.run(main())
    assert pulls == []  # the serve phase never contacts the upstream
    assert counters["content_misses"] == 1 and counters["hits"] == 1
    assert [(a["status"], a["cache"]) for a in access if a["path"].startswith("/v/")] == [
        (404, "content_miss"), (404, "miss"), (200, "hit")]
    assert health["miss_mode"] == "content_miss" and health["stored_titles"] == [TITLE]
    assert health["title_objects"] == {TITLE: 3} and health["stored_objects"] == 3


# --- the player ----------------------------------------------------------------------------

def _second_server(requests: list[tuple[int, int]]) -> web.Application:
    async def segment(request: web.Request) -> web.Response:
        kbps, index = int(request.match_info["kbps"]), int(request.match_info["index"])
        requests.append((kbps, index))
        return web.Response(body=CAT.segment_bytes(request.match_info["title"], kbps, index))
    app = web.Application()
    app.router.add_get("/v/{title}/{kbps}/{index}", segment)
    return app


def _plain_404(requests: list[str]) -> web.Application:
    async def missing(request: web.Request) -> web.Response:
        requests.append(request.path)
        return web.Response(status=404, text="not here")
    app = web.Application()
    app.router.add_get("/v/{tail:.*}", missing)
    return app


async def _play(first_url: str, first_health: dict, second: TestServer) -> tuple:
    """One session whose ranked list is [first (embedded OCA), second (origin)]."""
    origin = {"name": "origin", "url": f"http://127.0.0.1:{second.port}"}
    dep = parse_deployment({"catalog": CATALOG, "origin": origin,
                            "ocas": [{"name": "oca1", "tier": "embedded", "url": first_url,
                                      "serves": ["127.0.0.0/8"], "distance_hops": 1, "rtt_ms": 1.0}]})
    chunks: list[dict] = []
    async with TestServer(build_control(dep, bytes(range(32))).app, host="127.0.0.1") as ctl, \
            aiohttp.ClientSession() as http:
        base = f"http://127.0.0.1:{ctl.port}"
        async with http.post(f"{base}/heartbeat", json=first_health) as r:  # ranks oca1 first
            assert r.status == 200
        cfg = SessionConfig(control_url=base, abr=FixedAbr(235), speed=20, reprobe_segments=2)
        s = ViewerSession("v-0001", TITLE, cfg, chunks.append)
        await s.run(http)
    return s, chunks


@pytest.mark.integration
def test_player_leaves_a_content_miss_oca_for_the_session(tmp_path, http_stub):
    pulls: list[str] = []
    upstream = _recording_upstream(http_stub, pulls)

    async def main():
        served: list[tuple[int, int]] = []
        async with running_oca(tmp_path, upstream) as (oca, url, log_path), \
                TestServer(_second_server(served), host="127.0.0.1") as second:
            s, chunks = await _play(url, oca.health(), second)
            return s, chunks, served, _access(log_path)
    s, chunks, served, access = asyncio.run(main())
    assert s.status == "ok" and s.first_location == "oca1"
    assert [c["index"] for c in chunks] == list(range(8)) and sorted(i for _, i in served) == list(range(8))
    assert {c["server"] for c in chunks} == {"origin"}
    assert {(c["fallback"], c["fallback_reason"]) for c in chunks} == {(1, "content_miss")}
    assert [a["cache"] for a in access] == ["content_miss"]  # never re-probed, no pull
    assert pulls == []
    summary = s.summary("fixed")
    assert summary["content_misses"] == 1 and summary["failed_attempts"] == 0
    assert summary["errors"] == []


@pytest.mark.integration
def test_plain_404_stays_an_error_that_is_retried_by_reprobe():
    async def main():
        missed: list[str] = []
        served: list[tuple[int, int]] = []
        async with TestServer(_plain_404(missed), host="127.0.0.1") as first, \
                TestServer(_second_server(served), host="127.0.0.1") as second:
            health = {"name": "oca1", "status": "ok", "stored_titles": [TITLE]}
            s, chunks = await _play(f"http://127.0.0.1:{first.port}", health, second)
            return s, chunks, missed
    s, chunks, missed = asyncio.run(main())
    assert s.status == "ok" and {c["server"] for c in chunks} == {"origin"}
    assert len(missed) > 1  # re-probed after every 2 segments below the top location
    assert s.content_misses == 0 and s.failed_attempts == len(missed)
    assert {c["fallback_reason"] for c in chunks} == {"error"}


# --- the cursor (pure) ---------------------------------------------------------------------

def test_cursor_skips_content_missed_locations_for_good():
    c = LocationCursor(3, reprobe_segments=1, reprobe_s=100.0, retries=(2, 0, 0))
    c.content_missed(0)  # retries do not apply: the location answered
    assert c.current == 1 and c.pick(0.0) == 1 and c.missed_above(1)
    c.succeeded(1)
    assert not c.reprobe_due(0.0) and c.pick(0.0) == 1  # nothing better to re-probe
    c.failed(1, 0.0)
    assert c.current == 2 and not c.missed_above(2)
    c.succeeded(2)
    assert c.pick(0.0) == 1  # the re-probe goes to the best location not content-missed


def test_cursor_failure_jumps_over_content_missed_and_can_exhaust():
    c = LocationCursor(3)
    c.content_missed(1)
    c.failed(0, 0.0)
    assert c.current == 2
    c.content_missed(2)
    assert c.exhausted
    with pytest.raises(IndexError):
        c.pick(0.0)
