"""Thin asyncio HTTP/1.1 server shell shared by the origin and the OCA.

Invariants:
- Requests are parsed by the sans-IO `httpcore`; every malformed shape gets a 4xx with a
  generic body (never client input) and the connection is closed; the server keeps serving.
- Limits: at most `max_conns` connections (extra ones get 503 + Retry-After), request head
  <= `max_head_bytes` (431); a new connection's first head must be complete within
  `header_timeout_s` of its accept, a later head within `header_timeout_s` of its first byte
  (408 if started, closed without a response if silent); a keep-alive connection idle for
  `idle_timeout_s` is closed without a response. Error responses end with a bounded
  lingering close (see `linger`), so the client reads them instead of a connection reset.
- Object bodies are sent from memory (`data`) or zero-copy from a file: `os.sendfile` in worker
  threads (`sendfile_threads` > 0; each call runs only until the socket would block, so a slow
  client never holds a thread) or asyncio's `loop.sendfile`. Over TLS (`ssl_context`) the raw
  socket is never written: files are read in TLS_CHUNK_BYTES preads and written through the
  TLS transport (`send_file_tls`).
- With `ssl_context` the server speaks TLS only; a handshake must end within header_timeout_s;
  a failed handshake (plain HTTP, garbage, a client refusing the certificate) closes the
  connection quietly (asyncio logs handshake OSErrors only in debug mode). A handler exception is logged to
  stderr with its traceback and answered 500.
- Every response carries `X-Ocalab-Node: <server name>`, so a client behind an anycast
  address learns which server really sent the bytes.
- One JSON line per request goes to the access log; client-supplied text in it (method,
  path, Range) is cut to LOG_FIELD_MAX characters each, so a line stays under about 1 KB.
  A response's `note` (server text, e.g. `command_forged`) is logged with it when set.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import socket
import ssl
import sys
import time
import traceback
from dataclasses import dataclass, field
from typing import AsyncIterator, Awaitable, BinaryIO, Callable, TextIO

from appliances.httpcore import CORS_HEADERS, NODE_HEADER, REASONS, HttpError, Request, parse_request_head, \
    render_response_head
from appliances.ranges import Decision
from appliances.tls import server_context_from_args

SEND_TIMEOUT_S = 120.0
LINGER_S, LINGER_BYTES = 1.0, 256 * 1024  # lingering close after an error response
CLOSE_WAIT_S = 5.0  # a closing connection may flush this long before it is aborted
LOG_FIELD_MAX = 200  # client text in an access-log field is cut to this many chars


@dataclass
class Response:
    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    decision: Decision | None = None  # object body: parts of `data` or of `file`
    data: bytes | None = None
    file: BinaryIO | None = None  # opened by the handler (survives eviction); closed here
    cache: str = "none"
    close: bool = False
    on_done: Callable[[], None] | None = None
    range_header: str | None = None
    stream: AsyncIterator[bytes] | None = None  # a body sent as it is produced (cut-through)
    stream_length: int = 0  # its Content-Length; a stream that ends short drops the connection
    note: str | None = None  # why the server answered so (e.g. a refused command), access-logged


def text_response(status: int, message: str | None = None, headers=None, **kw) -> Response:
    body = f"{status} {message or REASONS.get(status, 'error')}\n".encode()
    hdrs = [("Content-Type", "text/plain; charset=utf-8")] + list(headers or [])
    return Response(status, hdrs, body, **kw)


def json_response(status: int, obj, **kw) -> Response:
    return Response(status, [("Content-Type", "application/json")],
                    json.dumps(obj, sort_keys=True).encode(), **kw)


Handler = Callable[[Request, str], Awaitable[Response]]


class HttpServer:
    def __init__(self, handler: Handler, *, max_conns: int = 512, header_timeout_s: float = 10.0,
                 idle_timeout_s: float = 60.0, max_head_bytes: int = 16384,
                 access_log: TextIO | None = None, name: str = "server",
                 on_bytes: Callable[[int], None] | None = None,
                 sendfile_threads: int = 0, ssl_context: ssl.SSLContext | None = None) -> None:
        self.handler, self.max_conns, self.name = handler, max_conns, name
        self.ssl_context = ssl_context  # None: plain HTTP
        self.header_timeout_s, self.idle_timeout_s = header_timeout_s, idle_timeout_s
        self.max_head_bytes, self.access_log, self.on_bytes = max_head_bytes, access_log, on_bytes
        self.n_conns = 0
        self.requests = 0
        self._tasks: set[asyncio.Task] = set()
        self._server: asyncio.base_events.Server | None = None
        self._pool = (concurrent.futures.ThreadPoolExecutor(sendfile_threads, "sendfile")
                      if sendfile_threads > 0 else None)

    async def start(self, host: str, port: int) -> tuple[str, int]:
        self._server = await asyncio.start_server(self._on_conn, host, port,
                                                  limit=self.max_head_bytes, backlog=1024,
                                                  reuse_address=True, ssl=self.ssl_context,
                                                  ssl_handshake_timeout=(
                                                      self.header_timeout_s
                                                      if self.ssl_context else None))
        sock = self._server.sockets[0]
        addr = sock.getsockname()
        return addr[0], addr[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for t in list(self._tasks):
            t.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    def _log(self, **rec) -> None:
        if self.access_log is None:
            return
        rec["server"] = self.name
        self.access_log.write(json.dumps(rec, sort_keys=True) + "\n")
        self.access_log.flush()

    async def _on_conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._tasks.add(task)
        peer = writer.get_extra_info("peername") or ("-", 0)
        client = str(peer[0])
        try:
            if self.n_conns >= self.max_conns:
                refusal = text_response(503, "too many connections", [("Retry-After", "1")])
                await self._send_simple(reader, writer, refusal, client)
                return
            self.n_conns += 1
            try:
                sock = writer.get_extra_info("socket")
                if sock is not None:
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                await self._serve_conn(reader, writer, client)
            finally:
                self.n_conns -= 1
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            pass  # client went away or stalled mid-response: nothing left to answer
        except (EOFError, OSError) as exc:  # server-side I/O fault: report, drop the connection
            print(f"{self.name}: connection from {client} aborted: {type(exc).__name__}: {exc}",
                  file=sys.stderr, flush=True)
        finally:
            try:
                await close_writer(writer)
            finally:
                self._tasks.discard(task)

    async def _read_head(self, reader: asyncio.StreamReader,
                         new_conn: bool) -> bytes | Response | None:
        """The next request head, an error Response, or None on clean idle/EOF close.

        A new connection must deliver its whole first head within header_timeout_s of being
        accepted (one deadline: a client that waits before its first byte gets no extra
        time); between requests of a keep-alive connection the client may idle for
        idle_timeout_s, then has header_timeout_s from its first byte.
        """
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            async with asyncio.timeout(self.header_timeout_s if new_conn else self.idle_timeout_s):
                first = await reader.readexactly(1)
        except (TimeoutError, asyncio.IncompleteReadError):
            return None
        deadline = (started if new_conn else loop.time()) + self.header_timeout_s
        try:
            async with asyncio.timeout_at(deadline):
                rest = await reader.readuntil(b"\r\n\r\n")
        except TimeoutError:
            return text_response(408, "request header timeout")
        except asyncio.IncompleteReadError:
            return text_response(400, "incomplete request head")
        except asyncio.LimitOverrunError:
            return text_response(431, "request head too large")
        return first + rest

    async def _serve_conn(self, reader, writer, client: str) -> None:
        new_conn = True
        while True:
            head = await self._read_head(reader, new_conn)
            new_conn = False
            if head is None:
                return
            t0 = time.monotonic()
            if isinstance(head, Response):
                await self._send_simple(reader, writer, head, client, t0)
                return
            try:
                req = parse_request_head(head)
                n = req.content_length()
                if n:
                    if req.headers.get("expect", "").lower() == "100-continue":
                        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                    async with asyncio.timeout(self.header_timeout_s):
                        req.body = await reader.readexactly(n)
            except HttpError as exc:
                await self._send_simple(reader, writer, text_response(exc.status, exc.message),
                                        client, t0)
                return
            except TimeoutError:
                await self._send_simple(reader, writer, text_response(408, "request body timeout"),
                                        client, t0)
                return
            self.requests += 1
            try:
                resp = await self.handler(req, client)
            except Exception:  # noqa: BLE001 - reported on stderr, answered 500, server lives on
                traceback.print_exc(file=sys.stderr)
                resp = text_response(500, "internal error", close=True)
            keep = req.keep_alive and not resp.close
            try:
                sent = await self._send(writer, req, resp, keep, client, t0)
            finally:
                if resp.file is not None:
                    resp.file.close()
                if resp.on_done is not None:
                    resp.on_done()
            if not keep or not sent:
                return

    async def _send_simple(self, reader, writer, resp: Response, client: str,
                           t0: float | None = None):
        """Send a final response (Connection: close), then close lingeringly."""
        t0 = time.monotonic() if t0 is None else t0
        head = render_response_head(resp.status, resp.headers, len(resp.body), False)
        writer.write(head + resp.body)
        try:
            async with asyncio.timeout(5.0):
                await writer.drain()
        finally:
            ms = (time.monotonic() - t0) * 1000
            self._log(ts=time.time(), client=client, method="-", path="-", range=None,
                      status=resp.status, bytes=len(resp.body), cache="none",
                      ttfb_ms=round(ms, 3), duration_ms=round(ms, 3))
        await linger(reader, writer)

    async def _send(self, writer, req: Request, resp: Response, keep: bool, client: str,
                    t0: float) -> bool:
        """Write one response; returns False if the body could not be completed."""
        d = resp.decision
        length = d.content_length if d is not None else \
            (resp.stream_length if resp.stream is not None else len(resp.body))
        head = render_response_head(resp.status, [*resp.headers, (NODE_HEADER, self.name),
                                                  *CORS_HEADERS], length, keep)
        send_body = req.method != "HEAD" and (d.send_body if d is not None else True)
        writer.write(head)
        ttfb_ms = (time.monotonic() - t0) * 1000
        sent, ok = 0, False
        try:
            async with asyncio.timeout(SEND_TIMEOUT_S):
                if not send_body:
                    pass
                elif resp.stream is not None:
                    async for part in resp.stream:
                        writer.write(part)
                        sent += len(part)
                        await writer.drain()
                elif d is None:
                    writer.write(resp.body)
                    sent = len(resp.body)
                else:
                    sent = await self._send_parts(writer, resp, d)
                await writer.drain()
            ok = True
        finally:
            if self.on_bytes is not None and sent:
                self.on_bytes(sent)
            self._log(ts=time.time(), client=client, method=_log_field(req.method),
                      path=_log_field(req.path), range=_log_field(req.headers.get("range")),
                      status=resp.status, bytes=sent,
                      cache=resp.cache, ttfb_ms=round(ttfb_ms, 3),
                      duration_ms=round((time.monotonic() - t0) * 1000, 3),
                      **({"note": resp.note} if resp.note else {}))
        return ok

    async def _send_parts(self, writer, resp: Response, d: Decision) -> int:
        sent = 0
        if resp.data is not None:
            view = memoryview(resp.data)
            for p in d.parts:
                writer.write(p.prefix + view[p.start:p.end] if p.prefix else view[p.start:p.end])
                sent += len(p.prefix) + p.end - p.start
                await writer.drain()
        elif resp.file is not None:
            loop = asyncio.get_running_loop()
            for p in d.parts:
                if p.prefix:
                    writer.write(p.prefix)
                    sent += len(p.prefix)
                if p.end > p.start and self._pool is not None and self.ssl_context is None:
                    await writer.drain()
                    sent += await threaded_sendfile(self._pool, writer.get_extra_info("socket"),
                                                    resp.file, p.start, p.end - p.start)
                elif p.end > p.start and self.ssl_context is not None:
                    sent += await send_file_tls(writer, resp.file, p.start, p.end - p.start,
                                                self._pool)
                elif p.end > p.start:
                    try:
                        sent += await loop.sendfile(writer.transport, resp.file, p.start,
                                                    p.end - p.start)
                    except RuntimeError as exc:  # asyncio's way to say the peer went away
                        if writer.transport.is_closing():
                            raise ConnectionResetError("transport closed mid-sendfile") from exc
                        raise
        if d.trailer:
            writer.write(d.trailer)
            sent += len(d.trailer)
        return sent


def _log_field(value: str | None) -> str | None:
    """Client-supplied text for the access log, cut to LOG_FIELD_MAX characters."""
    if value is None or len(value) <= LOG_FIELD_MAX:
        return value
    return f"{value[:LOG_FIELD_MAX]}...(+{len(value) - LOG_FIELD_MAX} chars)"


async def linger(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Lingering close: send FIN, then discard what the client still sends (at most
    LINGER_BYTES for LINGER_S). Closing with unread input makes the kernel answer with a RST,
    which can destroy the error response (e.g. the 503 to a client over the connection cap
    that sent its request at once) before the client reads it."""
    if writer.can_write_eof():
        writer.write_eof()
    n = 0
    try:
        async with asyncio.timeout(LINGER_S):
            while n < LINGER_BYTES and (chunk := await reader.read(65536)):
                n += len(chunk)
    except (TimeoutError, ConnectionError):
        pass  # client went quiet or away: nothing left to protect


async def close_writer(writer: asyncio.StreamWriter) -> None:
    """Close and wait until the transport is gone (at most CLOSE_WAIT_S, then abort).

    Waiting retrieves the connection's close exception: a peer's reset is stored on the
    stream protocol's close future, and if nobody awaits it, the garbage collector may log
    "Future exception was never retrieved" with a traceback, depending on the order in which
    it finalizes the cycle of protocol, future and exception."""
    writer.close()
    try:
        async with asyncio.timeout(CLOSE_WAIT_S):
            await writer.wait_closed()
    except (ConnectionError, OSError):
        pass  # the peer reset or the socket failed: the connection is gone either way
    except TimeoutError:
        writer.transport.abort()  # unsent bytes to a peer that does not read: drop them


TLS_CHUNK_BYTES = 1 << 20  # file bytes read and handed to the TLS transport at once


async def send_file_tls(writer: asyncio.StreamWriter, f: BinaryIO, offset: int, count: int,
                        pool: concurrent.futures.Executor | None) -> int:
    """A file range through a TLS transport (userspace TLS: the bytes must be read to be
    encrypted): TLS_CHUNK_BYTES preads (in `pool`, else inline) written as they come. Raises
    ConnectionResetError as soon as the peer is gone, so no write goes to a closed session."""
    loop, fd, sent = asyncio.get_running_loop(), f.fileno(), 0
    while sent < count:
        if writer.transport.is_closing():
            raise ConnectionResetError("transport closed mid-body")
        n = min(TLS_CHUNK_BYTES, count - sent)
        data = (await loop.run_in_executor(pool, os.pread, fd, n, offset + sent) if pool
                else os.pread(fd, n, offset + sent))
        if not data:
            raise OSError(f"file ended {count - sent} bytes before its range")
        writer.write(data)
        sent += len(data)
        await writer.drain()
    return sent


def _sendfile_until_blocked(out_fd: int, in_fd: int, offset: int, count: int) -> int:
    """os.sendfile on a non-blocking socket until done or EAGAIN (runs in a worker thread)."""
    sent = 0
    while sent < count:
        try:
            n = os.sendfile(out_fd, in_fd, offset + sent, count - sent)
        except BlockingIOError:
            break
        if n == 0:
            raise EOFError("file shorter than the response announced")
        sent += n
    return sent


async def threaded_sendfile(pool: concurrent.futures.Executor, sock: socket.socket,
                            f: BinaryIO, offset: int, count: int) -> int:
    """Zero-copy send from worker threads, so kernel copies use more than one core.

    The transport's write buffer must be empty (caller drains first) and nothing else may
    write meanwhile. Private dups of both fds keep their numbers from being reused while a
    thread still uses them, even if this coroutine is cancelled and the connection closed.
    """
    loop = asyncio.get_running_loop()
    out_fd, in_fd = os.dup(sock.fileno()), os.dup(f.fileno())

    def close_fds(_fut=None, fds=(out_fd, in_fd)) -> None:
        for fd in fds:
            os.close(fd)
    handed_off = False  # True once a running thread owns closing the fds
    sent = 0
    try:
        while sent < count:
            cf = loop.run_in_executor(pool, _sendfile_until_blocked, out_fd, in_fd,
                                      offset + sent, count - sent)
            try:
                sent += await asyncio.shield(cf)
            except asyncio.CancelledError:
                cf.add_done_callback(close_fds)
                handed_off = True
                raise
            if sent < count:
                writable = loop.create_future()
                loop.add_writer(out_fd, lambda: writable.done() or writable.set_result(None))
                try:
                    await writable
                finally:
                    loop.remove_writer(out_fd)
        return sent
    finally:
        if not handed_off:
            close_fds()


def parse_listen(value: str) -> tuple[str, int]:
    """`HOST:PORT` -> (host, port); port 0 picks a free port."""
    host, sep, port_s = value.rpartition(":")
    if not sep or not host or not port_s.isdigit() or not 0 <= int(port_s) <= 65535:
        raise ValueError(f"--listen must be HOST:PORT, got {value!r}")
    return host.strip("[]"), int(port_s)


async def run_until_signal(server: HttpServer, host: str, port: int,
                           on_start: Callable[[], Awaitable[None]] | None = None,
                           on_stop: Callable[[], Awaitable[None]] | None = None) -> None:
    """Start, print `READY host:port`, serve until SIGTERM/SIGINT, then close cleanly."""
    import signal

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    bound_host, bound_port = await server.start(host, port)
    if on_start is not None:
        await on_start()
    print(f"READY {bound_host}:{bound_port}", flush=True)
    await stop.wait()
    if on_stop is not None:
        await on_stop()
    await server.close()


async def serve_from_args(args, handle, name: str, on_start: Callable[[], Awaitable[None]] | None = None,
                          on_stop: Callable[[], Awaitable[None]] | None = None, **server_kw) -> None:
    """Serve `handle` on args.listen until SIGTERM/SIGINT with the common server flags of the
    origin and the OCA (max_conns, header and idle timeouts, an append-mode access_log, TLS
    when --tls-cert/--tls-key are given)."""
    host, port = parse_listen(args.listen)
    server_kw.setdefault("ssl_context", server_context_from_args(args))
    log = open(args.access_log, "a", encoding="utf-8") if args.access_log else None
    try:
        server = HttpServer(handle, max_conns=args.max_conns, header_timeout_s=args.header_timeout_s,
                            idle_timeout_s=args.idle_timeout_s, access_log=log, name=name, **server_kw)
        await run_until_signal(server, host, port, on_start, on_stop)
    finally:
        if log is not None:
            log.close()
