"""Pure parts of the bgp scenario's viewer bytes (no root): paths from the plan, chunks into
phase windows by source and path, the log beside the link counters, and the agreement gate."""
from harness.rundir import write_csv
from scenarios import bgp as sc
from scenarios import bgp_bytes as bb

WINDOWS = [{"phase": "steady", "window": "settled", "t_start": 0, "t_end": 10},
           {"phase": "ixp_link_down", "window": "converging", "t_start": 10, "t_end": 12},
           {"phase": "ixp_link_down", "window": "settled", "t_start": 12, "t_end": 20}]
PATHS = {"i1oca1": "isp", "nfxoca1": "ixp", "origin": "transit"}


def _chunk(t, viewer, server, n):
    tier = {"i1oca1": "embedded", "nfxoca1": "ixp", "origin": "origin"}[server]
    return {"time": t, "viewer": viewer, "server": server, "tier": tier, "bytes": n, "via": PATHS[server]}


def test_source_paths_follow_the_plan_across_isp1s_border():
    from topologies.catalog import metro
    paths = bb.source_paths(metro(), "isp1", ["i1oca1", "nfxoca1", "origin", "i2oca1"], "i1v1")
    assert paths == {"i1oca1": "isp", "nfxoca1": "ixp", "origin": "transit", "i2oca1": "ixp"}


def test_window_of_is_half_open_and_none_outside():
    assert bb.window_of(0, WINDOWS) == ("steady", "settled")
    assert bb.window_of(10, WINDOWS) == ("ixp_link_down", "converging")
    assert bb.window_of(20, WINDOWS) is None and bb.window_of(-1, WINDOWS) is None


def test_byte_rows_by_window_source_and_path_with_new_sessions():
    chunks = [_chunk(1, "a", "i1oca1", 100), _chunk(2, "b", "nfxoca1", 200), _chunk(11, "b", "nfxoca1", 50),
              _chunk(13, "b", "origin", 300), _chunk(14, "c", "origin", 400), _chunk(30, "c", "origin", 999)]
    sessions = [{"viewer": "a", "started_unix": 0.5}, {"viewer": "b", "started_unix": 1.0},
                {"viewer": "c", "started_unix": 12.5}]
    rows = bb.byte_rows(chunks, sessions, WINDOWS)
    got = {(r["phase"], r["window"], r["source"], r["path"]): (r["chunks"], r["log_bytes"], r["new_session_bytes"])
           for r in rows}
    assert got == {("steady", "settled", "embedded", "isp"): (1, 100, 100),
                   ("steady", "settled", "ixp", "ixp"): (1, 200, 200),
                   ("ixp_link_down", "converging", "ixp", "ixp"): (1, 50, 0),
                   # b's session began before the window (it failed over), c's after steering
                   ("ixp_link_down", "settled", "origin", "transit"): (2, 700, 400)}
    assert [r["phase"] for r in rows][:2] == ["steady", "steady"]  # window order, not alphabetical


def _links(relay_ixp="", relay_transit=""):
    return [{"phase": "steady", "window": "settled", "path": "ixp", "relay_payload_bytes": relay_ixp,
             "kernel_wire_bytes": 2_200_000},
            {"phase": "steady", "window": "settled", "path": "transit", "relay_payload_bytes": relay_transit,
             "kernel_wire_bytes": 30_000}]


BY = [{"phase": "steady", "window": "settled", "source": "ixp", "path": "ixp", "log_bytes": 2_000_000,
       "new_session_bytes": 0, "chunks": 3}]
# the servers sent one response more than the players logged (its player had given up)
ACCESS = [{"ts": t, "status": st, "bytes": n, "via": "ixp"}
          for t, st, n in ((1, 200, 1_000_000), (2, 200, 1_000_000), (3, 200, 500_000), (4, 404, 90), (30, 200, 7))]


def test_path_rows_put_log_sent_and_counters_side_by_side_and_total_them():
    rows = bb.path_rows(BY, _links(2_010_000, 0), WINDOWS[:1], ACCESS)
    steady = {r["path"]: r for r in rows if r["phase"] == "steady"}
    total = {r["path"]: r for r in rows if r["phase"] == "all"}
    assert steady["ixp"]["gap_pct"] == 0.5 and steady["ixp"]["kernel_wire_bytes"] == 2_200_000
    assert steady["ixp"]["sent_bytes"] == 2_500_000 and steady["ixp"]["sent_gap_pct"] == -19.6
    assert steady["transit"]["gap_pct"] == ""  # under MIN_BYTES: no meaningful ratio
    assert total["ixp"]["relay_payload_bytes"] == 2_010_000 and total["ixp"]["log_bytes"] == 2_000_000
    assert total["ixp"]["sent_bytes"] == 2_500_007  # the response logged after the last window too
    assert bb.agreement(rows) == {"path_gap_pct": 0.5, "paths_agree": True}
    # the link carried a response nobody watched: between received and sent, still agreed
    assert bb.agreement(bb.path_rows(BY, _links(2_500_000, 0), WINDOWS[:1], ACCESS))["paths_agree"] is True
    # without relays (netem) there is no payload counter: no gap, no verdict
    bare = bb.path_rows(BY, _links(), WINDOWS[:1], ACCESS)
    assert all(r["relay_payload_bytes"] == "" and r["gap_pct"] == "" for r in bare)
    assert bb.agreement(bare) == {"path_gap_pct": "", "paths_agree": None}


def test_agreement_fails_when_the_link_carried_more_than_sent_or_less_than_received():
    more = bb.path_rows(BY, _links(2_600_000, 0), WINDOWS[:1], ACCESS)  # 4% more than the servers sent
    assert bb.agreement(more) == {"path_gap_pct": 30.0, "paths_agree": False}
    less = bb.path_rows(BY, _links(1_960_000, 0), WINDOWS[:1], ACCESS)  # 2% less than the players got
    assert bb.agreement(less) == {"path_gap_pct": 2.0, "paths_agree": False}


def test_summarize_adds_viewer_bytes_from_saved_tables(tmp_path):
    events = [{"event": e, "t_unix": 100.0 + i, "bgp_converged_s": 2.5, "steering_s": 3.0}
              for i, e in enumerate(sc.EVENTS)]
    traffic = [{"phase": p, "speaker": "i1br", "t_start": 0, "t_end": 4, "duration_s": 4.0,
                "bytes_received": 100, "frr_messages_received": 5, "frr_updates_received": 1} for p in sc.PHASES]
    chunks = [_chunk(1, "a", "i1oca1", 3_000_000), _chunk(2, "b", "nfxoca1", 2_000_000),
              _chunk(15, "c", "origin", 2_000_000)]
    access = [{"ts": c["time"], "status": 200, "bytes": c["bytes"], "via": c["via"]} for c in chunks]
    sessions = [{"viewer": v, "started_unix": t} for v, t in (("a", 0.5), ("b", 0.5), ("c", 13))]
    links = [{**r, "link": r["path"]} for r in _links(2_000_300, 0)] + [
        {"phase": "ixp_link_down", "window": w, "link": p, "path": p, "kernel_wire_bytes": 0,
         "relay_payload_bytes": 2_000_200 if (w, p) == ("settled", "transit") else 0}
        for w in bb.WINDOWS for p in bb.PATHS]
    for name, rows in (("events", events), ("bgp_traffic", traffic), ("windows", WINDOWS), ("chunks", chunks),
                       ("sessions", sessions), ("link_bytes", links), ("access", access)):
        write_csv(tmp_path / f"{name}.csv", rows)
    rows = {r["phase"]: r for r in sc.summarize(tmp_path)}
    assert (rows["steady"]["embedded_mb"], rows["steady"]["ixp_mb"], rows["steady"]["origin_mb"]) == (3.0, 2.0, 0.0)
    assert rows["steady"]["ixp_path_relay_mb"] == 2.0 and rows["steady"]["ixp_path_log_mb"] == 2.0
    down = rows["ixp_link_down"]
    assert (down["origin_mb"], down["new_origin_mb"], down["transit_path_relay_mb"], down["ixp_path_log_mb"]) == \
        (2.0, 2.0, 2.0, 0.0)
    assert down["paths_agree"] is True and down["path_gap_pct"] == 0.015
    assert (tmp_path / "bytes.csv").exists() and (tmp_path / "path_bytes.csv").exists()
    assert "ixp_path_relay_mb" in sc.format_table(list(rows.values())).splitlines()[0]
