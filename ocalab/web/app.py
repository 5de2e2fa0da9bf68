"""The web view's HTTP side (Starlette under uvicorn, 127.0.0.1 only).

Routes: GET / (the page), /static/* (its script, style and the vendored cytoscape.js),
/api/info (mode and topology), /api/frames (replay: every frame; live: the newest),
/api/stream (live only: server-sent events, one `frame` event per new frame).
"""
from __future__ import annotations

import asyncio
import json
import socket
import threading
from pathlib import Path

from starlette.applications import Starlette
from starlette.responses import FileResponse, JSONResponse, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

STATIC = Path(__file__).parent / "static"
VENDOR_JS = STATIC / "vendor" / "cytoscape.min.js"
HOST = "127.0.0.1"


class Replay:
    """A saved run's frames (ocalab.web.replay.load) as a source."""
    mode = "replay"

    def __init__(self, data: dict) -> None:
        self.data = data

    def info(self) -> dict:
        return {"mode": self.mode, "topology": self.data["topology"], "manifest": self.data["manifest"],
                "frames": len(self.data["frames"])}


def create_app(source, poll_s: float = 0.2) -> Starlette:
    """The app over `source`: a Replay, or a LiveSource (ocalab.web.live)."""
    if not VENDOR_JS.exists():
        raise FileNotFoundError(f"{VENDOR_JS} is missing: run `make web-assets` (or `sudo make setup`)")

    async def index(request):
        return FileResponse(STATIC / "index.html")

    async def info(request):
        return JSONResponse(source.info())

    async def frames(request):
        if source.mode == "replay":
            return JSONResponse(source.data["frames"])
        _, latest = source.current()
        return JSONResponse([] if latest is None else [latest])

    async def stream(request):
        if source.mode != "live":
            return JSONResponse({"error": "a replay has no stream; GET /api/frames"}, status_code=404)

        async def events():
            seen = -1
            while not closing.is_set() and not await request.is_disconnected():
                seq, latest = source.current()
                if latest is not None and seq != seen:
                    seen = seq
                    yield f"event: frame\ndata: {json.dumps(latest)}\n\n"
                await asyncio.sleep(poll_s)
        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store"})

    closing = threading.Event()  # set by WebServer.stop: open streams end, shutdown is clean
    app = Starlette(routes=[Route("/", index), Route("/api/info", info), Route("/api/frames", frames),
                            Route("/api/stream", stream),
                            Mount("/static", StaticFiles(directory=STATIC), name="static")])
    app.state.closing = closing
    return app


class WebServer:
    """uvicorn serving `app` on 127.0.0.1:port (0: any free port) in a daemon thread. The socket
    is bound here, so a busy port is an OSError in the caller (not an exit inside uvicorn)."""

    def __init__(self, app, port: int) -> None:
        import uvicorn
        self.app, self.port = app, port
        # a stream that outlives stop()'s `closing` is cut after a second
        self.server = uvicorn.Server(uvicorn.Config(app, host=HOST, port=port, log_level="warning",
                                                    lifespan="off", timeout_graceful_shutdown=1))
        self.thread: threading.Thread | None = None

    def start(self, timeout_s: float = 10.0) -> str:
        """Bind and start serving; the page's URL. OSError when the port cannot be bound or the
        server does not start."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, self.port))
        except OSError as e:
            sock.close()
            raise OSError(f"the web view could not listen on {HOST}:{self.port}: {e.strerror}") from None
        sock.listen(64)
        port = sock.getsockname()[1]
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]},
                                       name="ocalab-web", daemon=True)
        self.thread.start()
        pause = threading.Event()  # never set: a sleep
        for _ in range(int(timeout_s / 0.05)):
            if self.server.started or not self.thread.is_alive():
                break
            pause.wait(0.05)
        if not self.server.started:
            self.stop()
            raise OSError(f"the web view did not start on {HOST}:{port}")
        return f"http://{HOST}:{port}/"

    def stop(self) -> None:
        self.app.state.closing.set()
        self.server.should_exit = True
        if self.thread is not None:
            self.thread.join(5)
