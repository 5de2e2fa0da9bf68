"""Standard manifests on the control plane: DASH MPD and HLS playlists of the real-media catalog.

Endpoints (auth: `Authorization: Bearer <account_token>` or `?account_token=`; `?segments=N` as
for /play):
  GET /dash/<title>.mpd                    -> MPD with <ContentSteering> and serviceLocations
  GET /hls/<title>/index.m3u8              -> multivariant playlist, EXT-X-CONTENT-STEERING
  GET /hls/<title>/<pathway>/<kbps>.m3u8   -> media playlist of one pathway and rung
The steering server of both is the existing GET /steering/<title> (control_playback).
Invariants: every manifest is made from the same ranked, signed steering document as /play, so
the MPD's BaseURL order, the HLS pathway order and the steering document's priorities agree; the
steering URL carries the session's segment count and the caller's account token; a catalog
without media (the synthetic one) answers 404.
"""
from __future__ import annotations

from typing import Callable, NamedTuple
from urllib.parse import urlencode

from aiohttp import web

from appliances import manifests
from appliances.control_playback import PlaybackService, json_error, session_segments

DASH_TYPE = "application/dash+xml"
HLS_TYPE = "application/vnd.apple.mpegurl"


class Session(NamedTuple):
    title: str
    n_segments: int
    table: dict  # {str(kbps): [[size_bytes, sha256], ...]}
    steering: dict  # the ranked, signed steering document
    media: dict  # MediaCatalog.media_info(title)
    query: dict  # what the steering and playlist URLs carry: segments, account_token


class ManifestService:
    def __init__(self, playback: PlaybackService) -> None:
        self.playback = playback

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/dash/{title}.mpd", self._handler(self.dash)),
                web.get("/hls/{title}/index.m3u8", self._handler(self.hls)),
                web.get("/hls/{title}/{pathway}/{kbps}.m3u8", self._handler(self.hls_media))]

    def _handler(self, make: Callable[[web.Request, Session], web.Response]):
        async def handle(request: web.Request) -> web.Response:
            got = await self._session(request)
            return got if isinstance(got, web.Response) else make(request, got)
        return handle

    async def _session(self, request: web.Request) -> Session | web.Response:
        found = self.playback._account_and_title(request)
        if isinstance(found, web.Response):
            return found
        account, title, total = found
        media_info = getattr(self.playback.catalog, "media_info", None)
        if media_info is None:
            return json_error(404, "manifests need a media catalog (control --media-dir)")
        n = session_segments(request, total)
        if isinstance(n, web.Response):
            return n
        token = self.playback.url_token(request) or request.headers["Authorization"][7:]
        table = await self.playback.tables.get(title, n)
        doc, _ = await self.playback._document(request, title, account, n)
        return Session(title, n, table, doc, media_info(title),
                       {"segments": n, "account_token": token})

    @staticmethod
    def _steering_url(request: web.Request, s: Session) -> str:
        return f"{request.scheme}://{request.host}/steering/{s.title}?{urlencode(s.query)}"

    def dash(self, request: web.Request, s: Session) -> web.Response:
        text = manifests.dash_mpd(s.title, s.steering, s.table, self.playback.catalog.spec.segment_s,
                                  s.media, self._steering_url(request, s))
        return web.Response(text=text, content_type=DASH_TYPE)

    def hls(self, request: web.Request, s: Session) -> web.Response:
        base = f"{request.scheme}://{request.host}/hls/{s.title}"
        text = manifests.hls_multivariant(
            s.title, s.steering, s.table, s.media, self._steering_url(request, s),
            lambda pathway, kbps: f"{base}/{manifests.pathway_segment(pathway)}/{kbps}.m3u8?"
                                  f"{urlencode(s.query)}")
        return web.Response(text=text, content_type=HLS_TYPE)

    def hls_media(self, request: web.Request, s: Session) -> web.Response:
        pathway, kbps = request.match_info["pathway"], request.match_info["kbps"]
        loc = next((l for l in s.steering["locations"] if l["pathway"] == pathway), None)
        if loc is None or kbps not in s.table:
            return json_error(404, "no such pathway or rung for this session")
        return web.Response(text=manifests.hls_media(loc, int(kbps), s.n_segments,
                                                     self.playback.catalog.spec.segment_s),
                            content_type=HLS_TYPE)
