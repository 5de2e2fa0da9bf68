"""`ocalab web RUN_DIR` on the reference placement run (no root): the HTTP API answers and
refuses, and in headless Chromium the slider moves the page through the run."""
import json
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from webpage import browser

pytestmark = pytest.mark.integration
REF = Path(__file__).resolve().parent.parent / "results" / "placement" / "rep1"


@pytest.fixture(scope="module")
def served():
    from ocalab.web import replay
    from ocalab.web.app import Replay, WebServer, create_app
    data = replay.load(REF)
    server = WebServer(create_app(Replay(data)), 0)
    url = server.start()
    try:
        yield url, data
    finally:
        server.stop()


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_api_serves_the_run_and_refuses_what_a_replay_lacks(served):
    url, data = served
    status, body = _get(url + "api/info")
    info = json.loads(body)
    assert status == 200 and info["mode"] == "replay" and info["frames"] == len(data["frames"])
    status, body = _get(url + "api/stream")
    assert status == 404 and "no stream" in json.loads(body)["error"]
    assert _get(url + "static/vendor/cytoscape.min.js")[0] == 200  # served locally, no CDN
    assert _get(url + "static/../app.py")[0] == 404
    assert _get(url + "nothing")[0] == 404


def test_slider_moves_the_page_through_the_run(served, tmp_path):
    url, data = served
    frames = data["frames"]
    busy = max(range(len(frames)), key=lambda i: sum(lk["mbps"] for lk in frames[i]["links"].values()))
    link = max(frames[busy]["links"], key=lambda n: frames[busy]["links"][n]["mbps"])
    with browser() as page:
        t0 = time.monotonic()
        page.goto(url)
        page.wait_for_function("document.body.dataset.frames >= 1", timeout=15_000)
        print(f"web replay: {len(frames)} frames, page drawn {time.monotonic() - t0:.2f} s after goto")
        assert page.get_attribute("body", "data-nodes") == str(len(data["topology"]["nodes"]))
        assert "replay of placement" in page.inner_text("#mode")
        assert page.get_attribute("#slider", "max") == str(len(frames) - 1)
        first = page.get_attribute(f'#links tr[data-link="{link}"]', "data-mbps")
        page.fill("#slider", str(busy))
        page.wait_for_function(f"document.body.dataset.frameT === '{frames[busy]['t']}'", timeout=10_000)
        shown = float(page.get_attribute(f'#links tr[data-link="{link}"]', "data-mbps"))
        assert shown == pytest.approx(frames[busy]["links"][link]["mbps"]) and shown > 0
        assert float(first or 0) != shown
        assert page.inner_text("#arm") == frames[busy]["arm"]
        assert "status and load: not saved" in page.inner_text("#src-ocas")
        shot = tmp_path / "web-replay.png"
        page.screenshot(path=str(shot))
        assert shot.stat().st_size > 10_000


class _Ticking:
    """A live source's interface over fixed data: a new frame every call (no network needed)."""
    mode = "live"

    def info(self) -> dict:
        return {"mode": "live"}

    def current(self):
        return time.monotonic_ns(), {"t": time.time()}


def test_stream_sends_frames_and_ends_at_stop_and_a_busy_port_is_refused():
    import threading
    from ocalab.web.app import WebServer, create_app
    server = WebServer(create_app(_Ticking(), poll_s=0.05), 0)
    url = server.start()
    lines: list[bytes] = []

    def read():
        with urllib.request.urlopen(url + "api/stream", timeout=30) as r:
            lines.extend(r)  # returns when the server ends the stream
    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and sum(x.startswith(b"data: ") for x in lines) < 2:
        time.sleep(0.05)
    port = int(url.rsplit(":", 1)[1].strip("/"))
    with pytest.raises(OSError, match="could not listen"):
        WebServer(create_app(_Ticking()), port).start()
    server.stop()
    reader.join(10)
    assert not reader.is_alive() and not server.thread.is_alive()
    frames = [json.loads(x[6:]) for x in lines if x.startswith(b"data: ")]
    assert len(frames) >= 2 and lines[0] == b"event: frame\n"


@pytest.mark.parametrize("args, fragment", [
    (["web", "/nonexistent-run"], "no manifest.json; not a run folder"),
    (["web", str(REF.parent)], "a --repeat series; replay one of:"),
    (["web", str(REF), "--port", "99999"], "a port is 0..65535"),
])
def test_ocalab_web_refuses_bad_input_clearly(args, fragment):
    import subprocess
    import sys
    r = subprocess.run([sys.executable, "-m", "ocalab.cli", *args], capture_output=True, text=True, timeout=60,
                       cwd=Path(__file__).resolve().parent.parent)
    assert r.returncode != 0 and fragment in r.stderr and "Traceback" not in r.stderr, r.stderr
