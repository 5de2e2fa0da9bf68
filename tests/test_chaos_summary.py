"""scenarios.chaos's pure summary on synthetic tables (no root): sessions affected, recovery,
rebuffer, bytes moved to other tiers, corrupted bytes, sessions lost, and the verdict."""
from __future__ import annotations

import pandas as pd

from scenarios.chaos import SETTLE_S, fault_rows, flow_diff, format_table, summarize, verdict

T0 = 1_000_000.0
SEG_BYTES = 500_000


def _chunk(viewer, index, t, server="i2oca1", tier="embedded", rebuffer_s=0.0, fallback=0, reason=""):
    return {"arm": "chaos", "viewer": viewer, "index": index, "time": T0 + t, "bytes": SEG_BYTES,
            "kbps": 1050, "rebuffer_s": rebuffer_s, "server": server, "tier": tier,
            "fallback": fallback, "fallback_reason": reason}


def _session(viewer, start, end, status="ok", first="i2oca1", hash_failures=0):
    return {"arm": "chaos", "viewer": viewer, "status": status, "started_unix": T0 + start,
            "ended_unix": T0 + end, "first_location": first, "hash_failures": hash_failures}


def _event(fault, kind, target, start, restored, **extra):
    return {"arm": "chaos", "fault": fault, "kind": kind, "target": target, "params": "{}",
            "start_unix": T0 + start, "applied_unix": T0 + start + 0.01, "end_unix": T0 + restored - 1,
            "restored_unix": T0 + restored, **extra}


def _tables():
    """An OCA kill at +20 s (restored +27 s) and a control-plane kill at +50 s (restored +57 s)."""
    chunks = [_chunk("a", i, 2 + 4 * i) for i in range(4)]                     # +2..+14, embedded
    chunks += [_chunk("a", 4, 18)]
    chunks += [_chunk("a", 5, 21.5, "nfxoca1", "ixp", rebuffer_s=0.5, fallback=1, reason="error")]
    chunks += [_chunk("a", i, 18 + 4 * (i - 4), "nfxoca1", "ixp", fallback=1, reason="error") for i in (6, 7)]
    chunks += [_chunk("b", i, 40 + 4 * i, "i1oca1") for i in range(8)]           # plays through +50..+57
    chunks += [_chunk("d", i, 58 + 4 * i, "i1oca1") for i in range(3)]           # first chunk +58
    sessions = [_session("a", 1, 30), _session("b", 39, 70, first="i1oca1"),
                _session("c", 52, 55, status="failed", first=None),                # login refused
                _session("d", 56, 70, first="i1oca1")]
    failures = [{"arm": "chaos", "viewer": "a", "index": 5, "pathway": "i2oca1",
                 "error": "ClientConnectorError: refused", "hash_failure": 0}]
    events = [_event("f0", "oca_kill", "i2oca1", 20, 27),
              _event("f1", "control_plane_kill", "ctl", 50, 57)]
    return [pd.DataFrame(x) for x in (events, chunks, sessions, failures)]


def _by_fault(rows):
    return {r["fault"]: r for r in rows}


def test_oca_kill_window():
    r = _by_fault(fault_rows(*_tables()))["f0"]
    assert r["window_s"] == 7 + SETTLE_S
    assert r["sessions_affected"] == 1 and r["sessions_lost"] == 0 and r["starts_failed"] == 0
    assert r["recovery_s"] == 1.5           # the fetch that ended the failure, at +21.5
    assert r["rebuffer_s"] == 0.5 and r["failed_fetches"] == 1
    # chunks 5, 6, 7 (+21.5, +26, +30 within +20..+32) came from the IXP site, first was embedded
    assert r["moved_mb"] == 3 * SEG_BYTES / 1e6 and r["moved_mb_before"] == 0.0
    assert r["corrupted_bytes"] == 0


def test_control_plane_kill_new_session_fails_cleanly_started_one_continues():
    r = _by_fault(fault_rows(*_tables()))["f1"]
    assert r["sessions_started"] == 2 and r["starts_failed"] == 1   # c failed, d started at +56
    assert r["sessions_lost"] == 0                                   # b went on playing
    assert r["recovery_s"] == 8.0                                    # d's first chunk at +58
    assert r["sessions_affected"] == 1                               # c ended failed in the window
    assert verdict(fault_rows(*_tables()))[0]


def test_baseline_row_and_undisturbed_fault():
    events, chunks, sessions, failures = _tables()
    events = pd.concat([events, pd.DataFrame([_event("f2", "controller_kill", "controller", 80, 84,
                                                     stale_flows=0, missing_flows=0, fail_mode="secure")])])
    chunks = pd.concat([chunks, pd.DataFrame([_chunk("e", i, 78 + 3 * i, "i1oca1") for i in range(5)])])
    sessions = pd.concat([sessions, pd.DataFrame([_session("e", 77, 95, first="i1oca1")])])
    rows = fault_rows(events, chunks, sessions, failures)
    assert rows[0]["fault"] == "baseline" and rows[0]["sessions_affected"] == 0
    r = _by_fault(rows)["f2"]
    assert r["sessions_affected"] == 0 and r["recovery_s"] == 0.0 and r["stale_flows"] == 0
    text = format_table(rows)
    assert "fail mode secure" in text and "chaos verdict: PASS" in text


def test_lost_session_and_corrupted_bytes_fail_the_verdict():
    events, chunks, sessions, failures = _tables()
    sessions.loc[sessions["viewer"] == "b", "status"] = "failed"      # b dies during the kill
    sessions.loc[sessions["viewer"] == "b", "ended_unix"] = T0 + 53
    failures = pd.concat([failures, pd.DataFrame([{"arm": "chaos", "viewer": "a", "index": 6,
                                                   "pathway": "nfxoca1", "error": "SegmentError: SHA-256 mismatch",
                                                   "hash_failure": 1}])])
    sessions.loc[sessions["viewer"] == "a", "hash_failures"] = 1
    rows = fault_rows(events, chunks, sessions, failures)
    assert _by_fault(rows)["f1"]["sessions_lost"] == 1
    assert _by_fault(rows)["f0"]["corrupted_bytes"] == SEG_BYTES  # chunk 6 at +26: in f0's window
    ok, line = verdict(rows)
    assert not ok and f"corrupted bytes served {SEG_BYTES}" in line and "control-plane kill 1" in line


def test_no_recovery_when_no_session_starts_again():
    events, chunks, sessions, failures = _tables()
    sessions = sessions[sessions["viewer"] != "d"]
    chunks = chunks[chunks["viewer"] != "d"]
    assert _by_fault(fault_rows(events, chunks, sessions, failures))["f1"]["recovery_s"] is None


def test_summarize_from_saved_tables(tmp_path):
    for name, df in zip(("events", "chunks", "sessions", "failures"), _tables()):
        df.to_csv(tmp_path / f"{name}.csv", index=False)
    rows = summarize(tmp_path)
    assert [r["fault"] for r in rows] == ["baseline", "f0", "f1"]
    again = pd.read_csv(tmp_path / "summary.csv")
    assert list(again["fault"]) == ["baseline", "f0", "f1"] and list(again["recovery_s"])[1:] == [1.5, 8.0]


def test_summarize_without_failures(tmp_path):
    events, chunks, sessions, _ = _tables()
    for name, df in zip(("events", "chunks", "sessions"), (events, chunks, sessions)):
        df.to_csv(tmp_path / f"{name}.csv", index=False)
    (tmp_path / "failures.csv").write_text("")  # no failed attempt in the run
    r = _by_fault(summarize(tmp_path))["f0"]
    assert r["failed_fetches"] == 0 and r["recovery_s"] == 1.5  # the stall still marks the recovery


def test_flow_diff():
    before = {"s1": ["a", "b"], "s2": ["c"]}
    assert flow_diff(before, {"s1": ["b", "a"], "s2": ["c"]}) == {"stale_flows": 0, "missing_flows": 0}
    assert flow_diff(before, {"s1": ["a", "x"], "s2": []}) == {"stale_flows": 1, "missing_flows": 2}
