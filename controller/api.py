"""Small HTTP/JSON API on 127.0.0.1 (stdlib http.server in a daemon thread).

Routes are a table `(method, path) -> handler`; a handler takes the parsed query (dict of
lists) and the request body (bytes, empty for GET) and returns a JSON-ready object, or raises
ApiError(status, message). Any other exception is logged with its traceback and answered
with 500, so a broken view is visible to the caller. Later issues add routes with `add_route`.
"""
from __future__ import annotations

import json
import logging
import threading
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

    def __init__(self, port: int = 0) -> None:
        self.routes: dict[tuple[str, str], Handler] = {}
        self.httpd = ThreadingHTTPServer((LISTEN_HOST, port), self._handler_class())
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self._thread: threading.Thread | None = None

    def add_route(self, method: str, path: str, handler: Handler) -> None:
        key = (method.upper(), path)
        if key in self.routes:
            raise ValueError(f"route {method} {path} is already defined")
        self.routes[key] = handler

    def add_view(self, path: str, view: Callable[[], Any]) -> None:
        """A GET route that takes no arguments."""
        self.add_route("GET", path, lambda query, body: view())

    def start(self) -> None:
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="ocalab-api", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

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


def controller_api(state, port: int = 0) -> ApiServer:
    """The controller's API over a ControllerState (see controller.app)."""
    api = ApiServer(port)
    api.add_view("/health", state.health)
    api.add_view("/switches", state.switches_view)
    api.add_view("/links", state.links_view)
    api.add_view("/classes", state.classes_view)
    api.add_view("/ports", state.ports_view)
    return api
