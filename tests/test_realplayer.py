"""dash.js as a second player: the driver's pure parts (URL contract, integrity, rows in the
Python player's columns), then loopback: origin + OCA + control plane serving the small media
build (VP9 video and an Opus audio track, separate AdaptationSets), dash.js in headless Chromium
plays a title fully, video and audio, with 0 integrity failures, and the
Python BBA player plays the same title on the same services for comparison."""
from __future__ import annotations

import csv
import hashlib
import json

import pytest

from appliances import realplayer
from appliances.player import CHUNK_FIELDS
from tests.conftest import TEST_MEDIA
from tests.test_manifests import start_media_world
from tests.test_system_loopback import Procs, wait_heartbeats

BODY = b"segment bytes"
TABLE = {"100": [[len(BODY), hashlib.sha256(BODY).hexdigest()]] * 2}
LOCS = [{"pathway": "oca1", "base_url": "http://a:1/v/t0001/", "tier": "embedded"},
        {"pathway": "origin", "base_url": "http://o:2/v/t0001/", "tier": "origin"}]


def seg(url: str, stall_total_s: float = 0.0) -> dict:
    return {"url": url, "time_unix": 2.0, "request_unix": 1.0, "bytes": len(BODY),
            "download_ms": 5.0, "ttfb_ms": 1.0, "buffer_s": 2.0, "stall_total_s": stall_total_s}


def test_segment_urls_follow_the_v_contract():
    assert realplayer.segment_of("http://a:1/v/t0001/300/4?exp=1", "t0001") == (300, 4)
    assert realplayer.segment_of("http://a:1/v/t0002/300/4", "t0001") is None
    assert realplayer.segment_of("http://a:1/dash/t0001.mpd", "t0001") is None
    assert realplayer.segment_of("http://a:1/v/t0001/x/4", "t0001") is None


def test_integrity_counts_mismatches_and_http_failures():
    good = realplayer.check_bodies([("http://a:1/v/t0001/100/0?q", 200, BODY),
                                    ("http://a:1/steering/t0001", 200, b"{}")], "t0001", TABLE)
    assert (good["checked"], good["hash_failures"], good["failed_attempts"]) == (1, 0, 0)
    bad = realplayer.check_bodies([("http://a:1/v/t0001/100/1?q", 200, BODY + b"x"),
                                   ("http://a:1/v/t0001/100/9?q", 200, BODY),  # no such index
                                   ("http://a:1/v/t0001/100/0?q", 503, b""),
                                   ("http://a:1/v/t0001/100/1?q", 200, None)], "t0001", TABLE)
    assert (bad["checked"], bad["hash_failures"], bad["failed_attempts"]) == (2, 2, 2)
    assert "cut short" in bad["failures"][-1]


def test_cli_refuses_bad_arguments(capsys):
    with pytest.raises(SystemExit) as exc:
        realplayer.main(["--control", "http://x", "--viewer", "v", "--title", "t0001",
                         "--chunk-log", "c", "--session-log", "s", "--max-wall-s", "0"])
    assert exc.value.code == 2 and "--max-wall-s must be > 0" in capsys.readouterr().err


def test_rows_and_summary_use_the_python_players_columns():
    rec = {"segments": [seg("http://a:1/v/t0001/100/0?q"), seg("http://o:2/v/t0001/100/1?q", 0.5)],
           "stalls": [{"start_s": 3, "duration_s": 0.5}], "stall_total_s": 0.5, "startup_s": 0.8,
           "started_unix": 0.0, "ended_unix": 9.0, "steering_requests": 1, "error": ""}
    rows = realplayer.chunk_rows(rec, "v1", "t0001", LOCS, {"http://a:1/v/t0001/100/0?q": "oca1"})
    assert all(tuple(r) == CHUNK_FIELDS for r in rows)
    assert [(r["server"], r["fallback"], r["node"], r["rebuffer_s"]) for r in rows] == [
        ("oca1", 0, "oca1", 0.0), ("origin", 1, "", 0.5)]
    ok = {"checked": 2, "hash_failures": 0, "failed_attempts": 0, "failures": []}
    s = realplayer.session_summary(rec, rows, ok, "v1", "t0001", 2, 2.0)
    assert (s["status"], s["segments"], s["rebuffer_count"], s["startup_s"]) == ("ok", 2, 1, 0.8)
    assert s["servers"] == {"oca1": 1, "origin": 1} and s["fallback_chunks"] == 1
    short = realplayer.session_summary(rec, rows, ok, "v1", "t0001", 3, 2.0)
    assert short["status"] == "failed" and "played 2 of 3" in short["error"]
    tampered = {**ok, "hash_failures": 1, "failures": ["integrity http://a:1/v/t0001/100/0"]}
    assert realplayer.session_summary(rec, rows, tampered, "v1", "t0001", 2, 2.0)["status"] == "failed"
    audio = {**seg("http://a:1/v/t0001/32/0?q"), "media_type": "audio"}  # not a chunk row
    assert realplayer.chunk_rows({**rec, "segments": [audio, *rec["segments"]]}, "v1", "t0001",
                                 LOCS, {}) == realplayer.chunk_rows(rec, "v1", "t0001", LOCS, {})
    with pytest.raises(ValueError, match="/v/ contract"):
        realplayer.chunk_rows({**rec, "segments": [seg("http://a:1/x.mp4")]}, "v1", "t0001", LOCS, {})


@pytest.fixture(scope="module")
def av_build():
    """The tests' media build (video and audio tracks), once the real player can run here."""
    why = realplayer.missing_requirement()
    if why:  # before the encode: no build for a test that cannot run
        pytest.skip(f"the real player cannot run here: {why}")
    from appliances.media_encode import MediaSettings, build
    return build(MediaSettings(**TEST_MEDIA))


@pytest.mark.integration
def test_dashjs_plays_a_title_with_audio_over_loopback(tmp_path, av_build):
    procs = Procs(tmp_path)
    try:
        url = start_media_world(tmp_path, procs, av_build)
        wait_heartbeats(url["control"], {"oca1"})
        audio_kbps = json.loads((av_build / "index.json").read_text())["settings"]["audio_kbps"]
        # bounded: a session that cannot end within --max-wall-s fails, saying so
        _, cut = realplayer.play(url["control"], "lo-short", "t0001", max_wall_s=1)
        assert cut["status"] == "failed" and "did not end within 1 s" in cut["error"]
        shot, dash_chunks, dash_sessions = (tmp_path / n for n in (
            "player.png", "dashjs-chunks.csv", "dashjs-sessions.jsonl"))
        rc = realplayer.main(["--control", url["control"], "--viewer", "lo-dashjs", "--title",
                              "t0001", "--chunk-log", str(dash_chunks), "--session-log",
                              str(dash_sessions), "--screenshot", str(shot), "--max-wall-s", "90"])
        s = json.loads(dash_sessions.read_text())
        with open(dash_chunks) as f:
            reader = csv.DictReader(f)
            assert tuple(reader.fieldnames) == CHUNK_FIELDS
            rows = list(reader)
        assert (rc, s["status"]) == (0, "ok"), s["error"]
        print(f"dash.js {s['dashjs_version']}: startup {s['startup_s']:.3f} s, mean "
              f"{s['mean_kbps']:.0f} kbps, {s['segments']} segments, rebuffer {s['rebuffer_s']} s")
        assert s["hash_failures"] == 0 and s["failed_attempts"] == 0
        assert s["segments"] == 4
        # every video and every audio segment was fetched and verified (rows are video only)
        assert s["segments_verified"] >= 8 and audio_kbps not in {int(r["kbps"]) for r in rows}
        assert s["audio_decoded_bytes"] > 0 and s["video_decoded_bytes"] > 0
        assert s["servers"] == {"oca1": len(rows)}  # the steering document's first location
        assert {r["node"] for r in rows} == {"oca1"} and len(rows) >= 4
        assert {int(r["index"]) for r in rows} == {0, 1, 2, 3}
        assert s["telemetry_posted"] is True
        assert s["steering_reloads"] >= 1  # queryBeforeStart: dash.js asked the steering server
        assert shot.stat().st_size > 0

        # the Python BBA player on the same services: same summary keys
        chunks, sessions = tmp_path / "chunks.csv", tmp_path / "sessions.jsonl"
        player = procs.start("player", [
            "appliances.player", "--control", url["control"], "--viewers", "1", "--titles",
            "t0001", "--manifest", "dash", "--abr", "bba", "--chunk-log", str(chunks),
            "--session-log", str(sessions), "--max-wall-s", "60"], ready=False)
        assert player.wait(timeout=90) == 0
        py = json.loads(sessions.read_text().splitlines()[0])
        assert set(s) - {"dashjs_version", "dashjs_abr", "download_errors", "page_errors",
                            *realplayer.DECODED_KEYS} == set(py)
        with open(chunks) as f:
            assert tuple(csv.DictReader(f).fieldnames) == CHUNK_FIELDS
        print(f"python bba: startup {py['startup_s']:.3f} s, mean {py['mean_kbps']:.0f} kbps, "
              f"rebuffer {py['rebuffer_s']} s")
    finally:
        procs.stop_all()


@pytest.mark.integration
def test_dashjs_session_fails_on_a_tampered_segment(tmp_path, av_build):
    """The integrity gate: the last audio segment has its bytes changed (size kept) after the
    build recorded its SHA-256; the session must fail, naming the segment."""
    import shutil
    build = tmp_path / "build"
    shutil.copytree(av_build, build)
    audio_kbps = json.loads((build / "index.json").read_text())["settings"]["audio_kbps"]
    for seg_file in (build / "t0001").glob(f"{audio_kbps}/3.mp4"):
        data = bytearray(seg_file.read_bytes())
        data[-64:] = bytes(64)
        seg_file.write_bytes(bytes(data))
    procs = Procs(tmp_path)
    try:
        url = start_media_world(tmp_path, procs, build)
        wait_heartbeats(url["control"], {"oca1"})
        _, s = realplayer.play(url["control"], "lo-tamper", "t0001", max_wall_s=90)
        print(f"tampered: status {s['status']}, hash_failures {s['hash_failures']}, "
              f"failed_attempts {s['failed_attempts']}, error {s['error'][:200]}")
        assert s["status"] == "failed"
        assert s["hash_failures"] + s["failed_attempts"] >= 1
        assert s["errors"] and all(f"/t0001/{audio_kbps}/3?" in e for e in s["errors"])
    finally:
        procs.stop_all()
