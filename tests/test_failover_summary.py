"""Pure parts of the failover scenario on small synthetic tidy tables (no root)."""
from scenarios import failover
from scenarios.logs import resolve_servers
from harness.rundir import write_csv

TIERS = {"i1oca1": "embedded", "nfxoca1": "ixp", "origin": "origin"}


def chunk(t, server, viewer="v0", tier=None, kbps=3000, rebuffer_s=0.0, fallback=0, index=0):
    return {"arm": "manifest", "time": t, "viewer": viewer, "title": "t0001", "index": index, "kbps": kbps,
            "bytes": 1000, "buffer_s": 10.0, "rebuffer_s": rebuffer_s, "server": server,
            "tier": tier or TIERS.get(server, "unknown"), "fallback": fallback, "client": "198.18.1.10"}


def test_resolve_servers_maps_anycast_chunks_to_the_access_log_that_served_them():
    chunks = [chunk(100.0, "anycast", index=3, tier="embedded"), chunk(200.0, "anycast", index=4)]
    access = [
        {"server": "i1oca1", "ts": 99.9, "client": "198.18.1.10", "path": "/v/t0001/3000/3", "status": 200},
        {"server": "nfxoca1", "ts": 150.0, "client": "198.18.1.10", "path": "/v/t0001/3000/3", "status": 200},
        {"server": "i1oca1", "ts": 199.0, "client": "198.18.1.10", "path": "/v/t0001/3000/4", "status": 503},
        {"server": "origin", "ts": 200.1, "client": "198.18.1.10", "path": "/v/t0001/3000/4", "status": 200},
        {"server": "nfxoca1", "ts": 200.0, "client": "198.18.1.11", "path": "/v/t0001/3000/4", "status": 200},
    ]
    out = resolve_servers(chunks, access, TIERS)
    assert [(c["pathway"], c["server"], c["tier"]) for c in out] == [
        ("anycast", "i1oca1", "embedded"), ("anycast", "origin", "origin")]


def test_resolve_servers_keeps_known_servers_and_marks_unmatched():
    out = resolve_servers([chunk(1.0, "nfxoca1"), chunk(5.0, "anycast")], [], TIERS)
    assert [(c["server"], c["pathway"]) for c in out] == [("nfxoca1", "nfxoca1"), ("unresolved", "anycast")]


def test_recovery_measures_kill_to_first_chunk_from_another_server():
    chunks = [chunk(8.0, "i1oca1"), chunk(9.0, "i1oca1"), chunk(12.5, "nfxoca1", rebuffer_s=0.5, fallback=1),
              chunk(14.0, "nfxoca1", fallback=1),
              chunk(9.5, "nfxoca1", viewer="v1"), chunk(13.0, "nfxoca1", viewer="v1"),  # not on the victim
              chunk(9.0, "i1oca1", viewer="v2")]  # never recovered before t_end
    rec = failover.recovery(chunks, 10.0, "i1oca1", t_end=20.0)
    assert rec == [{"viewer": "v0", "recover_s": 2.5, "first_server": "nfxoca1", "rebuffer_s": 0.5,
                    "fallback_chunks": 2},
                   {"viewer": "v2", "recover_s": None, "first_server": None, "rebuffer_s": 0.0,
                    "fallback_chunks": 0}]


def test_summarize_rows_per_arm_and_kill_with_extra_transit(tmp_path):
    """extra_transit_mb: viewers' bytes from the origin after a kill, beyond the pre-kill origin
    rate; the kernel's transit counters (OCA fill included) stay beside it, not in it."""
    chunks = [{**chunk(1.0, "origin"), "bytes": 500_000}, chunk(5.0, "i1oca1"),
              {**chunk(10.5, "i1oca1"), "download_ms": 900.0},  # requested before the kill, drained after
              chunk(12.0, "nfxoca1", fallback=1), chunk(16.0, "nfxoca1"),
              {**chunk(22.0, "origin", fallback=1, rebuffer_s=1.5), "bytes": 6_000_000},
              {**chunk(26.0, "origin"), "bytes": 7_000_000}]
    write_csv(tmp_path / "chunks.csv", chunks)
    write_csv(tmp_path / "events.csv", [
        {"arm": "manifest", "event": "embedded_kill", "victim": "i1oca1", "tier": "embedded", "t_unix": 10.0},
        {"arm": "manifest", "event": "ixp_kill", "victim": "nfxoca1", "tier": "ixp", "t_unix": 20.0}])
    write_csv(tmp_path / "phases.csv", [  # a cold OCA pulling through transit makes "pre" heavy
        {"arm": "manifest", "phase": "pre", "duration_s": 10.0, "transit_bytes": 30_000_000},
        {"arm": "manifest", "phase": "embedded_kill", "duration_s": 10.0, "transit_bytes": 1_000_000},
        {"arm": "manifest", "phase": "ixp_kill", "duration_s": 20.0, "transit_bytes": 14_000_000}])
    rows = failover.summarize(tmp_path)
    assert [(r["arm"], r["event"]) for r in rows] == [("manifest", "embedded_kill"), ("manifest", "ixp_kill")]
    emb, ixp = rows
    assert emb["recover_s_median"] == 2.0 and emb["ixp_share_after"] == 0.667
    assert emb["victim_mb_after"] == 0.001 and emb["victim_requests_after"] == 0
    assert emb["origin_mb_after"] == 0.0 and emb["extra_transit_mb"] == -0.5  # 0.05 MB/s x 10 s expected
    assert ixp["recover_s_max"] == 2.0 and ixp["rebuffer_s"] == 1.5 and ixp["origin_share_after"] == 1.0
    assert ixp["origin_mb_after"] == 13.0 and ixp["extra_transit_mb"] == 12.0  # 13 MB - 0.05 MB/s x 20 s
    assert ixp["transit_mb_after"] == 14.0 and ixp["pre_transit_mb"] == 30.0
    late = {**chunk(21.0, "nfxoca1"), "download_ms": 500.0}  # asked at 20.5, after the kill at 20
    assert failover.requested_unix(late) == 20.5  # a run saved before request_unix
    # the player's own send time wins: hashing and the event loop after the body do not count
    assert failover.requested_unix({**late, "request_unix": "19.9"}) == 19.9
    assert (tmp_path / "summary.csv").exists() and (tmp_path / "failover.png").stat().st_size > 0
    table = failover.format_table(rows)
    assert "embedded_kill" in table and "extra_transit_mb" in table


def test_resolve_servers_prefers_the_node_header_and_keeps_the_log_join_as_cross_check():
    chunks = [{**chunk(100.0, "anycast", index=3), "node": "nfxoca1"},
              {**chunk(200.0, "anycast", index=4), "node": "nfxoca1"},
              {**chunk(300.0, "anycast", index=5), "node": "elsewhere"}]
    access = [{"server": "nfxoca1", "ts": 100.2, "client": "198.18.1.10", "path": "/v/t0001/3000/3", "status": 200},
              {"server": "origin", "ts": 300.1, "client": "198.18.1.10", "path": "/v/t0001/3000/5", "status": 200}]
    out = resolve_servers(chunks, access, TIERS)
    assert [(c["server"], c["log_server"], c["tier"]) for c in out] == [
        ("nfxoca1", "nfxoca1", "ixp"),  # both agree
        ("nfxoca1", "", "ixp"),  # no log row (e.g. the log line was lost with a killed OCA)
        ("origin", "origin", "origin")]  # an unknown node name: the log join decides
