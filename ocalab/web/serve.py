"""The shells the CLI calls: `ocalab web RUN_DIR` (replay, blocks) and `--web [PORT]` of
`ocalab cli` and `ocalab run` (live, beside the network, stopped with it)."""
from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path


def serve_replay(run_dirs: list[Path], port: int) -> int:
    """Serve the newest of `run_dirs` (a shell glob may name several) until Ctrl-C."""
    from ocalab.web import replay
    from ocalab.web.app import Replay, WebServer, create_app
    run_dir = max(run_dirs, key=lambda p: p.name)
    if len(run_dirs) > 1:
        print(f"ocalab web: {len(run_dirs)} run folders given; replaying the newest, {run_dir}")
    try:
        data = replay.load(run_dir)
    except replay.ReplayError as e:
        raise SystemExit(f"ocalab web: {e}") from None
    server = WebServer(create_app(Replay(data)), port)
    try:
        url = server.start()
    except OSError as e:
        raise SystemExit(f"ocalab web: {e}") from None
    print(f"ocalab web: {run_dir} ({len(data['frames'])} frames) at {url}  (Ctrl-C stops)", flush=True)
    try:
        server.thread.join()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


@contextmanager
def live(net, logs: Path | None, port: int | None):
    """While the block runs, the live view of `net` on 127.0.0.1:port (None: no view)."""
    if port is None:
        yield None
        return
    from ocalab.web.app import WebServer, create_app
    from ocalab.web.live import LiveSource
    source = LiveSource(net.plan, net.api_url, logs).start()
    server = WebServer(create_app(source), port)
    try:
        url = server.start()
    except OSError as e:
        source.stop()
        raise SystemExit(f"ocalab: --web: {e}") from None
    print(f"ocalab web: live view at {url}", file=sys.stderr, flush=True)
    try:
        yield url
    finally:
        server.stop()
        source.stop()
