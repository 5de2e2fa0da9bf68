"""The player's control-plane calls on 127.0.0.1: a login that gets no answer is tried again
(as a real client does); an HTTP answer, even an error, is final."""
from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from appliances.abr import make_abr
from appliances.control import build_control
from contracts.deployment import parse_deployment
from appliances.player_session import SessionConfig, ViewerSession

CATALOG = {"n_titles": 5, "duration_s": 8, "seed": 5}


def _control(middleware) -> TestServer:
    """A real control plane (no OCAs) on 127.0.0.1 with `middleware` in front of it."""
    dep = parse_deployment({"ocas": [], "origin": {"name": "origin", "url": "http://127.0.0.1:9"},
                            "catalog": CATALOG})
    cp = build_control(dep, bytes(range(32)))
    cp.app.middlewares.append(middleware)
    return TestServer(cp.app, host="127.0.0.1")


def _session(account: str, drops: int) -> tuple[ViewerSession, list[str]]:
    """Login and manifest of one session against a real control plane whose first `drops` logins
    lose their connection without an answer; (session, paths the control plane saw)."""
    seen: list[str] = []

    @web.middleware
    async def drop(request: web.Request, handler):
        seen.append(request.path)
        if request.path == "/login" and seen.count("/login") <= drops:
            request.transport.close()  # no answer at all: what a SYN or reply lost for good looks like
            await asyncio.sleep(0.1)
        return await handler(request)

    async def main() -> ViewerSession:
        async with _control(drop) as srv:
            cfg = SessionConfig(control_url=f"http://127.0.0.1:{srv.port}", abr=make_abr("bba"),
                                segments=1, speed=20, segment_timeout_s=1.0)
            s = ViewerSession(account, "t0001", cfg, lambda row: None)
            async with aiohttp.ClientSession() as http:
                await s._manifest(http)
            return s

    return asyncio.run(main()), seen


def test_a_login_without_answer_is_tried_again():
    t0 = time.monotonic()
    s, seen = _session("v-0001", drops=2)
    assert s.control_retries == 2 and seen.count("/login") == 3 and "/play/t0001" in seen
    assert time.monotonic() - t0 >= 3.0  # pauses of 1 and 2 s
    assert s.summary("bba")["control_retries"] == 2


def test_a_login_lost_every_time_fails_after_three_tries():
    with pytest.raises(aiohttp.ClientError):
        _session("v-0001", drops=5)


def test_an_http_error_is_final():
    with pytest.raises(aiohttp.ClientResponseError) as e:
        _session("a b", drops=0)  # an invalid account name: 400
    assert e.value.status == 400


def test_a_steering_reload_follows_the_reload_uri_with_the_sessions_segments():
    """Every location fails (the origin's port is closed): the session reloads steering from the
    manifest's RELOAD-URI, which carries its segment count, so the reload ranks for it."""
    from appliances.player_session import SegmentError
    seen: list[str] = []

    @web.middleware
    async def record(request: web.Request, handler):
        seen.append(request.path_qs)
        return await handler(request)

    async def main() -> None:
        async with _control(record) as srv:
            cfg = SessionConfig(control_url=f"http://127.0.0.1:{srv.port}", abr=make_abr("bba"),
                                segments=1, speed=20, segment_timeout_s=1.0, max_steering_reloads=1)
            async with aiohttp.ClientSession() as http:
                with pytest.raises(SegmentError, match="reloads are used up"):
                    await ViewerSession("v-0001", "t0001", cfg, lambda row: None).run(http)

    asyncio.run(main())
    assert seen == ["/login", "/play/t0001?segments=1", "/steering/t0001?segments=1"]
