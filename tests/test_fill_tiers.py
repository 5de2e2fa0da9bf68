"""Tiered fill push (control_cache) and K objects in flight (oca_fill): pure tier decisions,
an in-process fill engine against a loopback source with per-request latency, and a loopback
origin -> IXP OCA -> embedded OCA push with real OCA processes."""
import asyncio
import io
import json
import logging
import signal
import subprocess
import sys
import time
import urllib.request

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from appliances import oca, tokens
from appliances.content import Catalog, CatalogSpec
from appliances.control import build_control
from appliances.control_cache import (MAX_POLL_ERRORS, TIER_GRACE_S, _plan_id, fill_settled,
                                      fill_tiers, tier_deadline_s, tier_waits)
from appliances.oca_fill import CHUNK_BYTES, Filler, check_fill_parallel, parse_fill_plan
from appliances.store import Store
from contracts.deployment import parse_deployment
from conftest import start_appliance

integration = pytest.mark.integration

SPEC = CatalogSpec(seed=3, n_titles=4, duration_s=24)  # 6 segments per title
CAT_FLAGS = ["--catalog-seed", "3", "--titles", "4", "--duration-s", "24"]
CAT = Catalog(SPEC)
KEY = bytes(range(32))
FINAL = ("done", "window_closed")


def _dep(ocas, origin="http://127.0.0.1:5"):
    return parse_deployment({"ocas": ocas, "origin": {"name": "origin", "url": origin},
                             "catalog": {"seed": 3, "n_titles": 4, "duration_s": 24},
                             "regions": {"r1": {"prefixes": ["198.18.1.0/24"],
                                                "preference_seed": 1},
                                         "r2": {"prefixes": ["198.18.2.0/24"],
                                                "preference_seed": 2}}})


def _oca(name, tier, url, capacity_mb=None):
    d = {"name": name, "tier": tier, "url": url, "site": f"{tier}-{name}",
         "serves": ["198.18.1.0/24"] if tier == "embedded" else ["198.18.0.0/15"],
         "distance_hops": 1 if tier == "embedded" else 3, "rtt_ms": 1.0}
    return d if capacity_mb is None else {**d, "capacity_mb": capacity_mb}


# --- pure tier decisions ---------------------------------------------------------------------

def test_fill_tiers_put_ixp_first_and_keep_every_oca_once():
    dep = _dep([_oca("e2", "embedded", "http://127.0.0.1:11"),
                _oca("x2", "ixp", "http://127.0.0.1:12"),
                _oca("e1", "embedded", "http://127.0.0.1:13"),
                _oca("x1", "ixp", "http://127.0.0.1:14")])
    tiers = fill_tiers(list(dep.ocas))
    assert [(t, [o.name for o in g]) for t, g in tiers] == [("ixp", ["x2", "x1"]),
                                                             ("embedded", ["e2", "e1"])]
    assert fill_tiers([dep.oca("e1")]) == [("embedded", [dep.oca("e1")])]
    assert fill_tiers([]) == []


@pytest.mark.parametrize("plan_id, status, errors, settled", [
    (3, {"plan_id": 3, "state": "done"}, 0, True),
    (3, {"plan_id": 3, "state": "window_closed"}, 0, True),
    (3, {"plan_id": 3, "state": "running"}, 0, False),
    (3, {"plan_id": 3, "state": "waiting"}, 0, False),
    (3, {"plan_id": 2, "state": "done"}, 0, False),     # an older plan's "done" is not ours
    (3, {"plan_id": 4, "state": "running"}, 0, True),   # replaced by a newer plan
    (3, None, MAX_POLL_ERRORS - 1, False),              # unreadable: keep trying a while
    (3, None, MAX_POLL_ERRORS, True),                   # ... then give up on it
    (3, {"plan_id": "3", "state": "done"}, 0, False),
    (3, ["done"], 0, False)])
def test_fill_settled(plan_id, status, errors, settled):
    assert fill_settled(plan_id, status, errors) is settled


def test_tier_waits_only_accepted_plans():
    results = {"a": {"status": 202, "plan_id": 1}, "b": {"status": 400, "error": "x"},
               "c": {"error": "capacity unknown"}, "d": {"status": 202, "plan_id": None}}
    assert tier_waits(results) == {"a": 1}


def test_tier_deadline_is_window_end_or_sooner():
    assert tier_deadline_s(100.0, 60.0, None) == 160.0 + TIER_GRACE_S
    assert tier_deadline_s(100.0, 60.0, 10.0) == 110.0
    assert tier_deadline_s(100.0, 60.0, 1e9) == 160.0 + TIER_GRACE_S
    assert tier_deadline_s(100.0, -5.0, None) == 100.0 + TIER_GRACE_S  # window already over


def test_plan_id_of_an_oca_answer():
    assert _plan_id('{"accepted": 3, "plan_id": 7}') == 7
    assert _plan_id("not json") is None and _plan_id("[1]") is None
    assert _plan_id('{"plan_id": true}') is None


# --- --fill-parallel -------------------------------------------------------------------------

@pytest.mark.parametrize("k", [1, 4, 32])
def test_fill_parallel_accepts_1_to_32(k):
    assert check_fill_parallel(k) == k


@pytest.mark.parametrize("k", [0, 33, -1, True, 4.0, "4", None])
def test_fill_parallel_rejects_others(k):
    with pytest.raises(ValueError, match=r"--fill-parallel must be an integer in 1\.\.32"):
        check_fill_parallel(k)


@pytest.mark.parametrize("value", ["0", "33"])
def test_oca_cli_rejects_bad_fill_parallel(tmp_path, capsys, value):
    argv = ["--listen", "127.0.0.1:0", "--upstream", "http://127.0.0.1:5", "--store",
            str(tmp_path / "s"), "--capacity-mb", "8", "--fill-parallel", value, *CAT_FLAGS]
    assert oca.main(argv) == 2
    err = capsys.readouterr().err
    assert f"oca: --fill-parallel must be an integer in 1..32, got {value}" in err
    assert not (tmp_path / "s").exists()  # rejected before anything was created


def test_oca_cli_fill_parallel_not_a_number(capsys):
    with pytest.raises(SystemExit) as exc:
        oca.build_parser().parse_args(["--listen", "x:1", "--upstream", "http://a:1", "--store",
                                       "s", "--capacity-mb", "1", "--fill-parallel", "four"])
    assert exc.value.code == 2 and "--fill-parallel: invalid int value" in capsys.readouterr().err


def test_oca_config_default_fill_parallel(tmp_path):
    args = oca.build_parser().parse_args(["--listen", "127.0.0.1:0", "--upstream",
                                          "http://127.0.0.1:5", "--store", str(tmp_path),
                                          "--capacity-mb", "8"])
    assert oca.config_from_args(args).fill_parallel == 4


# --- the fill engine with K objects in flight (in-process, loopback source) ------------------

class Source:
    """A loopback fill source serving catalog bytes after `latency_s`; counts concurrency."""

    def __init__(self, latency_s: float = 0.0, missing=()):
        self.latency_s, self.missing = latency_s, set(missing)
        self.active = self.max_active = 0
        self.started: list[tuple] = []

    async def handle(self, request: web.Request) -> web.Response:
        key = (request.match_info["t"], int(request.match_info["k"]), int(request.match_info["i"]))
        self.started.append(key)
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            await asyncio.sleep(self.latency_s)
            if key in self.missing:
                return web.Response(status=404, text="not here")
            return web.Response(body=CAT.segment_bytes(*key))
        finally:
            self.active -= 1

    async def __aenter__(self):
        app = web.Application()
        app.router.add_get("/v/{t}/{k}/{i}", self.handle)
        self.server = TestServer(app, host="127.0.0.1")
        await self.server.start_server()
        self.url = str(self.server.make_url("")).rstrip("/")
        return self

    async def __aexit__(self, *exc):
        await self.server.close()


class Engine:
    """A Filler on a tmp store with its own client session and an in-memory fill log."""

    def __init__(self, tmp_path, parallel: int, capacity_bytes: int = 64 * 2**20,
                 eviction: str = "lru"):
        self.store = Store(tmp_path / f"store-k{parallel}", capacity_bytes, eviction=eviction)
        self.log = io.StringIO()
        self._session = None
        self.filler = Filler(self.store, CAT, self.session, lambda p: None, self.log,
                             parallel=parallel)

    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self._session

    async def run(self, plan: dict, timeout_s: float = 30.0) -> dict:
        self.filler.submit(parse_fill_plan(plan, CAT))
        deadline = time.monotonic() + timeout_s
        while self.filler.status.state not in FINAL:
            assert time.monotonic() < deadline, self.filler.status.to_dict()
            await asyncio.sleep(0.01)
        return self.filler.status.to_dict()

    def records(self) -> list[dict]:
        return [json.loads(x) for x in self.log.getvalue().splitlines()]

    async def close(self):
        await self.filler.close()
        if self._session is not None:
            await self._session.close()


def _keys(n_titles: int, kbps: int = 235) -> list[tuple]:
    return [(f"t{t:04d}", kbps, i) for t in range(n_titles) for i in range(6)]


def _plan(keys, sources, **kw) -> dict:
    return {"segments": [list(k) for k in keys], "sources": sources, "rate_mbps": 1000, **kw}


@integration
@pytest.mark.parametrize("k", [1, 4])
def test_k_objects_in_flight_against_a_slow_source(tmp_path, k):
    keys = _keys(2)  # 12 objects

    async def main():
        async with Source(latency_s=0.15) as src:
            eng = Engine(tmp_path, k)
            try:
                st = await eng.run(_plan(keys, [src.url]))
            finally:
                await eng.close()
        return src, st

    src, st = asyncio.run(main())
    assert st["state"] == "done" and st["filled"] == 12 and st["in_flight"] == []
    assert src.max_active == k  # K=1: strictly one at a time; K=4: four latencies overlap
    assert sorted(src.started[:k]) == sorted(keys[:k])  # objects start in plan order
    if k == 1:
        assert src.started == keys


@integration
def test_counters_exact_with_k4(tmp_path):
    keys = _keys(4)  # 24 objects, ~2.8 MB
    present = keys[:3]
    fallback = set(keys[5:11])  # not at source A: fetched from B after one 404
    failed = set(keys[8:10])  # at neither source
    total = sum(CAT.segment_size(*x) for x in keys)

    async def main():
        async with Source(latency_s=0.02, missing=fallback) as a, \
                Source(latency_s=0.02, missing=failed) as b:
            # pinned: the plan's objects are never evicted, so the later ones find no room
            eng = Engine(tmp_path, 4, capacity_bytes=int(total * 0.6), eviction="pinned")
            for key in present:
                eng.store.put(key, CAT.segment_bytes(*key))
            try:
                st = await eng.run(_plan(keys, [a.url, b.url]))
            finally:
                await eng.close()
            return a, b, eng, st

    a, b, eng, st = asyncio.run(main())
    recs = eng.records()
    assert st["state"] == "done" and st["total"] == 24 and len(recs) == 24
    assert sorted(tuple(r[x] for x in ("title", "kbps", "index")) for r in recs) == sorted(keys)
    assert st["present"] == 3 and st["failed"] == 2
    assert st["no_room"] >= 1 and st["filled"] >= 1  # the store holds ~60% of the plan
    assert st["present"] + st["filled"] + st["no_room"] + st["failed"] == 24
    for status, n in (("present", 3), ("failed", 2), ("ok", st["filled"]),
                      ("no_room", st["no_room"])):
        assert sum(r["status"] == status for r in recs) == n
    ok = [r for r in recs if r["status"] == "ok"]
    for src in (a.url, b.url):
        assert st["by_source"].get(src, 0) == sum(r["bytes"] for r in ok if r["source"] == src)
    assert st["bytes"] == sum(st["bytes_by_source"].values())  # 404s carry no payload bytes
    assert st["bytes"] == sum(r["bytes"] for r in recs if r["status"] in ("ok", "no_room"))
    assert st["filled"] == sum(1 for x in keys if x not in present and x in eng.store)
    for r in recs:  # source order kept per object: A first, B after a 404
        key = (r["title"], r["kbps"], r["index"])
        if r["status"] in ("ok", "no_room"):
            assert r["source"] == (b.url if key in fallback else a.url)
            assert r["attempts"] == (2 if key in fallback else 1)
        elif r["status"] == "failed":
            assert key in failed and len(r["errors"]) == 2
    assert a.max_active <= 4 and st["in_flight"] == [] and st["current_bytes"] == 0
    assert eng.store.used_bytes <= int(total * 0.6)


@integration
def test_rate_cap_is_shared_by_the_workers(tmp_path):
    keys = _keys(2)  # 12 objects of ~117 KB, ~1.4 MB
    rate_mbps = 8.0  # 1 MB/s all workers together: a per-worker cap would take a quarter

    async def main():
        async with Source() as src:
            eng = Engine(tmp_path, 4)
            t0 = time.monotonic()
            try:
                st = await eng.run({**_plan(keys, [src.url]), "rate_mbps": rate_mbps})
            finally:
                await eng.close()
            return st, time.monotonic() - t0

    st, elapsed_s = asyncio.run(main())
    assert st["state"] == "done" and st["filled"] == 12
    # a lower bound only: a slow host makes the fill longer, never shorter
    assert elapsed_s >= (st["bytes"] - 4 * CHUNK_BYTES) * 8 / (rate_mbps * 1e6)


@integration
def test_window_end_stops_new_objects_with_k_workers(tmp_path):
    keys = _keys(2)

    async def main():
        async with Source(latency_s=0.4) as src:  # 12 objects / 2 workers: 2.4 s > window
            eng = Engine(tmp_path, 2)
            try:
                st = await eng.run(_plan(keys, [src.url], window_end_unix=time.time() + 1.0))
            finally:
                await eng.close()
            return src, st

    src, st = asyncio.run(main())
    assert st["state"] == "window_closed" and st["in_flight"] == []
    # only objects started before the end, and of those only the ones done by the end are stored
    assert st["filled"] + st["cut_at_window_end"] == len(src.started) < 12


@integration
def test_an_object_in_flight_at_window_end_is_cut_off_and_not_stored(tmp_path):
    keys = _keys(1)[:1]

    async def main():
        async with Source(latency_s=3.0) as src:  # answers long after the window closed
            eng = Engine(tmp_path, 1)
            try:
                st = await eng.run(_plan(keys, [src.url], window_end_unix=time.time() + 0.5))
            finally:
                await eng.close()
            return src, st, eng

    src, st, eng = asyncio.run(main())
    assert len(src.started) == 1 and st["state"] == "window_closed"
    assert (st["filled"], st["cut_at_window_end"], st["in_flight"]) == (0, 1, [])
    assert [r["status"] for r in eng.records()] == ["window_end"]
    assert eng.store.keys() == [] and not any((tmp_path / "store-k1" / "tmp").iterdir())  # temp file removed


@integration
def test_new_plan_replaces_running_workers(tmp_path):
    async def main():
        async with Source(latency_s=0.3) as src:
            eng = Engine(tmp_path, 4)
            try:
                eng.filler.submit(parse_fill_plan(_plan(_keys(2), [src.url]), CAT))
                old = eng.filler.status
                while len(old.in_flight) < 4:
                    await asyncio.sleep(0.01)
                st = await eng.run(_plan(_keys(1, 750), [src.url]))
                await asyncio.sleep(0.05)  # the cancelled workers unwind
            finally:
                await eng.close()
            return old, st

    old, st = asyncio.run(main())
    assert old.state == "replaced" and old.in_flight == [] and old.filled == 0
    assert st["state"] == "done" and st["plan_id"] == 2 and st["filled"] == 6


# --- tiered push ---------------------------------------------------------------------------



def start(module: str, *args: str, timeout_s: float = 15.0):
    proc, port = start_appliance(module, *args, *CAT_FLAGS, timeout_s=timeout_s)
    return proc, f"http://127.0.0.1:{port}"


def stop(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait(timeout=5)


def _status(url: str) -> dict:
    with urllib.request.urlopen(f"{url}/fill/status", timeout=10) as r:
        return json.loads(r.read())


def _wait_done(url: str, timeout_s: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        st = _status(url)
        if st["plan_id"] >= 1 and st["state"] in FINAL:
            return st
        assert time.monotonic() < deadline, st
        time.sleep(0.1)


@integration
def test_tiered_push_fills_embedded_from_the_ixp(tmp_path):
    procs = []
    try:
        origin_p, origin = start("appliances.origin")
        procs.append(origin_p)
        urls = {}
        cmd_key = tokens.write_key(tmp_path / "command.key")  # as harness.services does
        for name in ("ixp", "emb"):
            p, urls[name] = start("appliances.oca", "--name", name, "--upstream", origin,
                                  "--store", str(tmp_path / name), "--capacity-mb", "64",
                                  "--command-key", str(tmp_path / "command.key"))
            procs.append(p)
        # capacities: the IXP plans 1 title (t0002), the embedded OCA 2 (t0002, t0003)
        dep = _dep([_oca("emb", "embedded", urls["emb"], 12), _oca("ixp", "ixp", urls["ixp"], 6)],
                   origin)
        cp = build_control(dep, KEY, fill_rate_mbps=500, fill_window_s=120, command_key=cmd_key)
        plans = {n: cp.cache.plan(dep.oca(n), 1) for n in ("ixp", "emb")}
        assert plans["ixp"].titles == ("t0002",) and plans["emb"].titles == ("t0002", "t0003")

        async def push():
            async with TestClient(TestServer(cp.app, host="127.0.0.1")) as client:
                r = await client.post("/fill/push", json={"segments_per_title": 1})
                return r.status, await r.json()

        status, body = asyncio.run(push())
        assert status == 200 and body["ok"] and set(body["results"]) == {"ixp", "emb"}
        assert [t["tier"] for t in body["tiers"]] == ["ixp", "embedded"]
        assert body["tiers"][0]["timed_out"] == [] and "timed_out" not in body["tiers"][1]
        # one fill window for both tiers: the embedded OCA does not get a later night
        ends = {r["window_end_unix"] for r in body["results"].values()}
        assert len(ends) == 1 and ends.pop() <= time.time() + 120
        # the IXP tier had settled before the embedded OCA got its plan
        assert _status(urls["ixp"])["state"] == "done"
        ixp, emb = _status(urls["ixp"]), _wait_done(urls["emb"])
        assert ixp["bytes_by_source"] == {origin: plans["ixp"].planned_bytes}
        at_ixp = set(plans["ixp"].segments)
        from_ixp = sum(CAT.segment_size(*x) for x in plans["emb"].segments if x in at_ixp)
        from_origin = plans["emb"].planned_bytes - from_ixp
        assert from_ixp > 0 and from_origin > 0
        # exactly: every object the IXP plan holds came from the IXP, only the rest from origin
        assert emb["bytes_by_source"] == {urls["ixp"]: from_ixp, origin: from_origin}
        assert emb["by_source"] == emb["bytes_by_source"] and emb["failed"] == 0
        log_text = (tmp_path / "emb" / "fill-log.jsonl").read_text()
        recs = [json.loads(x) for x in log_text.splitlines()]
        for r in recs:  # no 404 from the IXP for what its plan holds
            held = (r["title"], r["kbps"], r["index"]) in at_ixp
            assert (r["source"], r["attempts"]) == ((urls["ixp"], 1) if held else (origin, 2))
        # a control plane without the OCAs' command key is refused, and reports it
        rogue = build_control(dep, KEY, fill_rate_mbps=500, command_key=b"r" * 32)
        res = asyncio.run(rogue.cache.push([dep.oca("ixp")], 1))["ixp"]
        assert res["status"] == 403 and "forged" in res["error"]
    finally:
        for p in procs:
            stop(p)


class StuckOca:
    """An OCA stand-in that accepts a plan and then never finishes it."""

    async def fill(self, request):
        return web.json_response({"accepted": 1, "plan_id": 1}, status=202)

    async def status(self, request):
        return web.json_response({"plan_id": 1, "state": "running"})


@integration
def test_tier_wait_is_bounded_and_every_oca_is_reported(caplog):
    async def main():
        app = web.Application()
        stuck = StuckOca()
        app.router.add_post("/fill", stuck.fill)
        app.router.add_get("/fill/status", stuck.status)
        async with TestServer(app, host="127.0.0.1") as server:
            url = str(server.make_url("")).rstrip("/")
            dep = _dep([_oca("emb", "embedded", "http://127.0.0.1:9", 12),
                        _oca("ixp", "ixp", url, 6)])
            cp = build_control(dep, KEY)
            return await cp.cache.push_tiered(list(dep.ocas), 1, tier_wait_s=0.3, poll_s=0.05)

    with caplog.at_level(logging.WARNING, logger="ocalab.control"):
        results, tiers = asyncio.run(main())
    assert results["ixp"]["status"] == 202 and results["ixp"]["plan_id"] == 1
    assert "error" in results["emb"]  # nothing listens there: reported, not hidden
    assert tiers[0]["tier"] == "ixp" and tiers[0]["timed_out"] == ["ixp"]
    assert 0.3 <= tiers[0]["elapsed_s"] and tiers[1]["ocas"] == ["emb"]
    assert "tier wait timed out, pushing the next tier while ixp still fill" in caplog.text


@integration
def test_push_when_ready_reports_every_oca_and_tier_timing():
    dep = _dep([_oca("emb", "embedded", "http://127.0.0.1:9", 12),
                _oca("ixp", "ixp", "http://127.0.0.1:7", 6),
                _oca("far", "embedded", "http://127.0.0.1:3")])  # capacity never known

    async def main():
        return await build_control(dep, KEY).cache.push_when_ready(0.0)

    out = asyncio.run(main())
    assert set(out["results"]) == {"emb", "ixp", "far"}
    assert all("error" in r for r in out["results"].values())
    assert "capacity of far unknown" in out["results"]["far"]["error"]
    assert [t["tier"] for t in out["tiers"]] == ["ixp", "embedded"]
    assert out["tiers"][0]["timed_out"] == []  # a failed push is not waited for
    assert all(t["elapsed_s"] >= t["push_s"] >= 0 for t in out["tiers"])


@integration
def test_fill_push_waits_for_warm_manifests_and_records_midnight():
    """The push starts only once the manifest warm is done (it would share the CPU with the
    night's fill), and the control plane records when it began: the fill run's midnight."""
    from appliances.control import push_after_warm
    dep = _dep([_oca("emb", "embedded", "http://127.0.0.1:9", 12)])

    async def main():
        cp = build_control(dep, KEY)
        warm_done = []

        def warm():
            time.sleep(0.4)
            warm_done.append(time.time())
        warm_task = asyncio.create_task(asyncio.to_thread(warm))
        assert cp.cache.push_started_unix is None
        await push_after_warm(warm_task, cp.cache, 0.0)
        return warm_done[0], cp.cache.push_started_unix
    warm_end, pushed = asyncio.run(main())
    assert pushed is not None and pushed >= warm_end
