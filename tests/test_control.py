"""Control plane: account tokens, manifests (Content Steering shape, signed URLs), heartbeats
steering the ranking, fill plans/pushes, telemetry, JSON errors, and the CLI lifecycle."""
import asyncio
import io
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from appliances import tokens
from appliances.content import Catalog
from appliances.control import build_control
from contracts.deployment import parse_deployment
from appliances.control_playback import account_token, check_account_token, steering_document
from contracts.steering import Location

KEY = bytes(range(32))
DEPLOYMENT = {
    "ocas": [{"name": "oca1", "tier": "embedded", "url": "http://127.0.0.1:9",
              "serves": ["127.0.0.0/8"], "distance_hops": 1, "rtt_ms": 1.0},
             {"name": "oca2", "tier": "ixp", "url": "http://127.0.0.1:7",
              "serves": ["127.0.0.0/8"], "distance_hops": 3, "rtt_ms": 5.0, "capacity_mb": 10},
             {"name": "far", "tier": "embedded", "url": "http://198.18.7.1:8080",
              "serves": ["198.18.7.0/24"], "distance_hops": 1, "rtt_ms": 1.0}],
    "origin": {"name": "origin", "url": "http://127.0.0.1:5"},
    "catalog": {"n_titles": 8, "duration_s": 12, "ladder_kbps": [235, 750]},
    "regions": {"lo": {"prefixes": ["127.0.0.0/8"], "preference_seed": 4}}}


def test_account_tokens():
    tok = account_token(KEY, "viewer-0001")
    assert check_account_token(KEY, tok) == "viewer-0001"
    assert check_account_token(KEY, tok[:-1] + ("0" if tok[-1] != "0" else "1")) is None
    assert check_account_token(KEY, "viewer-0002" + tok[len("viewer-0001"):]) is None
    assert check_account_token(bytes(32), tok) is None
    assert check_account_token(KEY, "") is None
    with pytest.raises(ValueError):
        account_token(KEY, "bad name!")


def test_steering_document_shape():
    locs = [Location("oca1", "embedded", "http://198.18.1.100:8080", {"x": 1}),
            Location("origin", "origin", "http://198.18.100.10:8080")]
    doc = steering_document("t0007", locs, "exp=1&cp=198.18.1.0/24&tok=abc")
    assert doc["VERSION"] == 1 and doc["TTL"] > 0
    assert doc["PATHWAY-PRIORITY"] == ["oca1", "origin"]
    assert doc["RELOAD-URI"] == "/steering/t0007"
    assert doc["locations"][0] == {"pathway": "oca1", "tier": "embedded",
                                   "base_url": "http://198.18.1.100:8080/v/t0007/",
                                   "query": "exp=1&cp=198.18.1.0/24&tok=abc", "reason": {"x": 1},
                                   "retries": 0}
    # a session's segment count rides in the reload URI, so a reload ranks for the same session
    doc = steering_document("t0007", locs, "q", segments=5)
    assert doc["RELOAD-URI"] == "/steering/t0007?segments=5"


def run_with_client(fn, **kw):
    """Run `fn(client, control_plane)` against the control app on a loopback test server."""
    async def main():
        cp = build_control(parse_deployment(DEPLOYMENT), KEY, **kw)
        async with TestClient(TestServer(cp.app, host="127.0.0.1")) as client:
            await fn(client, cp)
    asyncio.run(main())


async def login(client, account="v1"):
    r = await client.post("/login", json={"account": account})
    assert r.status == 200
    return {"Authorization": f"Bearer {(await r.json())['account_token']}"}


@pytest.mark.integration
def test_manifest_has_ladder_hashes_and_signed_ranked_locations():
    async def body(client, cp):
        auth = await login(client)
        r = await client.get("/play/t0003", headers=auth)
        assert r.status == 200
        m = await r.json()
        cat = Catalog(parse_deployment(DEPLOYMENT).catalog)
        assert m["ladder_kbps"] == [235, 750] and m["n_segments"] == 3
        assert m["segments"]["750"][2] == [cat.segment_size("t0003", 750, 2),
                                           cat.segment_sha256("t0003", 750, 2)]
        doc = m["steering"]
        # no heartbeats yet: OCAs are health misses, ranked after the origin; "far" is filtered
        assert doc["PATHWAY-PRIORITY"] == ["origin", "oca1", "oca2"]
        loc = doc["locations"][1]
        assert loc["base_url"] == "http://127.0.0.1:9/v/t0003/"
        assert loc["reason"]["health"] == "no_heartbeat"
        assert tokens.verify(KEY, "/v/t0003/750/2", "127.0.0.1", loc["query"], time.time()) \
            is tokens.TokenResult.OK
        assert tokens.verify(KEY, "/v/t0004/750/2", "127.0.0.1", loc["query"], time.time()) \
            is tokens.TokenResult.FORBIDDEN
        assert "cp=127.0.0.0/8" in loc["query"]
        short = await (await client.get("/play/t0003?segments=2", headers=auth)).json()
        assert short["n_segments"] == 2 and len(short["segments"]["235"]) == 2
        assert short["segments"]["235"] == m["segments"]["235"][:2]
        capped = await (await client.get("/play/t0003?segments=99", headers=auth)).json()
        assert capped["n_segments"] == 3
        # healthy heartbeats with content put the embedded OCA first
        for name in ("oca1", "oca2"):
            r = await client.post("/heartbeat", json={"name": name, "status": "ok",
                                                      "stored_titles": ["t0003"]})
            assert (await r.json()) == {"ok": True, "known": True}
        doc = await (await client.get("/steering/t0003", headers=auth)).json()
        assert doc["PATHWAY-PRIORITY"] == ["oca1", "oca2", "origin"]
        doc = await (await client.get("/steering/t0005", headers=auth)).json()
        assert doc["PATHWAY-PRIORITY"] == ["oca1", "oca2", "origin"]
        assert doc["locations"][0]["reason"]["content"] == "miss"
    run_with_client(body)


@pytest.mark.integration
def test_steering_ranks_by_the_objects_the_session_needs():
    async def body(client, cp):
        auth = await login(client)
        # t0003: 3 segments x 2 rungs. oca1 (nearer) holds 3 objects, oca2 holds 4
        for name, n in (("oca1", 3), ("oca2", 4)):
            await client.post("/heartbeat", json={"name": name, "status": "ok",
                                                  "stored_titles": ["t0003"],
                                                  "title_objects": {"t0003": n}})
        m = await (await client.get("/play/t0003?segments=2", headers=auth)).json()
        doc = m["steering"]  # 2 segments need 4 objects: oca1 misses
        assert doc["PATHWAY-PRIORITY"] == ["oca2", "oca1", "origin"]
        assert [l["reason"]["content"] for l in doc["locations"]] == ["hit", "miss", "hit"]
        assert doc["RELOAD-URI"] == "/steering/t0003?segments=2"
        reload = await (await client.get(doc["RELOAD-URI"], headers=auth)).json()
        assert reload["PATHWAY-PRIORITY"] == ["oca2", "oca1", "origin"]
        assert reload["RELOAD-URI"] == "/steering/t0003?segments=2"
        one = await (await client.get("/steering/t0003?segments=1", headers=auth)).json()
        assert one["PATHWAY-PRIORITY"] == ["oca1", "oca2", "origin"]  # 2 objects: both hold them
        # no segments: the whole title (6 objects), which neither holds; capped like /play
        for path in ("/steering/t0003", "/steering/t0003?segments=99"):
            doc = await (await client.get(path, headers=auth)).json()
            assert doc["RELOAD-URI"] == "/steering/t0003?segments=3"
            assert [l["reason"]["content"] for l in doc["locations"]] == ["miss", "miss", "hit"]
        full = await (await client.get("/play/t0003", headers=auth)).json()
        assert full["steering"]["RELOAD-URI"] == "/steering/t0003?segments=3"
        # the local policy's /rank takes the need directly
        r = await client.get("/rank?viewer=127.0.0.1&title=t0003&need=4")
        assert [l["name"] for l in (await r.json())["locations"]] == ["oca2", "oca1", "origin"]
    run_with_client(body)


@pytest.mark.integration
def test_the_controller_is_asked_for_the_sessions_need(http_stub):
    asked: list[str] = []

    def controller(path: str) -> bytes:
        asked.append(path)
        return json.dumps({"locations": [{"name": "origin", "tier": "origin",
                                          "base_url_root": "http://127.0.0.1:5"}]}).encode()

    async def body(client, cp):
        auth = await login(client)
        assert (await client.get("/play/t0003?segments=2", headers=auth)).status == 200
        assert (await client.get("/steering/t0003", headers=auth)).status == 200
    run_with_client(body, steering_url=http_stub(controller))
    assert asked == ["/rank?viewer=127.0.0.1&title=t0003&need=4",
                     "/rank?viewer=127.0.0.1&title=t0003&need=6"]


@pytest.mark.integration
def test_bad_requests_get_json_4xx():
    async def body(client, cp):
        auth = await login(client)
        cases = [("GET", "/play/t0003", None, None, 401),
                 ("GET", "/play/t0003", {"Authorization": "Bearer v1.00"}, None, 401),
                 ("GET", "/play/t9999", auth, None, 404),
                 ("GET", "/play/t0003?segments=0", auth, None, 400),
                 ("GET", "/play/t0003?segments=x", auth, None, 400),
                 ("GET", "/steering/t0003?segments=0", auth, None, 400),
                 ("GET", "/steering/t0003?segments=2.5", auth, None, 400),
                 ("GET", "/steering/t0003?segments=x", None, None, 401),
                 ("GET", "/rank?viewer=127.0.0.1&title=t0003&need=0", None, None, 400),
                 ("GET", "/rank?viewer=127.0.0.1&title=t0003&need=many", None, None, 400),
                 ("POST", "/login", None, b"{not json", 400),
                 ("POST", "/login", None, b'{"account": "a b"}', 400),
                 ("POST", "/heartbeat", None, b"[1, 2]", 400),
                 ("POST", "/heartbeat", None, b'{"status": "ok"}', 400),
                 ("POST", "/telemetry", None, b'"x"', 400),
                 ("GET", "/nowhere", None, None, 404),
                 ("DELETE", "/play/t0003", auth, None, 405),
                 ("GET", "/fill/plan?oca=nope", None, None, 404),
                 ("GET", "/fill/plan?oca=oca1", None, None, 409),
                 ("POST", "/fill/push", None, b'{"ocas": "oca1"}', 400),
                 ("POST", "/fill/push", None, b'{"ocas": ["zz"]}', 404)]
        for method, path, headers, data, status in cases:
            r = await client.request(method, path, headers=headers, data=data)
            assert r.status == status, (method, path, r.status)
            assert "error" in await r.json(), (method, path)
    run_with_client(body)


@pytest.mark.integration
def test_fill_plan_and_push_report_every_oca():
    async def body(client, cp):
        # capacity from the deployment for oca2, from a heartbeat for oca1
        r = await client.get("/fill/plan?oca=oca2&segments_per_title=2")
        assert r.status == 200
        plan = await r.json()
        assert plan["capacity_bytes"] == 10 * 2**20
        assert 0 < plan["planned_bytes"] <= plan["capacity_bytes"]
        assert plan["body"]["sources"] == ["http://127.0.0.1:5"]  # no peer, no other IXP
        assert plan["body"]["rate_mbps"] == 100.0
        await client.post("/heartbeat", json={"name": "oca1", "status": "ok",
                                              "capacity_bytes": 3_000_000})
        plan1 = await (await client.get("/fill/plan?oca=oca1")).json()
        assert plan1["capacity_bytes"] == 3_000_000
        assert plan1["body"]["sources"] == ["http://127.0.0.1:7", "http://127.0.0.1:5"]
        # nothing listens on these ports: each OCA's failure is reported, status 502
        r = await client.post("/fill/push", json={"ocas": ["oca1", "oca2"]})
        assert r.status == 502
        res = (await r.json())["results"]
        assert set(res) == {"oca1", "oca2"}
        assert all("error" in v and v["segments"] > 0 for v in res.values())
        r = await client.post("/fill/push", json={"ocas": ["far"]})
        assert "capacity of far unknown" in (await r.json())["results"]["far"]["error"]
    run_with_client(body)


@pytest.mark.integration
def test_telemetry_is_appended_as_json_lines():
    sink = io.StringIO()

    async def body(client, cp):
        for i in range(3):
            r = await client.post("/telemetry", json={"viewer": f"v{i}", "qoe_lin": 1.5})
            assert (await r.json())["count"] == i + 1
        assert (await (await client.get("/telemetry/count")).json()) == {"count": 3}
    run_with_client(body, telemetry_sink=sink)
    lines = [json.loads(x) for x in sink.getvalue().splitlines()]
    assert [x["viewer"] for x in lines] == ["v0", "v1", "v2"]
    assert all(x["viewer_ip"] == "127.0.0.1" and x["received_unix"] > 0 for x in lines)


@pytest.mark.integration
def test_remote_steering_failure_falls_back_to_local_policy():
    async def body(client, cp):
        auth = await login(client)
        doc = await (await client.get("/steering/t0001", headers=auth)).json()
        assert doc["PATHWAY-PRIORITY"][0] == "origin"
        assert all(l["reason"]["steering"] == "local-fallback" for l in doc["locations"])
    run_with_client(body, steering_url="http://127.0.0.1:9")


@pytest.mark.integration
def test_rank_endpoint_speaks_the_remote_steering_shape():
    from appliances.steering_local import RemoteSteering

    async def body(client, cp):
        await client.post("/heartbeat", json={"name": "oca2", "status": "ok"})
        r = await client.get("/rank?viewer=127.0.0.3&title=t0002")
        assert r.status == 200
        url = f"http://127.0.0.1:{client.server.port}"
        locs = await asyncio.to_thread(RemoteSteering(url).rank, "127.0.0.3", "t0002", 0.0)
        assert [l.name for l in locs] == ["oca2", "origin", "oca1"]
        assert locs[0].base_url_root == "http://127.0.0.1:7"
        for bad in ("/rank?viewer=x&title=t0002", "/rank?viewer=127.0.0.1&title=t99"):
            assert (await client.get(bad)).status == 400
    run_with_client(body)


@pytest.mark.integration
def test_cli_ready_and_sigterm(tmp_path):
    dep = tmp_path / "dep.json"
    dep.write_text(json.dumps(DEPLOYMENT))
    key = tmp_path / "key"
    tokens.write_key(key)
    root = Path(__file__).resolve().parents[1]
    bad = subprocess.run([sys.executable, "-m", "appliances.control", "--listen", "127.0.0.1:0",
                          "--deployment", str(key), "--token-key", str(key)],
                         capture_output=True, text=True, cwd=root, timeout=30)
    assert bad.returncode == 2 and "not valid JSON" in bad.stderr
    assert "Traceback" not in bad.stderr
    typo = subprocess.run([sys.executable, "-m", "appliances.control", "--listen", "127.0.0.1:0",
                           "--deployment", str(dep), "--token-key", str(key), "--release", "t9999"],
                          capture_output=True, text=True, cwd=root, timeout=30)
    assert typo.returncode == 2 and "--release: t9999 not in the catalog" in typo.stderr
    p = subprocess.Popen([sys.executable, "-m", "appliances.control", "--listen", "127.0.0.1:0",
                          "--deployment", str(dep), "--token-key", str(key)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=root)
    try:
        line = p.stdout.readline()
        assert line.startswith("READY 127.0.0.1:") and int(line.split(":")[1]) > 0
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=15) == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        p.stdout.close()
        p.stderr.close()


def test_segment_tables_dedupe_slice_and_stop():
    from appliances.content import CatalogSpec
    from appliances.control_tables import SegmentTables

    cat = Catalog(CatalogSpec(n_titles=4, duration_s=12, ladder_kbps=(235, 750)))
    tables = SegmentTables(cat)

    async def main():
        a, b = await asyncio.gather(tables.get("t0001", 2), tables.get("t0001", 2))
        assert a is b  # one computation served both requests
        assert a["750"][1] == [cat.segment_size("t0001", 750, 1),
                               cat.segment_sha256("t0001", 750, 1)]
        assert tables.warm(2) == 2 and tables.warm_target == 2
        top = sorted(cat.popularity(), key=lambda t: -cat.popularity()[t])[0]
        full = await tables.get(top, 3)
        assert (await tables.get(top, 1)) == {k: v[:1] for k, v in full.items()}
    asyncio.run(main())
    stopped = SegmentTables(cat)
    stopped.stop()
    assert stopped.warm(4) == 0
