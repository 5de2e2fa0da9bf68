"""Loopback system test: origin + 2 OCAs + control plane + 20 viewers; the top OCA is SIGKILLed.

Checks: every viewer finishes every segment (all SHA-256-verified by the player), the chunk log
shows fallback rows and nothing served by the killed OCA after the kill, and the control plane
received 20 telemetry summaries. Runs in ~20-30 s (speed 4, 10 segments per viewer).
"""
from __future__ import annotations

import csv
import json
import selectors
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from appliances.tokens import write_key

pytestmark = pytest.mark.integration
PY = sys.executable
N_VIEWERS = 20
N_SEGMENTS = 10
CATALOG = {"n_titles": 20, "duration_s": 40, "seed": 5}
CATALOG_FLAGS = ["--titles", "20", "--duration-s", "40", "--catalog-seed", "5"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(proc: subprocess.Popen, timeout_s: float = 15.0) -> str:
    """Read stdout until `READY host:port`; fail with the process's stderr otherwise."""
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if sel.select(timeout=0.2):
            line = proc.stdout.readline()
            if line.startswith("READY "):
                return line.split()[1]
            if not line and proc.poll() is not None:
                break
    proc.kill()
    raise AssertionError(f"{proc.args[:3]} not ready: {proc.stderr.read()[-2000:]}")


def get_json(url: str, data: dict | None = None, timeout_s: float = 10.0) -> dict:
    body = None if data is None else json.dumps(data).encode()
    req = urllib.request.Request(url, data=body, method="GET" if data is None else "POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as exc:  # 502 from /fill/push still carries the results
        return json.loads(exc.read())


class Procs:
    """Processes this test started; stopped by handle in teardown."""

    def __init__(self, logdir: Path) -> None:
        self.logdir, self.procs, self.ready_addr = logdir, {}, {}

    def start(self, name: str, args: list[str], ready: bool = True) -> subprocess.Popen:
        err = open(self.logdir / f"{name}.stderr", "w+")
        p = subprocess.Popen([PY, "-m", *args], stdout=subprocess.PIPE, stderr=err, text=True,
                             cwd=Path(__file__).resolve().parents[1])
        p.stderr = err
        self.procs[name] = p
        if ready:
            self.ready_addr[name] = wait_ready(p)
        return p

    def stop_all(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.terminate()
        for p in self.procs.values():
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=5)
            p.stderr.close()
            if p.stdout:
                p.stdout.close()


@pytest.fixture
def procs(tmp_path):
    ps = Procs(tmp_path)
    yield ps
    ps.stop_all()


def start_world(tmp_path: Path, procs: Procs) -> dict:
    key = tmp_path / "key.hex"
    write_key(key)
    ports = {n: free_port() for n in ("origin", "oca1", "oca2", "control")}
    url = {n: f"http://127.0.0.1:{p}" for n, p in ports.items()}
    deployment = {
        "ocas": [{"name": "oca1", "tier": "embedded", "url": url["oca1"], "serves": ["127.0.0.0/8"],
                  "distance_hops": 1, "rtt_ms": 1.0},
                 {"name": "oca2", "tier": "ixp", "url": url["oca2"], "serves": ["127.0.0.0/8"],
                  "distance_hops": 3, "rtt_ms": 5.0}],
        "origin": {"name": "origin", "url": url["origin"], "tier": "origin"},
        "catalog": CATALOG,
        "regions": {"lo": {"prefixes": ["127.0.0.0/8"], "preference_seed": 7}}}
    (tmp_path / "deployment.json").write_text(json.dumps(deployment))
    cmd_key = tmp_path / "command.key"  # the control plane signs its fill pushes with it
    write_key(cmd_key)
    procs.start("origin", ["appliances.origin", "--listen", f"127.0.0.1:{ports['origin']}",
                           *CATALOG_FLAGS])
    procs.start("control", ["appliances.control", "--listen", f"127.0.0.1:{ports['control']}",
                            "--deployment", str(tmp_path / "deployment.json"),
                            "--token-key", str(key), "--command-key", str(cmd_key),
                            "--fill-rate-mbps", "800",
                            "--push-fill", "--fill-segments-per-title", str(N_SEGMENTS),
                            "--telemetry-log", str(tmp_path / "telemetry.jsonl"),
                            "--steering-log", str(tmp_path / "steering.jsonl")])
    for name in ("oca1", "oca2"):
        upstream = url["origin"] if name == "oca2" else url["oca2"]
        procs.start(name, ["appliances.oca", "--listen", f"127.0.0.1:{ports[name]}",
                           "--name", name, "--upstream", upstream,
                           "--store", str(tmp_path / f"store-{name}"), "--capacity-mb", "80",
                           "--miss", "proxy", "--token-key", str(key),
                           "--command-key", str(cmd_key), "--cache-control", url["control"], "--heartbeat-s", "0.5",
                           "--access-log", str(tmp_path / f"{name}-access.jsonl"),
                           *CATALOG_FLAGS])
    return url


def wait_heartbeats(control: str, names: set[str], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        heard = {o["name"] for o in get_json(f"{control}/ocas")["ocas"] if o["age_s"] is not None}
        if names <= heard:
            return
        time.sleep(0.2)
    raise AssertionError(f"no heartbeats from {names - heard}")


def count_rows(path: Path) -> int:
    return max(0, len(path.read_text().splitlines()) - 1) if path.exists() else 0


def test_twenty_viewers_survive_an_oca_kill(tmp_path, procs):
    url = start_world(tmp_path, procs)
    wait_heartbeats(url["control"], {"oca1", "oca2"})
    deadline = time.monotonic() + 10
    while get_json(f"{url['control']}/health")["catalog_check"] == "pending":
        assert time.monotonic() < deadline, "origin catalog check did not finish"
        time.sleep(0.2)
    assert get_json(f"{url['control']}/health")["catalog_check"] == "ok"
    # --push-fill pushed a plan to each OCA once their heartbeats gave the capacities
    deadline = time.monotonic() + 15
    while not all(get_json(f"{url[n]}/fill/status").get("plan_id", 0) >= 1
                  for n in ("oca1", "oca2")):
        assert time.monotonic() < deadline, "--push-fill pushed no plan"
        time.sleep(0.2)
    assert all(get_json(f"{url[n]}/fill/status")["total"] % (5 * N_SEGMENTS) == 0
               for n in ("oca1", "oca2"))  # whole titles: 5 rungs x N segments
    push = get_json(f"{url['control']}/fill/push", {"ocas": ["oca1"],
                                                     "segments_per_title": N_SEGMENTS})
    assert push["ok"] and push["results"]["oca1"]["status"] == 202, push
    assert push["results"]["oca1"]["sources"] == [url["oca2"], url["origin"]]

    chunk_log, session_log = tmp_path / "chunks.csv", tmp_path / "sessions.jsonl"
    player = procs.start("player", [
        "appliances.player", "--control", url["control"], "--viewers", str(N_VIEWERS),
        "--workload", "zipf", "--seed", "3", "--abr", "bba", "--segments", str(N_SEGMENTS),
        "--chunk-log", str(chunk_log), "--session-log", str(session_log), "--speed", "4",
        "--max-buffer-s", "10", "--ramp-s", "1", "--reprobe-segments", "3",
        "--max-wall-s", "60", "--account-prefix", "lo"], ready=False)
    deadline = time.monotonic() + 30
    while count_rows(chunk_log) < N_VIEWERS * 3 and time.monotonic() < deadline:
        assert player.poll() is None, player.stderr.read()
        time.sleep(0.05)
    procs.procs["oca1"].send_signal(signal.SIGKILL)
    kill_unix = time.time()
    procs.procs["oca1"].wait(timeout=5)
    rc = player.wait(timeout=75)
    player.stderr.seek(0)
    assert rc == 0, player.stderr.read()[-3000:]

    sessions = [json.loads(line) for line in session_log.read_text().splitlines()]
    assert len(sessions) == N_VIEWERS
    assert all(s["status"] == "ok" for s in sessions), [s["error"] for s in sessions]
    assert all(s["segments_verified"] == N_SEGMENTS and s["hash_failures"] == 0
               for s in sessions)
    assert all(s["telemetry_posted"] for s in sessions)

    with open(chunk_log, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == N_VIEWERS * N_SEGMENTS
    per_viewer: dict[str, list[int]] = {}
    for r in rows:
        per_viewer.setdefault(r["viewer"], []).append(int(r["index"]))
    assert all(sorted(v) == list(range(N_SEGMENTS)) for v in per_viewer.values())
    assert any(r["server"] == "oca1" for r in rows), "the top-ranked OCA served nothing"
    fallback_rows = [r for r in rows if r["fallback"] == "1"]
    assert fallback_rows, "the kill produced no fallback rows"
    assert all(r["server"] != "oca1" for r in fallback_rows)
    # a killed process's socket buffers still drain; a request sent after the kill is never answered
    assert all(r["server"] != "oca1" for r in rows if float(r["request_unix"]) > kill_unix + 0.05)
    assert all(float(r["request_unix"]) <= float(r["time"]) for r in rows)
    # plain HTTP: new connections are "tcp" with a connect time and no TLS time
    assert {r["conn"] for r in rows} <= {"tcp", "reused"} and any(r["conn"] == "tcp" for r in rows)
    assert all(r["tls_ms"] == "" and (r["connect_ms"] == "") == (r["conn"] == "reused") for r in rows)
    assert all(s["control_conn"] == "tcp" and s["control_tls_ms"] == "" for s in sessions)
    assert sum(s["failed_attempts"] for s in sessions) >= len(
        {r["viewer"] for r in fallback_rows})

    assert get_json(f"{url['control']}/telemetry/count")["count"] == N_VIEWERS
    telemetry = (tmp_path / "telemetry.jsonl").read_text().splitlines()
    assert sorted(json.loads(t)["viewer"] for t in telemetry) == sorted(
        s["viewer"] for s in sessions)

    control = procs.procs["control"]
    control.send_signal(signal.SIGTERM)
    assert control.wait(timeout=10) == 0


def test_player_rejects_bad_hashes_falls_back_and_reprobes(tmp_path, procs):
    """A flaky top OCA (corrupt bytes twice, then a hang, then a 503, then good): the player
    never accepts a bad segment, falls back to the origin, and returns after re-probing."""
    import asyncio

    import aiohttp
    from aiohttp import web
    from aiohttp.test_utils import TestServer

    from appliances.abr import make_abr
    from appliances.content import Catalog, CatalogSpec
    from appliances.control import build_control
    from contracts.deployment import parse_deployment
    from appliances.player_session import SessionConfig, ViewerSession

    catalog = Catalog(CatalogSpec(**CATALOG))
    procs.start("origin", ["appliances.origin", "--listen", "127.0.0.1:0", *CATALOG_FLAGS])
    origin_url = "http://" + procs.ready_addr["origin"]
    served = []

    async def flaky(request: web.Request) -> web.Response:
        m = request.match_info
        t, k, i = m["t"], int(m["k"]), int(m["i"])
        served.append(i)
        data = catalog.segment_bytes(t, k, i)
        if len(served) <= 2:
            return web.Response(body=bytes([data[0] ^ 1]) + data[1:])  # right size, wrong hash
        if len(served) == 3:
            await asyncio.sleep(2.0)  # longer than the player's segment timeout
        if len(served) == 4:
            return web.json_response({"error": "overloaded"}, status=503)
        return web.Response(body=data)

    async def main() -> tuple[ViewerSession, list[dict]]:
        app = web.Application()
        app.add_routes([web.get("/v/{t}/{k}/{i}", flaky)])
        async with TestServer(app, host="127.0.0.1") as fsrv:
            dep = parse_deployment({
                "ocas": [{"name": "flaky", "tier": "embedded",
                          "url": f"http://127.0.0.1:{fsrv.port}",
                          "serves": ["127.0.0.0/8"], "distance_hops": 1, "rtt_ms": 1}],
                "origin": {"name": "origin", "url": origin_url}, "catalog": CATALOG})
            cp = build_control(dep, bytes(range(32)))
            cp.registry.update("flaky", {"name": "flaky", "status": "ok"}, time.time())
            async with TestServer(cp.app, host="127.0.0.1") as csrv:
                rows: list[dict] = []
                cfg = SessionConfig(control_url=f"http://127.0.0.1:{csrv.port}",
                                    abr=make_abr("tput"), segments=10, speed=20,
                                    max_buffer_s=12, reprobe_segments=2, reprobe_s=1e6,
                                    read_timeout_s=0.5, segment_timeout_s=1.0)
                s = ViewerSession("t-0001", "t0001", cfg, rows.append)
                async with aiohttp.ClientSession() as http:
                    await s.run(http)
                return s, rows

    s, rows = asyncio.run(main())
    assert s.status == "ok" and len(rows) == 10
    assert s.hash_failures == 2 and s.failed_attempts == 4
    assert [r["server"] for r in rows] == ["origin"] * 8 + ["flaky"] * 2
    assert [r["fallback"] for r in rows] == [1] * 8 + [0] * 2
    assert served == [0, 2, 4, 6, 8, 9]  # probes at segments 2, 4, 6 and 8, then it stays
    summary = s.summary("tput")
    assert summary["segments_verified"] == 10
    assert summary["servers"] == {"origin": 8, "flaky": 2}
    kinds = [e.split(":")[1].strip() for e in summary["errors"]]
    assert kinds[:2] == ["SegmentError", "SegmentError"] and "HTTP 503" in summary["errors"][3]
    assert "Timeout" in summary["errors"][2]


def test_control_flags_an_origin_with_another_catalog(tmp_path, procs):
    import asyncio

    from appliances.control import build_control, check_origin_catalog
    from contracts.deployment import parse_deployment

    procs.start("origin", ["appliances.origin", "--listen", "127.0.0.1:0", "--titles", "9"])
    origin = "http://" + procs.ready_addr["origin"]
    dep = parse_deployment({"ocas": [], "origin": {"name": "origin", "url": origin},
                            "catalog": CATALOG})
    cp = build_control(dep, bytes(range(32)))
    assert asyncio.run(check_origin_catalog(cp, origin, wait_s=5)) == "mismatch"
    dep_ok = parse_deployment({"ocas": [], "origin": {"name": "origin", "url": origin},
                               "catalog": {"n_titles": 9}})
    assert asyncio.run(check_origin_catalog(build_control(dep_ok, bytes(range(32))),
                                            origin, wait_s=5)) == "ok"
