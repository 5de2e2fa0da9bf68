"""Connection set-up of one aiohttp request, measured apart: TCP connect, TLS handshake, TTFB.

How (aiohttp 3.14, asyncio): the TraceConfig hooks on_connection_create_start/end bracket a new
connection (TCP connect and, for https, the TLS handshake: aiohttp's connector awaits both in
the request's task). Inside that bracket asyncio calls the client SSLContext's `wrap_bio` the
moment the TCP connection is up, just before it sends the ClientHello;
`appliances.tls.ResumingClientContext.wrap_bio` stamps that moment through the callback in
`appliances.tls.ON_TLS_START` (a ContextVar the create_start hook sets in the request's task,
so concurrent requests never mix). So:
  connect_ms = wrap_bio - create_start      (plain http: create_end - create_start)
  tls_ms     = create_end - wrap_bio        (client side: ClientHello to its Finished)
  ttfb_ms    = response headers - request start - (connect_ms + tls_ms)
i.e. ttfb_ms is the request on a ready connection, whether the connection was new or reused.

Invariants: `conn` of a request is "reused" (no new connection), "tcp" (new, plain http), "tls"
(new, full TLS handshake) or "tls_resumed" (new, TLS session resumed); connect_ms is "" when
reused, tls_ms "" unless conn is tls or tls_resumed. A request that opened several connections
(a redirect to another host) sums their set-up times and names the first connection's kind.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import aiohttp

from appliances.tls import ON_TLS_START

CONN_KINDS = ("reused", "tcp", "tls", "tls_resumed")


@dataclass
class _Opened:
    start: float
    tcp_done: float | None = None  # wrap_bio: TCP up, TLS starts (None: plain http)
    end: float | None = None
    ssl_object: object | None = None


@dataclass
class ConnTiming:
    """One request's timing; pass it as `trace_request_ctx` with `trace_config()` installed."""
    start: float = field(default_factory=time.monotonic)
    opened: list[_Opened] = field(default_factory=list)

    def fields(self, headers_at: float) -> dict:
        """conn, connect_ms, tls_ms, ttfb_ms (3 decimals) for response headers at `headers_at`."""
        done = [o for o in self.opened if o.end is not None]
        total_ms = (headers_at - self.start) * 1000
        if not done:
            return {"conn": "reused", "connect_ms": "", "tls_ms": "", "ttfb_ms": round(total_ms, 3)}
        connect = sum(((o.tcp_done or o.end) - o.start) for o in done) * 1000
        tls = sum((o.end - o.tcp_done) for o in done if o.tcp_done is not None) * 1000
        first = done[0]
        if first.ssl_object is None:
            kind = "tcp"
        else:
            kind = "tls_resumed" if first.ssl_object.session_reused else "tls"
        return {"conn": kind, "connect_ms": round(connect, 3),
                "tls_ms": round(tls, 3) if kind != "tcp" else "",
                "ttfb_ms": round(total_ms - connect - tls, 3)}


    def tls_started(self, ssl_object) -> None:
        """The client context's wrap_bio: the TCP connection being opened is up."""
        if self.opened and self.opened[-1].tcp_done is None:
            self.opened[-1].tcp_done = time.monotonic()
            self.opened[-1].ssl_object = ssl_object


async def _create_start(session, ctx, params) -> None:
    timing = ctx.trace_request_ctx
    if isinstance(timing, ConnTiming):
        timing.opened.append(_Opened(time.monotonic()))
        ON_TLS_START.set(timing.tls_started)
    else:
        ON_TLS_START.set(None)


async def _create_end(session, ctx, params) -> None:
    timing = ctx.trace_request_ctx
    if isinstance(timing, ConnTiming) and timing.opened:
        timing.opened[-1].end = time.monotonic()
    ON_TLS_START.set(None)


def trace_config() -> aiohttp.TraceConfig:
    """The TraceConfig that fills a request's ConnTiming (give it to every ClientSession)."""
    tc = aiohttp.TraceConfig()
    tc.on_connection_create_start.append(_create_start)
    tc.on_connection_create_end.append(_create_end)
    return tc
