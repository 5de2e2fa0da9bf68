"""Scenario `realclient`: the pure summary on saved tables (no root), then `ocalab run realclient
--quick` end to end on the emulated metro (root, chromium): one row per player and path, 0
integrity failures, and dash.js moving to the next location after the OCA kill."""
from __future__ import annotations

import csv
import os

import pytest

from harness.rundir import write_csv
from scenarios import realclient


def _chunk(session: str, t: float, server: str, kbps: int = 400) -> dict:
    return {"arm": "embedded", "player": "dashjs", "session": session, "time": t, "kbps": kbps,
            "server": server, "bytes": 1000, "rebuffer_s": 0.0, "fallback": int(server != "i1oca1")}


def _session(arm: str, player: str, session: str, mean_kbps: float, hash_failures: int = 0) -> dict:
    return {"arm": arm, "player": player, "session": session, "status": "ok", "startup_s": 0.5,
            "mean_kbps": mean_kbps, "rebuffer_ratio": 0.0, "segments": 10, "hash_failures": hash_failures,
            "failed_attempts": 0, "bytes": 10_000}


def test_move_after_kill_finds_the_first_chunk_from_another_location():
    chunks = [_chunk("k", 1.0, "i1oca1"), _chunk("k", 2.0, "i1oca1"), _chunk("k", 5.5, "nfxoca1"),
              _chunk("k", 7.0, "nfxoca1")]
    got = realclient.move_after_kill(chunks, 3.0, "i1oca1")
    assert got == {"killed": "i1oca1", "victim_chunks_before_kill": 2, "moved_to": "nfxoca1",
                   "move_s": 2.5}
    # no chunk from another location after the kill: no move, not a made-up one
    stuck = realclient.move_after_kill(chunks[:2], 3.0, "i1oca1")
    assert stuck["moved_to"] is None and stuck["move_s"] is None


def test_steering_out_is_the_first_document_after_the_kill_without_the_victim_first():
    rows = [{"ts": 1.0, "account": "k", "ranked": ["a", "b"]},
            {"ts": 2.5, "account": "other", "ranked": ["b"]},  # another session's: not this one
            {"ts": 2.2, "account": "k", "ranked": ["a", "b"]},  # after the kill, victim still first
            {"ts": 3.0, "account": "k", "ranked": ["b"]},
            {"ts": 0.5, "account": "k", "ranked": ["b"]}]  # before the kill
    assert realclient.steering_out_after(rows, 2.0, "a", "k") == 3.0
    assert realclient.steering_out_after(rows[:3], 2.0, "a", "k") is None


def test_summarize_rebuilds_the_summary_from_saved_tables(tmp_path):
    sessions = [_session("embedded", "dashjs", "dashjs-embedded", 1100.0),
                _session("embedded", "python", "python-embedded", 1000.0),
                _session("origin", "dashjs", "dashjs-origin", 900.0, hash_failures=1),
                _session("origin", "python", "python-origin", 1000.0),
                _session("embedded", "dashjs", realclient.KILL_SESSION, 800.0)]
    chunks = [_chunk(realclient.KILL_SESSION, 1.0, "i1oca1"), _chunk(realclient.KILL_SESSION, 4.0, "nfxoca1")]
    write_csv(tmp_path / "sessions.csv", sessions)
    write_csv(tmp_path / "chunks.csv", chunks)
    write_csv(tmp_path / "events.csv", [{"arm": "embedded", "session": realclient.KILL_SESSION,
                                         "event": "kill", "victim": "i1oca1", "t_unix": 2.0,
                                         "steering_out_unix": 2.75}])
    rows = realclient.summarize(tmp_path)
    assert [(r["player"], r["path"]) for r in rows] == [
        ("dashjs", "embedded"), ("python", "embedded"), ("dashjs", "origin"), ("python", "origin"),
        ("dashjs", "embedded, OCA killed")]
    assert rows[0]["kbps_vs_python_pct"] == 10.0 and rows[2]["kbps_vs_python_pct"] == -10.0
    assert [r["integrity_failures"] for r in rows] == [0, 0, 1, 0, 0]
    assert (rows[-1]["moved_to"], rows[-1]["move_s"], rows[-1]["steering_out_s"]) == ("nfxoca1", 2.0, 0.75)
    with open(tmp_path / "summary.csv") as f:
        assert len(list(csv.DictReader(f))) == 5
    assert "move_s" in realclient.format_table(rows)
    assert " failed: " not in realclient.format_table(rows)


def test_a_failed_session_prints_why(tmp_path):
    bad = {**_session("embedded", "dashjs", "dashjs-embedded", 1100.0), "status": "failed",
           "error": "the session did not end within 120 s"}
    write_csv(tmp_path / "sessions.csv", [bad, _session("embedded", "python", "python-embedded", 1000.0)])
    write_csv(tmp_path / "chunks.csv", [_chunk("dashjs-embedded", 1.0, "i1oca1")])
    write_csv(tmp_path / "events.csv", [])
    rows = realclient.summarize(tmp_path)
    assert rows[0]["error"] == "the session did not end within 120 s" and rows[1]["error"] == ""
    assert "dashjs embedded failed: the session did not end within 120 s" in realclient.format_table(rows)


@pytest.mark.emulation
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (namespaces, OVS)")
def test_realclient_quick(tmp_path):
    from appliances.realplayer import missing_requirement
    if missing_requirement():
        pytest.skip(f"the real player cannot run here: {missing_requirement()}")
    from ocalab.cli import main
    assert main(["run", "realclient", "--quick", "--out", str(tmp_path)]) == 0
    (run_dir,) = list(tmp_path.glob("realclient-*"))
    with open(run_dir / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    by = {(r["player"], r["path"]): r for r in rows}
    assert set(by) == {(p, a) for p in realclient.PLAYERS for a in realclient.PATHS} | {
        ("dashjs", "embedded, OCA killed")}
    assert all(r["status"] == "ok" and r["integrity_failures"] == "0" for r in rows), \
        [(r["player"], r["path"], r["status"], r["integrity_failures"], r["error"]) for r in rows]
    assert len({r["segments"] for r in rows}) == 1  # every session played the whole title
    kill = by[("dashjs", "embedded, OCA killed")]
    # dash.js played from the embedded OCA until the kill, then from another location
    assert int(kill["victim_chunks_before_kill"]) >= 1
    assert kill["moved_to"] not in ("", kill["killed"]) and float(kill["move_s"]) >= 0
    # and the steering server ranked the killed OCA out for that session (the controller saw it)
    assert kill["steering_out_s"] != "" and float(kill["steering_out_s"]) >= 0
    assert (run_dir / "player-embedded.png").stat().st_size > 0
    # the same rows from the saved tables alone (no network)
    assert [r["path"] for r in realclient.summarize(run_dir)] == [r["path"] for r in rows]
