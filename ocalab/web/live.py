"""The live source of `--web`: once a second, the controller's port counters and OCA view (its
HTTP API on 127.0.0.1) and the players' chunk logs become one frame (ocalab.web.frames).

Runs in a daemon thread of the process that owns the network; it only reads (HTTP GETs, log
files) and never changes the lab. A source that does not answer leaves its panel empty with the
reason in the frame's `sources`; nothing is filled in.
"""
from __future__ import annotations

import collections
import csv
import io
import json
import sys
import threading
import time
import urllib.request
from pathlib import Path

from ocalab.web import frames as F

INTERVAL_S = 1.0
KEPT_CHUNKS = 5000


class ChunkTail:
    """New rows of every player chunk log `chunks-<host>.csv` under `root`, each with `host`
    (from the file name) and `arm` (the folder after `arms/`, as a run folder lays them out)."""

    def __init__(self, root: Path | None) -> None:
        self.root = root
        self.offsets: dict[Path, tuple[int, list[str] | None]] = {}

    def read(self) -> list[dict]:
        if self.root is None or not self.root.exists():
            return []
        rows = []
        for path in sorted(self.root.rglob("chunks-*.csv")):
            offset, header = self.offsets.get(path, (0, None))
            with open(path, "rb") as f:
                f.seek(offset)
                data = f.read()
            complete = data[:data.rfind(b"\n") + 1]  # a line being written waits for the next read
            lines = complete.decode().splitlines()
            if header is None and lines:
                header, lines = next(csv.reader([lines[0]])), lines[1:]
            self.offsets[path] = (offset + len(complete), header)
            parts = path.parts
            arm = parts[parts.index("arms") + 1] if "arms" in parts[:-2] else None
            host = path.name[len("chunks-"):-len(".csv")]
            rows += [{**dict(zip(header, r)), "host": host, "arm": arm}
                     for r in csv.reader(io.StringIO("\n".join(lines))) if len(r) == len(header)]
        return rows


def get_json(url: str, timeout_s: float = 2.0):
    with urllib.request.urlopen(url, timeout=timeout_s) as r:
        return json.loads(r.read())


class LiveSource:
    """Frames of a running lab. `api_url`: the controller API (None: no controller); `logs`:
    where the players' chunk logs appear (a run folder or a services' logs folder; None: none)."""

    mode = "live"

    def __init__(self, plan, api_url: str | None, logs: Path | None, interval_s: float = INTERVAL_S) -> None:
        self.plan, self.api_url, self.interval_s = plan, api_url, interval_s
        self.tail = ChunkTail(logs)
        self.logs = logs
        self.chunks: collections.deque = collections.deque(maxlen=KEPT_CHUNKS)
        self.log = F.EventLog()
        self.errors: dict[str, str | None] = {}  # API path -> its last error (logged once)
        self.seq = 0
        self.latest: dict | None = None
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="ocalab-web-live", daemon=True)

    def info(self) -> dict:
        return {"mode": self.mode, "topology": F.topology(self.plan), "interval_s": self.interval_s}

    def start(self) -> "LiveSource":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(5)

    def current(self) -> tuple[int, dict | None]:
        with self.lock:
            return self.seq, self.latest

    def _loop(self) -> None:
        while not self.stopping.is_set():
            started = time.monotonic()
            try:
                f = self.sample(time.time())
            except Exception as e:  # a bad log line must not end the view: say so on the page
                print(f"ocalab web: a frame failed: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
                self.log.add(time.time(), "source", f"frame failed: {type(e).__name__}: {e}")
            else:
                with self.lock:
                    self.seq += 1
                    self.latest = {**f, "seq": self.seq}
            self.stopping.wait(max(0.0, self.interval_s - (time.monotonic() - started)))

    def sample(self, now: float) -> dict:
        """One frame from what the sources say now."""
        sources: dict[str, str | None] = {}
        links = ocas = None
        if self.api_url is None:
            sources["links"] = sources["ocas"] = None
        else:
            links = self._fetch(now, "/links", F.links_from_controller)
            ocas = self._fetch(now, "/ocas", F.ocas_from_controller)
            sources["links"] = None if links is None else "controller port counters (GET /links)"
            sources["ocas"] = None if ocas is None else "controller GET /ocas (the probe reads each OCA's /health)"
        self.chunks.extend(self.tail.read())
        serving, sessions = F.serving_and_sessions(self.chunks, now)
        sources["sessions"] = None if self.logs is None else f"player chunk logs (chunks-<host>.csv under {self.logs})"
        sources["events"] = "changes between frames"
        arm = max(self.chunks, key=lambda c: float(c["time"]))["arm"] if self.chunks else None
        self.log.arm(now, arm)
        self.log.observe(now, links, ocas, serving)
        return F.frame(now, arm, links, ocas, serving, sessions, self.log, sources)

    def _fetch(self, now: float, path: str, convert):
        """convert(GET path) or None; an error is logged when it starts, changes and ends."""
        try:
            out, err = convert(get_json(self.api_url + path)), None
        except (OSError, ValueError) as e:
            out, err = None, str(e)
        if err != self.errors.get(path, None):
            self.log.add(now, "source", f"controller {path}: {err or 'answers again'}")
            self.errors[path] = err
        return out
