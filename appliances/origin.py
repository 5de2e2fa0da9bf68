"""Origin store in the cloud region: serves every segment of the catalog; source of all fills.

`python -m appliances.origin --listen HOST:PORT [--tls-cert PATH --tls-key PATH] [catalog flags]`
prints `READY host:port`.
Endpoints: GET/HEAD `/v/<title>/<kbps>/<index>` (ranges and conditionals per RFC 9110),
`GET /health`, `GET /catalog` (the CatalogSpec as JSON).
Invariants: bytes are generated from the catalog (deterministic), so the origin never needs
disk; the ETag of a segment is its SHA-256 prefix, identical on every OCA.
"""
from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections import OrderedDict

from appliances import ranges
from appliances.content import Catalog, CatalogSpec, ContentError
from appliances.media import add_media_arg, catalog_from_args
from appliances.httpcore import Request
from appliances.tls import add_server_args, server_context_from_args
from appliances.oca_http import Response, json_response, parse_listen, \
    serve_from_args, text_response

Key = tuple[str, int, int]


def etag_of(sha256_hex: str) -> str:
    return f'"{sha256_hex[:32]}"'


class Origin:
    """Generates segments on demand and keeps the most recent ones in a bounded memory cache."""

    def __init__(self, catalog: Catalog, cache_bytes: int = 256 * 2**20, name: str = "origin"):
        self.catalog, self.cache_bytes, self.name = catalog, cache_bytes, name
        self._cache: OrderedDict[Key, bytes] = OrderedDict()
        self._cache_used = 0
        self.started = time.time()
        self.bytes_served = 0

    def segment(self, key: Key) -> tuple[bytes, str]:
        data = self._cache.get(key)
        if data is None:
            data = self.catalog.segment_bytes(*key)
            while self._cache and self._cache_used + len(data) > self.cache_bytes:
                _, old = self._cache.popitem(last=False)
                self._cache_used -= len(old)
            if len(data) <= self.cache_bytes:
                self._cache[key] = data
                self._cache_used += len(data)
        else:
            self._cache.move_to_end(key)
        return data, self.catalog.segment_sha256(*key)

    def health(self) -> dict:
        return {"name": self.name, "status": "ok", "load": 0.0, "role": "origin",
                "uptime_s": round(time.time() - self.started, 3),
                "bytes_served": self.bytes_served, "titles": len(self.catalog.titles())}

    async def handle(self, req: Request, client: str) -> Response:
        if req.path == "/health":
            return json_response(200, self.health())
        if req.path == "/catalog":
            return Response(200, [("Content-Type", "application/json")],
                            self.catalog.spec.to_json().encode())
        if not req.path.startswith("/v/"):
            return text_response(404)
        if req.method not in ("GET", "HEAD"):
            return text_response(405, headers=[("Allow", "GET, HEAD")])
        try:
            key = self.catalog.parse_path(req.path)
        except ContentError:
            return text_response(404, "no such segment")
        data, sha = self.segment(key)
        d = ranges.evaluate(req.method, req.headers, len(data), etag_of(sha))
        return Response(d.status, list(d.headers), decision=d, data=data, cache="hit")

    def count_bytes(self, n: int) -> None:
        self.bytes_served += n


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m appliances.origin", description=__doc__)
    p.add_argument("--listen", required=True, help="HOST:PORT (port 0 = free port)")
    p.add_argument("--name", default="origin")
    p.add_argument("--cache-mb", type=int, default=256, help="memory cache of generated segments")
    p.add_argument("--access-log", default=None, help="JSON-lines access log file")
    p.add_argument("--max-conns", type=int, default=512)
    p.add_argument("--header-timeout-s", type=float, default=10.0)
    p.add_argument("--idle-timeout-s", type=float, default=60.0)
    add_server_args(p)
    CatalogSpec.add_cli_args(p)
    add_media_arg(p)
    return p


async def amain(args: argparse.Namespace) -> None:
    origin = Origin(catalog_from_args(args), args.cache_mb * 2**20, args.name)
    await serve_from_args(args, origin.handle, args.name, on_bytes=origin.count_bytes)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        parse_listen(args.listen)
        catalog_from_args(args)  # a bad catalog or --media-dir fails here
        server_context_from_args(args)  # bad TLS flags or files fail here, before serving
    except (ValueError, OSError) as exc:
        print(f"origin: {exc}", file=sys.stderr)
        return 2
    asyncio.run(amain(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
