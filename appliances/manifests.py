"""Standard manifests of one session: DASH MPD and HLS playlists with Content Steering (pure).

Both are built from the steering document the control plane already makes
(control_playback.steering_document: ranked locations, one signed query) and the title's segment
table; they are text in, text out, with no I/O.
Invariants:
- MPD: static, one Period, a video AdaptationSet (id 0, the ladder) and, when media["audio"] is
  set, an audio AdaptationSet (id 1, one Representation whose id is the audio rung id: the
  table's key of that kbps; never muxed, which dash.js refuses); one BaseURL per location in rank order, its
  `serviceLocation` the location's pathway; `<ContentSteering queryBeforeStart="true">` names
  the steering server and the top location as defaultServiceLocation; a SegmentTemplate with `$RepresentationID$` =
  kbps and `$Number$` = segment index from 0, so a segment URL is base_url + "kbps/index?query"
  (the /v/<title>/<kbps>/<index> contract). Segments are self-initializing, so the
  initialization URL is segment 0. Each Representation carries its segments' sizes and SHA-256
  in a SupplementalProperty (scheme INTEGRITY_SCHEME, value "size:sha256 size:sha256 ...").
- HLS: the multivariant playlist has one EXT-X-STREAM-INF per (pathway, video rung) with
  PATHWAY-ID (and, with audio, AUDIO naming that pathway's EXT-X-MEDIA audio rendition, whose
  media playlist is the audio rung's), and EXT-X-CONTENT-STEERING with the top pathway; each media playlist lists absolute segment
  URLs of one pathway and rung, EXT-X-MAP = segment 0, EXT-X-ENDLIST.
- The steering document served at the steering URL carries both PATHWAY-PRIORITY (HLS) and
  SERVICE-LOCATION-PRIORITY (DASH), the same ranked names.
"""
from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from urllib.parse import quote

MPD_NS = "urn:mpeg:dash:schema:mpd:2011"
INTEGRITY_SCHEME = "urn:ocalab:segment-integrity:2026"
PROFILE = "urn:mpeg:dash:profile:isoff-live:2011"


def _iso_duration(seconds: float) -> str:
    return f"PT{seconds:.3f}S"


def _segment_url(loc: dict, kbps: int, index: int) -> str:
    return f"{loc['base_url']}{kbps}/{index}?{loc['query']}"


def split_table(table: dict, media: dict) -> tuple[dict, dict]:
    """(video rows, audio rows) of a session's table: the audio rung is media["audio"]["kbps"]."""
    audio = media.get("audio")
    key = str(audio["kbps"]) if audio else None
    if key is not None and key not in table:
        raise ValueError(f"the table has no rows for the audio rung {key}")
    return ({k: v for k, v in table.items() if k != key},
            {k: v for k, v in table.items() if k == key})


def _adaptation_set(period, aset_id: int, attrs: dict, query: str, segment_s: float,
                    rows_by_rung: dict, rep_attrs) -> None:
    aset = ET.SubElement(period, f"{{{MPD_NS}}}AdaptationSet", {
        "id": str(aset_id), **attrs, "segmentAlignment": "true", "startWithSAP": "1"})
    ET.SubElement(aset, f"{{{MPD_NS}}}SegmentTemplate", {
        "timescale": "1000", "duration": str(int(segment_s * 1000)), "startNumber": "0",
        "initialization": f"$RepresentationID$/0?{query}",
        "media": f"$RepresentationID$/$Number$?{query}"})
    for kbps in sorted(rows_by_rung, key=int):
        rep = ET.SubElement(aset, f"{{{MPD_NS}}}Representation", {
            "id": str(kbps), "bandwidth": str(int(kbps) * 1000), **rep_attrs})
        ET.SubElement(rep, f"{{{MPD_NS}}}SupplementalProperty", {
            "schemeIdUri": INTEGRITY_SCHEME,
            "value": " ".join(f"{size}:{sha}" for size, sha in rows_by_rung[kbps])})


def dash_mpd(title: str, steering: dict, table: dict, segment_s: float, media: dict,
             steering_url: str) -> str:
    """The MPD of a session (table: {str(kbps): [[size, sha256], ...]}, one row per segment)."""
    locations = steering["locations"]
    if not locations:
        raise ValueError("a manifest needs at least one location")
    n = len(next(iter(table.values())))
    queries = {loc["query"] for loc in locations}
    if len(queries) != 1:
        raise ValueError("every location of one manifest must share one signed query")
    query = queries.pop()
    ET.register_namespace("", MPD_NS)
    mpd = ET.Element(f"{{{MPD_NS}}}MPD", {
        "profiles": PROFILE, "type": "static", "minBufferTime": _iso_duration(segment_s),
        "mediaPresentationDuration": _iso_duration(n * segment_s)})
    for loc in locations:
        base = ET.SubElement(mpd, f"{{{MPD_NS}}}BaseURL", {"serviceLocation": loc["pathway"]})
        base.text = loc["base_url"]
    cs = ET.SubElement(mpd, f"{{{MPD_NS}}}ContentSteering", {
        "defaultServiceLocation": locations[0]["pathway"], "queryBeforeStart": "true"})
    cs.text = steering_url
    period = ET.SubElement(mpd, f"{{{MPD_NS}}}Period", {"id": "0", "start": "PT0S"})
    video, audio = split_table(table, media)
    _adaptation_set(period, 0, {"contentType": "video", "mimeType": media["mime"],
                                "frameRate": str(media["fps"])}, query, segment_s, video,
                    {"codecs": media["codecs"], "width": str(media["width"]),
                     "height": str(media["height"])})
    if audio:
        a = media["audio"]
        _adaptation_set(period, 1, {"contentType": "audio", "mimeType": a["mime"], "lang": "und"},
                        query, segment_s, audio,
                        {"codecs": a["codecs"], "audioSamplingRate": str(a["sample_rate_hz"])})
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(mpd, encoding="unicode")


def hls_multivariant(title: str, steering: dict, table: dict, media: dict, steering_url: str,
                     media_playlist_url) -> str:
    """The multivariant playlist; media_playlist_url(pathway, kbps) -> the media playlist URI."""
    locations = steering["locations"]
    if not locations:
        raise ValueError("a manifest needs at least one location")
    lines = ["#EXTM3U", "#EXT-X-VERSION:7", "#EXT-X-INDEPENDENT-SEGMENTS",
             f'#EXT-X-CONTENT-STEERING:SERVER-URI="{steering_url}",'
             f'PATHWAY-ID="{locations[0]["pathway"]}"']
    video, audio = split_table(table, media)
    a = media.get("audio")
    for loc in locations:
        group = ""
        if audio:
            group = f'audio-{loc["pathway"]}'
            lines.append(f'#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="{group}",NAME="audio",DEFAULT=YES,'
                         f'AUTOSELECT=YES,CHANNELS="{a["channels"]}",'
                         f'URI="{media_playlist_url(loc["pathway"], a["kbps"])}"')
        for kbps in sorted(video, key=int):
            codecs = media["codecs"] + (f',{a["codecs"]}' if audio else "")
            bandwidth = (int(kbps) + (a["kbps"] if audio else 0)) * 1000
            lines.append(f"#EXT-X-STREAM-INF:BANDWIDTH={bandwidth},"
                         f'CODECS="{codecs}",RESOLUTION={media["width"]}x{media["height"]},'
                         f'FRAME-RATE={media["fps"]:.3f},PATHWAY-ID="{loc["pathway"]}"'
                         + (f',AUDIO="{group}"' if audio else ""))
            lines.append(media_playlist_url(loc["pathway"], kbps))
    return "\n".join(lines) + "\n"


def hls_media(loc: dict, kbps: int, n_segments: int, segment_s: float) -> str:
    """The media playlist of one pathway and rung (VOD, self-initializing fMP4 segments)."""
    lines = ["#EXTM3U", "#EXT-X-VERSION:7", f"#EXT-X-TARGETDURATION:{math.ceil(segment_s)}",
             "#EXT-X-PLAYLIST-TYPE:VOD", "#EXT-X-MEDIA-SEQUENCE:0", "#EXT-X-INDEPENDENT-SEGMENTS",
             f'#EXT-X-MAP:URI="{_segment_url(loc, kbps, 0)}"']
    for i in range(n_segments):
        lines += [f"#EXTINF:{segment_s:.3f},", _segment_url(loc, kbps, i)]
    return "\n".join(lines + ["#EXT-X-ENDLIST"]) + "\n"


def pathway_segment(pathway: str) -> str:
    """A pathway name as one URL path segment."""
    return quote(pathway, safe="")
