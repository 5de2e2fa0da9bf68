"""DASH MPD -> the Python player's session manifest (pure): the same ABR and fetch loop play it.

`mpd_session(mpd_text, steering_doc)` returns the dict that GET /play returns ("segment_s",
"ladder_kbps", "n_segments", "segments", "steering"; plus "audio_segments", the audio
AdaptationSet's rows by rung id, {} without one: the Python player fetches video only), read from a standard MPD (parsed with
the `mpegdash` library) and the Content Steering document fetched before start
(queryBeforeStart). Invariants:
- locations are the MPD's BaseURLs ordered by the document's SERVICE-LOCATION-PRIORITY (BaseURLs
  the document does not name follow in MPD order; names without a BaseURL are ignored), each
  with the query of the SegmentTemplate, so a segment URL is base_url + "kbps/index?query";
- tier and retries come from the document's own location entries when it has them, else
  "unknown" and 0;
- the ladder is the video AdaptationSet (contentType "video", else the first one);
- sizes and SHA-256 come from each Representation's integrity SupplementalProperty; an MPD
  without them, or whose Representations disagree on the segment count, is a ValueError.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET

from mpegdash.parser import MPEGDASHParser

from appliances.manifests import INTEGRITY_SCHEME, MPD_NS


def _integrity(rep) -> list[list]:
    for prop in rep.supplemental_properties or []:
        if prop.scheme_id_uri == INTEGRITY_SCHEME:
            rows = []
            for item in (prop.value or "").split():
                size, _, sha = item.partition(":")
                rows.append([int(size), sha])
            return rows
    raise ValueError(f"Representation {rep.id} has no {INTEGRITY_SCHEME} property")


def steering_server(mpd_text: str) -> str | None:
    """The ContentSteering server URL of an MPD (None: it has none)."""
    node = ET.fromstring(mpd_text).find(f"{{{MPD_NS}}}ContentSteering")
    return None if node is None else (node.text or "").strip() or None


def mpd_session(mpd_text: str, steering_doc: dict | None = None) -> dict:
    mpd = MPEGDASHParser.parse(mpd_text)
    asets = mpd.periods[0].adaptation_sets
    aset = next((a for a in asets if a.content_type == "video"), asets[0])
    audio = {str(rep.id): _integrity(rep) for a in asets if a.content_type == "audio"
             for rep in a.representations}
    template = aset.segment_templates[0]
    segment_s = template.duration / (template.timescale or 1)
    _, _, query = template.media.partition("?")
    segments = {str(rep.id): _integrity(rep) for rep in aset.representations}
    counts = {len(rows) for rows in segments.values()}
    if len(counts) != 1:
        raise ValueError(f"Representations disagree on the segment count: {sorted(counts)}")
    doc = steering_doc or {}
    priority = list(doc.get("SERVICE-LOCATION-PRIORITY") or [])
    entries = {loc.get("pathway"): loc for loc in doc.get("locations", [])}
    bases = [(b.service_location, b.base_url_value.strip()) for b in mpd.base_urls or []]
    ordered = sorted(bases, key=lambda b: priority.index(b[0]) if b[0] in priority
                     else len(priority))
    locations = [{"pathway": name, "base_url": url, "query": query,
                  "tier": entries.get(name, {}).get("tier", "unknown"),
                  "retries": int(entries.get(name, {}).get("retries", 0))}
                 for name, url in ordered]
    return {"segment_s": segment_s, "ladder_kbps": sorted(int(k) for k in segments),
            "n_segments": counts.pop(), "segments": segments, "audio_segments": audio,
            "steering": {"locations": locations, "RELOAD-URI": doc.get("RELOAD-URI", "")}}
