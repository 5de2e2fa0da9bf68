"""The web view's frames from data alone (no root, no network): topology, controller views,
who serves whom, the event log, chunk-log tailing, replay frames and their refusals."""
import json
import shutil
from pathlib import Path

import pytest

from controller.ocas import OcaRegistry, health_brief
from ocalab.web import frames as F
from ocalab.web import replay
from ocalab.web.live import ChunkTail
from topologies.catalog import by_name
from topologies.routes import path_links

PLAN = by_name("metro", {"isps": "1"})
REF = Path(__file__).resolve().parent.parent / "results" / "placement" / "rep1"


def chunk(session, host, t, server, kbps=750, buffer_s=8.0, nbytes=100_000, req=None, arm="embedded"):
    return {"viewer": session, "host": host, "time": str(t), "request_unix": str(t - 1 if req is None else req),
            "server": server, "tier": "embedded", "kbps": str(kbps), "buffer_s": str(buffer_s),
            "bytes": str(nbytes), "node": server, "arm": arm}


def test_topology_has_every_node_and_link_with_its_class():
    topo = F.topology(PLAN)
    assert {n["id"] for n in topo["nodes"]} == {n.name for n in PLAN.nodes}
    access = next(e for e in topo["edges"] if e["id"] == "i1v1:0-oci1lan:1")
    assert access == {"id": "i1v1:0-oci1lan:1", "source": "i1v1", "target": "oci1lan", "cls": "access",
                      "bw_mbps": 50.0}


def test_controller_views_become_panels_without_invented_figures():
    links = F.links_from_controller([
        {"name": "a", "rate_mbps": 3.5, "tx_mbps": 3.5, "rx_mbps": 0.1, "tx_bytes": 10, "rx_bytes": 5, "up": True},
        {"name": "b", "rate_mbps": None, "tx_mbps": None, "rx_mbps": None, "tx_bytes": None, "rx_bytes": None,
         "up": None}])
    assert links["a"] == {"mbps": 3.5, "tx_mbps": 3.5, "rx_mbps": 0.1, "bytes": 15, "up": True}
    assert links["b"]["bytes"] is None and links["b"]["mbps"] is None  # no sample yet: nothing shown
    view = {"ocas": [{"name": "i1oca1", "tier": "embedded", "status": "ok", "load": 0.2,
                      "health": {"hits": 3, "misses": 1, "used_bytes": 5, "capacity_bytes": 10,
                                 "fill": {"state": "done"}}},
                     {"name": "nfxoca1", "tier": "ixp", "status": "unreachable", "load": 0.0, "health": None}]}
    ocas = F.ocas_from_controller(view)
    assert ocas["i1oca1"]["hit_ratio"] == 0.75 and ocas["i1oca1"]["fill"] == "done"
    assert ocas["nfxoca1"]["hit_ratio"] is None and ocas["nfxoca1"]["used_bytes"] is None


def test_controller_ocas_view_carries_the_health_brief():
    reg = OcaRegistry()
    health = {"status": "ok", "load": 0.1, "used_bytes": 7, "capacity_bytes": 9, "active_streams": 1,
              "egress_mbps": 2.0, "counters": {"hits": 4, "misses": 2}, "fill": {"state": "running",
                                                                               "filled": 1, "total": 3}}
    reg.apply({"origin": {"name": "origin", "url": "http://198.19.10.11:8080"},
               "ocas": [{"name": "i1oca1", "tier": "embedded", "url": "http://198.18.1.100:8080",
                         "serves": None, "health": health, "probe": {"ok": True}}]}, 100.0)
    brief = reg.view(100.0)["ocas"][0]["health"]
    assert brief == {"used_bytes": 7, "capacity_bytes": 9, "active_streams": 1, "egress_mbps": 2.0,
                     "hits": 4, "misses": 2, "content_misses": 0,
                     "fill": {"state": "running", "filled": 1, "total": 3}}
    assert health_brief(None) is None


def test_serving_is_the_newest_recent_chunk_of_each_host():
    rows = [chunk("v-0", "i1v1", 100.0, "i1oca1"), chunk("v-0", "i1v1", 103.0, "nfxoca1", kbps=1750),
            chunk("v-1", "i1v1", 102.0, "i1oca1"), chunk("w-0", "i1v2", 90.0, "origin")]  # w-0: too old
    serving, sessions = F.serving_and_sessions(rows, now=104.0)
    assert serving == {"i1v1": {"server": "nfxoca1", "tier": "embedded", "session": "v-0", "t": 103.0}}
    assert [(s["session"], s["server"], s["kbps"]) for s in sessions] == [("v-0", "nfxoca1", 1750),
                                                                          ("v-1", "i1oca1", 750)]
    assert F.serving_and_sessions(rows, now=200.0) == ({}, [])


def test_event_log_records_changes_only():
    log = F.EventLog()
    oca = lambda status, fill: {"i1oca1": {"status": status, "fill": fill}}  # noqa: E731
    link = lambda up: {"l": {"up": up}}  # noqa: E731
    serve = lambda s: {"i1v1": {"server": s}}  # noqa: E731
    log.observe(1, link(True), oca("ok", "running"), serve("i1oca1"))
    log.observe(2, link(True), oca("ok", "running"), serve("i1oca1"))
    assert log.events == []
    log.observe(3, link(False), oca("unreachable", None), serve("nfxoca1"))
    log.observe(4, link(None), oca("unreachable", "done"), serve("nfxoca1"))
    assert [(e["kind"], e["text"]) for e in log.events] == [
        ("oca", "i1oca1: ok -> unreachable"), ("link", "l: down"), ("steering", "i1v1: i1oca1 -> nfxoca1"),
        ("fill", "i1oca1: fill running -> done")]
    log.arm(5, "ixp")
    log.observe(5, None, None, serve("origin"))
    assert log.events[-1]["text"] == "arm ixp plays"  # a new arm: no steering change across arms
    log.arm(6, "ixp")
    assert len(log.events) == 5


def test_chunk_tail_reads_complete_lines_once(tmp_path):
    logs = tmp_path / "arms" / "ixp" / "logs"
    logs.mkdir(parents=True)
    f = logs / "chunks-i1v1.csv"
    f.write_text("time,viewer,server\n1.0,v-0,i1oca1\n2.0,v-0,nfx")  # the last line is half written
    tail = ChunkTail(tmp_path)
    assert tail.read() == [{"time": "1.0", "viewer": "v-0", "server": "i1oca1", "host": "i1v1", "arm": "ixp"}]
    with f.open("a") as out:
        out.write("oca1\n")
    assert [r["server"] for r in tail.read()] == ["nfxoca1"]
    assert tail.read() == []
    assert ChunkTail(None).read() == [] and ChunkTail(tmp_path / "absent").read() == []


def test_replay_puts_each_chunks_bytes_on_its_plan_path():
    rows = [chunk("v-0", "i1v1", 10.5, "nfxoca1", nbytes=1_000_000, req=10.0),
            chunk("v-0", "i1v1", 13.0, "i1oca1", nbytes=2_000_000, req=11.0)]
    frames = replay.build_frames(PLAN, rows, [], [], [])
    assert [f["t"] for f in frames] == [11, 12, 13]
    last = frames[-1]["links"]
    for name in path_links(PLAN, "i1v1", PLAN.primary_ip("nfxoca1")):
        assert last[name]["bytes"] >= 1_000_000
    assert last["i1v1:0-oci1lan:1"]["bytes"] == 3_000_000  # both chunks cross the access link
    assert last["i1oca1:0-oci1lan:3"]["bytes"] == 2_000_000
    assert last["i1br:2-octrn:2"]["bytes"] == 0  # transit carried nothing
    assert frames[0]["links"]["nfxoca1:0-ocnfx:1"]["mbps"] == pytest.approx(8.0)  # 1 MB in 0.5 s of 1 s
    assert frames[-1]["serving"]["i1v1"]["server"] == "i1oca1"
    assert [e["text"] for e in frames[-1]["events"]] == ["arm embedded plays", "i1v1: nfxoca1 -> i1oca1"]
    assert replay.build_frames(PLAN, [], [], [], []) == []


def test_replay_of_the_reference_run_has_traffic_and_hit_ratios():
    data = replay.load(REF)
    assert data["manifest"]["scenario"] == "placement"
    frames = data["frames"]
    assert {f["arm"] for f in frames} >= {"origin", "ixp", "embedded"}
    busy = [f for f in frames if any((lk["mbps"] or 0) > 1 for lk in f["links"].values())]
    assert len(busy) > len(frames) / 2
    embedded = [f for f in frames if f["arm"] == "embedded" and f["serving"]]
    assert any(s["server"].startswith("i") for f in embedded for s in f["serving"].values())
    assert any(f["ocas"]["nfxoca1"]["hit_ratio"] is not None for f in frames)
    assert all(f["ocas"]["nfxoca1"]["status"] is None for f in frames)  # not saved: not shown


def test_replay_refuses_what_is_no_single_run(tmp_path):
    with pytest.raises(replay.ReplayError, match="no manifest.json"):
        replay.load(tmp_path)
    series = tmp_path / "series"
    shutil.copytree(REF, series / "rep1")
    (series / "manifest.json").write_text(json.dumps({"repeats": 1}))
    with pytest.raises(replay.ReplayError, match="--repeat series; replay one of: .*rep1"):
        replay.load(series)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "manifest.json").write_text("{}")
    with pytest.raises(replay.ReplayError, match="no chunks table"):
        replay.load(empty)


def test_cli_web_arguments():
    from ocalab.cli import build_parser
    p = build_parser()
    assert p.parse_args(["cli", "--web"]).web == 8765
    assert p.parse_args(["cli", "--web", "9000"]).web == 9000
    assert p.parse_args(["cli"]).web is None
    assert p.parse_args(["run", "placement", "--web", "0"]).web == 0
    assert p.parse_args(["web", "a", "b"]).run_dirs == [Path("a"), Path("b")]
    for bad in (["cli", "--web", "70000"], ["web", "x", "--port", "http"]):
        with pytest.raises(SystemExit):
            p.parse_args(bad)
