"""Real media: the per-title ladder rule and box splitting (pure), the cached ffmpeg build, and
the MediaCatalog that origin and OCAs serve from it."""
from __future__ import annotations

import hashlib
import json
import shutil
import struct
import subprocess

import pytest

from appliances.content import ContentError
from appliances.media import MediaCatalog
from appliances.media_encode import INDEX, MediaSettings, build, title_source
from appliances.media_ladder import (parse_psnr_db, select_ladder, split_fragments,
                                     vp9_codec_string)


def box(kind: str, payload: bytes = b"") -> bytes:
    return struct.pack(">I4s", 8 + len(payload), kind.encode()) + payload


# --- the ladder rule (pure) ---------------------------------------------------------------

def test_saturating_title_keeps_one_rung():
    assert select_ladder([(100, 60.0), (300, 63.0), (900, 64.0)]) == (100,)


def test_rising_title_keeps_every_rung_that_adds_enough():
    pts = [(100, 28.0), (200, 29.0), (400, 31.0), (800, 33.0), (1600, 36.0)]
    # 200 adds only 1 dB over 100; 400 adds 3 dB over 100; then 2 and 3 dB
    assert select_ladder(pts, min_gain_db=1.5) == (100, 400, 800, 1600)
    assert select_ladder(pts, min_gain_db=5.0) == (100, 800)


def test_ladder_stops_once_quality_is_enough_and_ignores_order():
    pts = [(800, 45.0), (100, 35.0), (400, 43.0), (200, 39.0)]
    assert select_ladder(pts, enough_db=42.0) == (100, 200, 400)


@pytest.mark.parametrize("pts", [[], [(100, 30.0), (100, 31.0)]])
def test_ladder_refuses_bad_points(pts):
    with pytest.raises(ValueError):
        select_ladder(pts)


# --- boxes, PSNR, codec strings (pure) ------------------------------------------------------

def test_split_fragments_keeps_init_and_one_fragment_per_moof():
    data = box("ftyp", b"iso5") + box("moov", b"x" * 10) + box("moof", b"a") + box("mdat", b"AA") \
        + box("moof", b"b") + box("mdat", b"BB") + box("mfra", b"idx")
    init, frags = split_fragments(data)
    assert init == box("ftyp", b"iso5") + box("moov", b"x" * 10)
    assert frags == [box("moof", b"a") + box("mdat", b"AA"), box("moof", b"b") + box("mdat", b"BB")]


@pytest.mark.parametrize("data", [box("moov") + box("mdat", b"x")[:-1],  # truncated
                                  box("ftyp") + box("moof") + box("mdat"),  # no moov
                                  box("ftyp") + box("moov")])  # no fragment
def test_split_fragments_refuses_bad_input(data):
    with pytest.raises(ValueError):
        split_fragments(data)


def test_psnr_and_codec_strings():
    assert parse_psnr_db("[Parsed_psnr_0 @ 0x1] PSNR y:30.1 u:40 v:41 average:31.25 min:2") == 31.25
    assert parse_psnr_db("PSNR y:inf u:inf v:inf average:inf min:inf max:inf") == 100.0
    with pytest.raises(ValueError):
        parse_psnr_db("no summary here")
    assert vp9_codec_string(320, 180, 24) == "vp09.00.11.08"
    assert vp9_codec_string(1280, 720, 30) == "vp09.00.31.08"
    with pytest.raises(ValueError):
        vp9_codec_string(7680, 4320, 60)


def test_title_sources_are_seeded_and_differ_per_title():
    s = MediaSettings()
    assert title_source(s, 1) == title_source(MediaSettings(), 1)
    assert [title_source(s, i)["pattern"] for i in range(4)] == list(s.patterns)
    assert title_source(MediaSettings(seed=2), 1)["video"] != title_source(s, 1)["video"]


@pytest.mark.parametrize("bad", [dict(duration_s=9, segment_s=2), dict(probe_kbps=(300, 100)),
                                 dict(patterns=("stil",)), dict(width=321), dict(n_titles=0),
                                 dict(audio_kbps=-1), dict(audio_kbps=200)])
def test_media_settings_refuse_bad_values(bad):
    with pytest.raises(ValueError):
        MediaSettings(**bad)


# --- the build (ffmpeg, cached) -------------------------------------------------------------

def test_simple_and_complex_titles_get_different_ladders(media_build):
    index = json.loads((media_build / INDEX).read_text())
    by_pattern = {t["pattern"]: t for t in index["titles"]}
    simple, complex_ = by_pattern["still"], by_pattern["fractal"]
    assert simple["ladder_kbps"] != complex_["ladder_kbps"]
    assert len(simple["ladder_kbps"]) < len(complex_["ladder_kbps"])
    assert max(simple["ladder_kbps"]) < max(complex_["ladder_kbps"])
    # the kept rungs are what the rule says about the measured probes
    for t in index["titles"]:
        assert tuple(t["ladder_kbps"]) == select_ladder([tuple(p) for p in t["probes"]])


def test_build_is_cached_by_settings(media_build):
    stamp = (media_build / INDEX).stat().st_mtime_ns
    settings = MediaSettings(**json.loads((media_build / INDEX).read_text())["settings"])
    assert build(settings, media_build.parent) == media_build
    assert (media_build / INDEX).stat().st_mtime_ns == stamp  # nothing re-encoded
    other = MediaSettings(**{**json.loads((media_build / INDEX).read_text())["settings"], "seed": 99})
    assert other.key("v") != settings.key("v") and settings.key("v") != settings.key("w")


def _probe(seg) -> dict:
    out = subprocess.run(["ffprobe", "-v", "error", "-show_entries",
                          "stream=codec_name:format=start_time,duration", "-of", "json", str(seg)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def test_segments_are_playable_vp9_and_opus_on_one_timeline(media_build):
    """Video and audio are separate tracks (separate rungs) whose segments share the timeline."""
    cat = MediaCatalog(media_build)
    title = "t0001"
    audio = cat.media_info(title)["audio"]
    assert cat.rungs_of(title) == cat.ladder_of(title) + (audio["kbps"],)
    assert audio["kbps"] not in cat.spec.ladder_kbps
    for kbps, codec in ((cat.ladder_of(title)[-1], "vp9"), (audio["kbps"], "opus")):
        probe = _probe(media_build / title / str(kbps) / "2.mp4")
        assert [s["codec_name"] for s in probe["streams"]] == [codec]
        # segment 2 of 2 s segments starts 4 s into the title: decode times continue
        assert float(probe["format"]["start_time"]) == pytest.approx(4.0, abs=0.1)
    # the audio ends where the video does (the encoder delay is cut from the tone)
    last = _probe(media_build / title / str(audio["kbps"]) / "3.mp4")
    assert float(last["format"]["duration"]) == pytest.approx(8.0, abs=0.001)
    data = cat.segment_bytes(title, audio["kbps"], 3)  # served and checked like a video rung
    assert hashlib.sha256(data).hexdigest() == cat.segment_sha256(title, audio["kbps"], 3)
    assert cat.parse_path(f"/v/{title}/{audio['kbps']}/3") == (title, audio["kbps"], 3)
    assert cat.title_bytes(title, 4) == sum(cat.segment_size(title, k, i)
                                            for k in cat.rungs_of(title) for i in range(4))


def test_media_catalog_serves_recorded_bytes(media_build, tmp_path):
    cat = MediaCatalog(media_build)
    assert cat.titles() == ["t0000", "t0001"] and cat.segment_count("t0001") == 4
    assert cat.spec.ladder_kbps == tuple(sorted(set(cat.ladder_of("t0000"))
                                                | set(cat.ladder_of("t0001"))))
    for title in cat.titles():
        for kbps in cat.ladder_of(title):
            for i in range(4):
                data = cat.segment_bytes(title, kbps, i)
                assert hashlib.sha256(data).hexdigest() == cat.segment_sha256(title, kbps, i)
                assert len(data) == cat.segment_size(title, kbps, i)
    manifest = cat.title_manifest("t0000")
    assert manifest["ladder_kbps"] == list(cat.ladder_of("t0000"))
    off_ladder = max(cat.ladder_of("t0001"))
    assert off_ladder not in cat.ladder_of("t0000")
    with pytest.raises(ContentError):
        cat.parse_path(f"/v/t0000/{off_ladder}/0")
    assert cat.parse_path(f"/v/t0001/{off_ladder}/3") == ("t0001", off_ladder, 3)


def test_media_catalog_refuses_a_damaged_or_missing_build(media_build, tmp_path):
    with pytest.raises(ValueError, match="not a media build"):
        MediaCatalog(tmp_path)
    copy = tmp_path / "copy"
    shutil.copytree(media_build, copy)
    (copy / "t0000" / "100" / "1.mp4").write_bytes(b"short")
    with pytest.raises(ContentError):
        MediaCatalog(copy).segment_bytes("t0000", 100, 1)
