"""Standard manifests: the MPD and HLS playlists parse back with mpegdash and m3u8, carry Content
Steering in the steering document's order, and the Python player's MPD adapter reads them (pure);
then loopback: origin + OCA + control plane serving a real-media build, ffprobe accepts the MPD
and the HLS playlist over HTTP, and a Python player plays a title via the MPD with 0 integrity
failures."""
from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET

import m3u8
import pytest
from mpegdash.parser import MPEGDASHParser

from appliances.control_playback import steering_document
from appliances.manifest_adapter import mpd_session, steering_server
from appliances.manifests import INTEGRITY_SCHEME, MPD_NS, dash_mpd, hls_media, hls_multivariant
from appliances.media import MediaCatalog
from appliances.tokens import write_key
from contracts.steering import Location
from tests.test_system_loopback import Procs, free_port, wait_heartbeats

VIDEO = {"100": [[1000, "a" * 64], [1100, "b" * 64]], "300": [[3000, "c" * 64], [3300, "d" * 64]]}
AUDIO = {"32": [[320, "e" * 64], [330, "f" * 64]]}
TABLE = {**VIDEO, **AUDIO}  # a session's table: the video ladder and the audio rung
MEDIA = {"codecs": "vp09.00.11.08", "width": 320, "height": 180, "fps": 24, "mime": "video/mp4",
         "audio": {"kbps": 32, "codecs": "opus", "mime": "audio/mp4", "sample_rate_hz": 48000,
                   "channels": 1}}
STEER_URL = "http://control/steering/t0001?segments=2&account_token=x.y"


def ranked(*names: str) -> list[Location]:
    return [Location(n, "origin" if n == "origin" else "embedded", f"http://{n}:8080", {})
            for n in names]


def doc_of(*names: str) -> dict:
    return steering_document("t0001", ranked(*names), "exp=1&sig=z", segments=2)


def test_steering_document_follows_the_ranking_for_hls_and_dash():
    doc = doc_of("oca-b", "oca-a", "origin")
    assert doc["PATHWAY-PRIORITY"] == doc["SERVICE-LOCATION-PRIORITY"] == ["oca-b", "oca-a", "origin"]
    assert doc["VERSION"] == 1 and doc["TTL"] > 0 and doc["RELOAD-URI"] == "/steering/t0001?segments=2"
    tok = steering_document("t0001", ranked("origin"), "q", segments=2, account_token="acc.mac")
    assert tok["RELOAD-URI"] == "/steering/t0001?segments=2&account_token=acc.mac"


def test_mpd_parses_back_with_content_steering_in_rank_order():
    text = dash_mpd("t0001", doc_of("oca-b", "origin"), TABLE, 2, MEDIA, STEER_URL)
    mpd = MPEGDASHParser.parse(text)
    assert [(b.service_location, b.base_url_value) for b in mpd.base_urls] == [
        ("oca-b", "http://oca-b:8080/v/t0001/"), ("origin", "http://origin:8080/v/t0001/")]
    aset = mpd.periods[0].adaptation_sets[0]
    assert [r.bandwidth for r in aset.representations] == [100_000, 300_000]
    tmpl = aset.segment_templates[0]
    assert tmpl.media == "$RepresentationID$/$Number$?exp=1&sig=z" and tmpl.start_number == 0
    cs = ET.fromstring(text).find(f"{{{MPD_NS}}}ContentSteering")
    assert cs.get("defaultServiceLocation") == "oca-b" and cs.text == STEER_URL
    assert steering_server(text) == STEER_URL
    # audio is its own AdaptationSet (dash.js refuses muxed Representations), same template
    vset, aud = mpd.periods[0].adaptation_sets
    assert (vset.content_type, aud.content_type, aud.mime_type) == ("video", "audio", "audio/mp4")
    assert [(r.id, r.codecs) for r in aud.representations] == [("32", "opus")]
    assert aud.segment_templates[0].media == tmpl.media
    assert aud.representations[0].supplemental_properties[0].value == "320:" + "e" * 64 + " 330:" + "f" * 64
    video_only = MPEGDASHParser.parse(dash_mpd("t0001", doc_of("origin"), VIDEO, 2,
                                               {**MEDIA, "audio": None}, STEER_URL))
    assert [a.content_type for a in video_only.periods[0].adaptation_sets] == ["video"]
    with pytest.raises(ValueError, match="audio rung 32"):
        dash_mpd("t0001", doc_of("origin"), VIDEO, 2, MEDIA, STEER_URL)
    props = aset.representations[0].supplemental_properties
    assert props[0].scheme_id_uri == INTEGRITY_SCHEME


def test_mpd_adapter_orders_locations_by_the_steering_document():
    text = dash_mpd("t0001", doc_of("oca-b", "oca-a", "origin"), TABLE, 2, MEDIA, STEER_URL)
    session = mpd_session(text, doc_of("oca-a", "origin", "oca-b"))  # steering moved oca-a up
    assert [l["pathway"] for l in session["steering"]["locations"]] == ["oca-a", "origin", "oca-b"]
    assert session["ladder_kbps"] == [100, 300] and session["n_segments"] == 2
    assert session["segments"] == VIDEO and session["segment_s"] == 2
    assert session["audio_segments"] == AUDIO  # the Python player fetches video only
    loc = session["steering"]["locations"][0]
    assert (loc["base_url"], loc["query"], loc["tier"]) == (
        "http://oca-a:8080/v/t0001/", "exp=1&sig=z", "embedded")
    # without a steering document: the MPD's order, tiers unknown
    bare = mpd_session(text)
    assert [l["pathway"] for l in bare["steering"]["locations"]] == ["oca-b", "oca-a", "origin"]
    assert {l["tier"] for l in bare["steering"]["locations"]} == {"unknown"}


def test_mpd_adapter_refuses_an_mpd_without_integrity():
    text = dash_mpd("t0001", doc_of("origin"), TABLE, 2, MEDIA, STEER_URL)
    stripped = text.replace(INTEGRITY_SCHEME, "urn:other")
    with pytest.raises(ValueError, match="no urn:ocalab"):
        mpd_session(stripped)
    with pytest.raises(ValueError):
        dash_mpd("t0001", {"locations": []}, TABLE, 2, MEDIA, STEER_URL)


def test_hls_playlists_parse_back_with_pathways():
    doc = doc_of("oca-b", "origin")
    text = hls_multivariant("t0001", doc, TABLE, MEDIA, STEER_URL,
                            lambda p, k: f"http://control/hls/t0001/{p}/{k}.m3u8")
    pl = m3u8.loads(text)
    assert pl.is_variant
    assert pl.content_steering.uri == STEER_URL
    assert pl.content_steering.pathway_id == "oca-b"
    assert [(p.stream_info.pathway_id, p.stream_info.bandwidth) for p in pl.playlists] == [
        ("oca-b", 132_000), ("oca-b", 332_000), ("origin", 132_000), ("origin", 332_000)]
    assert {p.stream_info.audio for p in pl.playlists if p.stream_info.pathway_id == "origin"} == {
        "audio-origin"}
    assert [(m.type, m.group_id, m.uri) for m in pl.media] == [
        ("AUDIO", "audio-oca-b", "http://control/hls/t0001/oca-b/32.m3u8"),
        ("AUDIO", "audio-origin", "http://control/hls/t0001/origin/32.m3u8")]
    assert pl.playlists[0].stream_info.codecs == "vp09.00.11.08,opus"
    media = m3u8.loads(hls_media(doc["locations"][0], 300, 2, 2))
    assert [s.uri for s in media.segments] == [
        f"http://oca-b:8080/v/t0001/300/{i}?exp=1&sig=z" for i in range(2)]
    assert media.is_endlist and media.target_duration == 2
    assert media.segment_map[0].uri == "http://oca-b:8080/v/t0001/300/0?exp=1&sig=z"


# --- loopback: real media served, ffprobe and the Python player ---------------------------

def start_media_world(tmp_path, procs: Procs, build_dir) -> dict:
    key = tmp_path / "key.hex"
    write_key(key)
    ports = {n: free_port() for n in ("origin", "oca1", "control")}
    url = {n: f"http://127.0.0.1:{p}" for n, p in ports.items()}
    spec = json.loads(MediaCatalog(build_dir).spec.to_json())
    deployment = {
        "ocas": [{"name": "oca1", "tier": "embedded", "url": url["oca1"],
                  "serves": ["127.0.0.0/8"], "distance_hops": 1, "rtt_ms": 1.0}],
        "origin": {"name": "origin", "url": url["origin"], "tier": "origin"},
        "catalog": spec, "regions": {"lo": {"prefixes": ["127.0.0.0/8"], "preference_seed": 7}}}
    (tmp_path / "deployment.json").write_text(json.dumps(deployment))
    media = ["--media-dir", str(build_dir)]
    procs.start("origin", ["appliances.origin", "--listen", f"127.0.0.1:{ports['origin']}", *media])
    procs.start("control", ["appliances.control", "--listen", f"127.0.0.1:{ports['control']}",
                            "--deployment", str(tmp_path / "deployment.json"),
                            "--token-key", str(key), *media])
    procs.start("oca1", ["appliances.oca", "--listen", f"127.0.0.1:{ports['oca1']}",
                         "--name", "oca1", "--upstream", url["origin"],
                         "--store", str(tmp_path / "store-oca1"), "--capacity-mb", "40",
                         "--miss", "proxy", "--token-key", str(key),
                         "--cache-control", url["control"], "--heartbeat-s", "0.5", *media])
    return url


def http(url: str, data: dict | None = None, headers: dict | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=None if data is None else json.dumps(data).encode(),
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def ffprobe_streams(url: str, *opts: str) -> set[str]:
    out = subprocess.run(["ffprobe", "-v", "error", *opts, "-show_entries", "stream=codec_name",
                          "-of", "json", url], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    return {s["codec_name"] for s in json.loads(out.stdout)["streams"]}


@pytest.mark.integration
def test_real_media_manifests_over_loopback(tmp_path, media_build):
    procs = Procs(tmp_path)
    try:
        url = start_media_world(tmp_path, procs, media_build)
        control = url["control"]
        wait_heartbeats(control, {"oca1"})
        _, body = http(f"{control}/login", {"account": "lo-1"})
        tok = json.loads(body)["account_token"]
        # auth and bad input: clear 4xx, no traceback
        assert http(f"{control}/dash/t0001.mpd")[0] == 401
        assert http(f"{control}/dash/t9999.mpd?account_token={tok}")[0] == 404
        assert http(f"{control}/dash/t0001.mpd?segments=0&account_token={tok}")[0] == 400
        assert http(f"{control}/hls/t0001/nowhere/100.m3u8?account_token={tok}")[0] == 404

        status, mpd = http(f"{control}/dash/t0001.mpd?account_token={tok}")
        assert status == 200
        mpd = mpd.decode()
        # players in web pages read manifests, steering and segments across origins
        loc = mpd_session(mpd)["steering"]["locations"][0]
        with urllib.request.urlopen(f"{loc['base_url']}100/0?{loc['query']}") as seg, \
                urllib.request.urlopen(steering_server(mpd)) as steer:
            assert seg.headers["Access-Control-Allow-Origin"] == "*" == \
                steer.headers["Access-Control-Allow-Origin"]
            assert "X-Ocalab-Node" in seg.headers["Access-Control-Expose-Headers"]
        status, doc = http(steering_server(mpd))  # the steering server, with the URL's token
        assert status == 200
        doc = json.loads(doc)
        _, rank = http(f"{control}/rank?viewer=127.0.0.1&title=t0001")
        want = [loc["name"] for loc in json.loads(rank)["locations"]]
        assert want == ["oca1", "origin"]
        assert doc["SERVICE-LOCATION-PRIORITY"] == doc["PATHWAY-PRIORITY"] == want
        assert [b.service_location for b in MPEGDASHParser.parse(mpd).base_urls] == want
        assert "account_token=" in doc["RELOAD-URI"]

        assert ffprobe_streams(f"{control}/dash/t0001.mpd?account_token={tok}") == {"vp9", "opus"}
        hls_url = f"{control}/hls/t0001/index.m3u8?account_token={tok}"
        master = m3u8.loads(http(hls_url)[1].decode())
        assert [p.stream_info.pathway_id for p in master.playlists][0] == "oca1"
        # segment URLs keep the /v/<title>/<kbps>/<index> contract (no file extension), which
        # Debian's ffmpeg refuses for HLS unless told not to be picky about extensions
        assert ffprobe_streams(hls_url, "-extension_picky", "0") == {"vp9", "opus"}

        chunks, sessions = tmp_path / "chunks.csv", tmp_path / "sessions.jsonl"
        player = procs.start("player", [
            "appliances.player", "--control", control, "--viewers", "2", "--titles",
            "t0000,t0001", "--manifest", "dash", "--chunk-log", str(chunks),
            "--session-log", str(sessions), "--speed", "4", "--max-wall-s", "60"], ready=False)
        rc = player.wait(timeout=90)
        player.stderr.seek(0)
        assert rc == 0, player.stderr.read()[-3000:]
        done = [json.loads(line) for line in sessions.read_text().splitlines()]
        assert len(done) == 2 and all(s["status"] == "ok" for s in done), done
        assert all(s["segments_verified"] == 4 and s["hash_failures"] == 0
                   and s["failed_attempts"] == 0 for s in done)
        assert all(s["servers"] == {"oca1": 4} for s in done)
        cat = MediaCatalog(media_build)
        rows = chunks.read_text().splitlines()[1:]
        assert len(rows) == 8
        assert {int(r.split(",")[5]) for r in rows if ",t0000," in r} <= set(cat.ladder_of("t0000"))
    finally:
        procs.stop_all()


@pytest.mark.integration
def test_synthetic_catalog_has_no_standard_manifests(tmp_path):
    procs = Procs(tmp_path)
    try:
        key = tmp_path / "key.hex"
        write_key(key)
        port = free_port()
        dep = {"ocas": [], "origin": {"name": "origin", "url": "http://127.0.0.1:9", "tier": "origin"},
               "catalog": {"n_titles": 2, "duration_s": 8}}
        (tmp_path / "deployment.json").write_text(json.dumps(dep))
        procs.start("control", ["appliances.control", "--listen", f"127.0.0.1:{port}",
                                "--deployment", str(tmp_path / "deployment.json"),
                                "--token-key", str(key), "--warm-titles", "0"])
        control = f"http://127.0.0.1:{port}"
        tok = json.loads(http(f"{control}/login", {"account": "a"})[1])["account_token"]
        status, body = http(f"{control}/dash/t0001.mpd", headers={"Authorization": f"Bearer {tok}"})
        assert status == 404 and b"media catalog" in body
    finally:
        procs.stop_all()


def test_control_refuses_fill_pushes_with_per_title_ladders(tmp_path, media_build):
    key = tmp_path / "key.hex"
    write_key(key)
    dep = {"ocas": [], "origin": {"name": "origin", "url": "http://127.0.0.1:9", "tier": "origin"},
           "catalog": {"n_titles": 2, "duration_s": 8}}
    (tmp_path / "deployment.json").write_text(json.dumps(dep))
    out = subprocess.run([sys.executable, "-m", "appliances.control", "--listen", "127.0.0.1:0",
                          "--deployment", str(tmp_path / "deployment.json"), "--token-key",
                          str(key), "--media-dir", str(media_build), "--push-fill"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 2 and "--push-fill does not support --media-dir" in out.stderr
    bad = subprocess.run([sys.executable, "-m", "appliances.origin", "--listen", "127.0.0.1:0",
                          "--media-dir", str(tmp_path)], capture_output=True, text=True, timeout=30)
    assert bad.returncode == 2 and "not a media build" in bad.stderr


def test_service_options_media_dir(media_build):
    from harness.services import ServiceOptions, deployment
    from topologies.catalog import metro
    opts = ServiceOptions(media_dir=str(media_build))
    dep = deployment(metro(), opts)
    assert dep["catalog"] == json.loads(MediaCatalog(media_build).spec.to_json())
    assert deployment(metro(), ServiceOptions())["catalog"] == ServiceOptions().catalog
    with pytest.raises(ValueError, match="media_dir"):
        ServiceOptions(media_dir=str(media_build), stage_tiers=("embedded",))


def test_manifests_and_steering_follow_the_ranking_as_it_changes(media_build):
    """In-process control plane on a media build: before heartbeats the OCAs rank below the
    origin; once they report healthy, every manifest and the steering document put them first."""
    import asyncio
    from aiohttp.test_utils import TestClient, TestServer
    from appliances.control import build_control
    from contracts.deployment import parse_deployment
    ocas = [{"name": n, "tier": t, "url": f"http://127.0.0.1:{p}", "serves": ["127.0.0.0/8"],
             "distance_hops": h, "rtt_ms": float(h)}
            for n, t, p, h in (("oca1", "embedded", 9, 1), ("oca2", "ixp", 7, 3))]
    dep = parse_deployment({"ocas": ocas, "origin": {"name": "origin", "url": "http://127.0.0.1:5"},
                            "catalog": json.loads(MediaCatalog(media_build).spec.to_json())})

    async def orders(client, tok):
        q = f"account_token={tok}"
        mpd = await (await client.get(f"/dash/t0001.mpd?{q}")).text()
        master = m3u8.loads(await (await client.get(f"/hls/t0001/index.m3u8?{q}")).text())
        doc = await (await client.get(f"/steering/t0001?{q}&_DASH_pathway=oca1")).json()
        return ([b.service_location for b in MPEGDASHParser.parse(mpd).base_urls],
                list(dict.fromkeys(p.stream_info.pathway_id for p in master.playlists)),
                doc["SERVICE-LOCATION-PRIORITY"], doc["PATHWAY-PRIORITY"], doc["TTL"])

    async def main():
        cp = build_control(dep, bytes(32), catalog=MediaCatalog(media_build), steering_ttl_s=5)
        async with TestClient(TestServer(cp.app, host="127.0.0.1")) as client:
            tok = (await (await client.post("/login", json={"account": "v"})).json())["account_token"]
            before = ["origin", "oca1", "oca2"]
            assert await orders(client, tok) == (before, before, before, before, 5)
            for name in ("oca1", "oca2"):
                await client.post("/heartbeat", json={"name": name, "status": "ok"})
            after = ["oca1", "oca2", "origin"]
            assert await orders(client, tok) == (after, after, after, after, 5)
            # a URL token is echoed into the RELOAD-URI only when it is what authorized
            r = await client.get("/steering/t0001?account_token=bogus.00",
                                 headers={"Authorization": f"Bearer {tok}"})
            assert r.status == 200 and "account_token" not in (await r.json())["RELOAD-URI"]
            assert (await client.get("/steering/t0001?account_token=bogus.00")).status == 401
    asyncio.run(main())
