"""Small HTTP/JSON API on 127.0.0.1, and optionally the management address (stdlib http.server,
one daemon thread per listening address, one route table).

Routes are a table `(method, path) -> handler`; a handler takes the parsed query (dict of
lists) and the request body (bytes, empty for GET) and returns a JSON-ready object, or raises
ApiError(status, message). Any other exception is logged with its traceback and answered
with 500, so a broken view is visible to the caller. Later issues add routes with `add_route`.

Controller endpoints (`controller_api`):
  GET  /health /switches /ports /classes     controller, switch and port views
  GET  /links                                per plan link: byte/packet counters, rates, `up`
  GET  /rank?viewer=IP[&title=T][&policy=P][&need=N]
                                             {"locations": [...usable, best first], "excluded": [...]};
                                             N (integer >= 1): objects of T the session needs (an
                                             OCA holding fewer is a content miss); absent: unknown
  GET  /ocas                                 OCA state as last pushed (status, load, heartbeat age,
                                             a brief of its last good /health: store, hits, fill)
  POST /ocas                                 a full OCA snapshot from controller.probe
  GET  /anycast                              anycast address, per-location counts, recent connections
  GET  /anycast/rank?viewer=IP[&title=T][&need=N]
                                             SDN anycast mode for the control plane
                                             (--steering <api>/anycast): anycast address, then origin
                                             (N validated as for /rank, unused: a new connection's
                                             title is unknown)
"""
from __future__ import annotations

import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit

LOG = logging.getLogger("ocalab.controller.api")
LISTEN_HOST = "127.0.0.1"
MAX_BODY_BYTES = 1 << 20

Handler = Callable[[dict[str, list[str]], bytes], Any]


class ApiError(Exception):
    """An error answer: HTTP status and a message for the JSON body."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class ApiServer:
    """Owns the listening socket and the route table."""

    def __init__(self, port: int = 0, extra_hosts: tuple[str, ...] = ()) -> None:
        """Listen on LISTEN_HOST:port (0: pick one) and on the same port of every extra host."""
        self.routes: dict[tuple[str, str], Handler] = {}
        self.httpd = ThreadingHTTPServer((LISTEN_HOST, port), self._handler_class())
        self.port = self.httpd.server_address[1]
        self.servers = [self.httpd]
        try:
            for host in extra_hosts:
                self.servers.append(ThreadingHTTPServer((host, self.port), self._handler_class()))
        except OSError:
            for srv in self.servers:
                srv.server_close()
            raise
        for srv in self.servers:
            srv.daemon_threads = True
        self.hosts = (LISTEN_HOST, *extra_hosts)

    def add_route(self, method: str, path: str, handler: Handler) -> None:
        key = (method.upper(), path)
        if key in self.routes:
            raise ValueError(f"route {method} {path} is already defined")
        self.routes[key] = handler

    def add_view(self, path: str, view: Callable[[], Any]) -> None:
        """A GET route that takes no arguments."""
        self.add_route("GET", path, lambda query, body: view())

    def start(self) -> None:
        for srv, host in zip(self.servers, self.hosts):
            threading.Thread(target=srv.serve_forever, name=f"ocalab-api-{host}", daemon=True).start()

    def stop(self) -> None:
        for srv in self.servers:
            srv.shutdown()
            srv.server_close()

    def dispatch(self, method: str, target: str, body: bytes) -> tuple[int, Any]:
        """Route one request; returns (status, JSON-ready object). No socket involved."""
        url = urlsplit(target)
        path = url.path.rstrip("/") or "/"
        handler = self.routes.get((method, path))
        if handler is None:
            allowed = sorted(m for m, p in self.routes if p == path)
            if allowed:
                return 405, {"error": f"{method} not allowed on {path}; allowed: {', '.join(allowed)}"}
            return 404, {"error": f"no such endpoint {path}",
                         "endpoints": sorted(f"{m} {p}" for m, p in self.routes)}
        try:
            return 200, handler(parse_qs(url.query), body)
        except ApiError as e:
            return e.status, {"error": str(e)}
        except Exception as e:  # noqa: BLE001 - answered with 500 and logged with traceback
            LOG.exception("API %s %s failed", method, path)
            return 500, {"error": f"{type(e).__name__}: {e}"}

    def _handler_class(self):
        server = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length > MAX_BODY_BYTES:
                    status, obj = 413, {"error": f"body larger than {MAX_BODY_BYTES} bytes"}
                else:
                    body = self.rfile.read(length) if length else b""
                    status, obj = server.dispatch(method, self.path, body)
                data = (json.dumps(obj, indent=1, sort_keys=True) + "\n").encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._serve("GET")

            def do_POST(self) -> None:
                self._serve("POST")

            def do_PUT(self) -> None:
                self._serve("PUT")

            def do_DELETE(self) -> None:
                self._serve("DELETE")

            def log_message(self, fmt: str, *args) -> None:
                LOG.debug("api %s " + fmt, self.client_address[0], *args)

        return _Handler


def _one(query: dict[str, list[str]], key: str, required: bool = True) -> str | None:
    vals = query.get(key)
    if not vals:
        if required:
            raise ApiError(400, f"missing query parameter {key!r}")
        return None
    if len(vals) > 1:
        raise ApiError(400, f"query parameter {key!r} given {len(vals)} times")
    return vals[0]


def _need(query: dict[str, list[str]]) -> int | None:
    """The optional `need` query parameter: None if absent, else an integer >= 1 (ApiError 400
    otherwise)."""
    raw = _one(query, "need", required=False)
    if raw is None:
        return None
    try:
        need = int(raw)
    except ValueError:
        raise ApiError(400, f"need must be an integer >= 1, got {raw!r}") from None
    if need < 1:
        raise ApiError(400, f"need must be an integer >= 1, got {raw!r}")
    return need


def controller_api(state, port: int = 0, extra_hosts: tuple[str, ...] = ()) -> ApiServer:
    """The controller's API over a ControllerState (see controller.app)."""
    from topologies.plan import PlanError

    api = ApiServer(port, extra_hosts)
    api.add_view("/health", state.health)
    api.add_view("/switches", state.switches_view)
    api.add_view("/links", state.links_view)
    api.add_view("/classes", state.classes_view)
    api.add_view("/ports", state.ports_view)
    api.add_view("/ocas", state.ocas_view)
    api.add_view("/anycast", state.anycast_view)

    def ranking(view):
        def handler(query, body):
            viewer = _one(query, "viewer")
            title = _one(query, "title", required=False)
            need = _need(query)
            try:
                return view(viewer, title, need, query)
            except (PlanError, ValueError) as e:
                raise ApiError(400, str(e)) from None
            except LookupError as e:
                raise ApiError(503, str(e)) from None
        return handler

    rank = ranking(lambda viewer, title, need, query: state.rank_view(
        viewer, title, time.time(), _one(query, "policy", required=False) or "nearest", need))
    anycast_rank = ranking(lambda viewer, title, need, query: state.anycast_rank_view(
        viewer, title, time.time()))

    def push(query, body):
        try:
            return state.ocas_push(json.loads(body or b"null"), time.time())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ApiError(400, f"body is not JSON: {e}") from None
        except ValueError as e:
            raise ApiError(400, str(e)) from None

    api.add_route("GET", "/rank", rank)
    api.add_route("GET", "/anycast/rank", anycast_rank)
    api.add_route("POST", "/ocas", push)
    return api
