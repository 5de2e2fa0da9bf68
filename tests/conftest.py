"""Shared test fixtures: root/OVS availability checks and one session-wide emulated `metro`.

- Tests marked `emulation` are skipped (with the reason) when not running as root.
- `needs_root` is a skip marker for tests that need root without being full emulations.
- `metro_net` builds the default metro Network (controller on when controller.launcher
  starts, fidelity gate off) once per test module that uses it, and stops it when that module
  ends. Not session-wide: build.py holds a machine-wide lock (/run/ocalab/network.lock) while a
  network is up, so a network kept for the whole session would block every later test that
  builds its own network (they would wait for the lock, up to Options.lock_wait_s).
"""
from __future__ import annotations

import functools
import importlib.util
import os
import shutil
import subprocess
import sys

import pytest

IS_ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not IS_ROOT, reason="needs root (network namespaces, OVS, tc)")


@functools.cache
def emulation_unavailable() -> str | None:
    """Why a Mininet/OVS network cannot be built here, or None when it can."""
    if not IS_ROOT:
        return "needs root (network namespaces, OVS, tc)"
    for binary in ("ip", "tc", "mnexec", "ovs-vsctl", "ethtool"):
        if shutil.which(binary) is None:
            return f"{binary} is not installed (sudo make setup)"
    if importlib.util.find_spec("mininet") is None:
        return "mininet is not importable (venv without --system-site-packages?)"
    r = subprocess.run(["ovs-vsctl", "--timeout=3", "show"], capture_output=True, text=True)
    if r.returncode != 0:
        return f"Open vSwitch is not running: {r.stderr.strip()} (sudo make setup)"
    return None


@functools.cache
def controller_works() -> bool:
    """True when controller/launcher.py exists and its argument parser starts (imports os-ken)."""
    if importlib.util.find_spec("controller.launcher") is None:
        return False
    r = subprocess.run([sys.executable, "-m", "controller.launcher", "--help"],
                       capture_output=True, text=True, timeout=60)
    return r.returncode == 0


def pytest_collection_modifyitems(config, items):
    skip = pytest.mark.skip(reason="needs root (network namespaces, OVS, tc)")
    for item in items:
        if not IS_ROOT and item.get_closest_marker("emulation"):
            item.add_marker(skip)


@pytest.fixture(scope="module")
def metro_net():
    """The default metro topology, built once per module; yields a started emulation.build.Network."""
    reason = emulation_unavailable()
    if reason:
        pytest.skip(reason)
    from emulation.build import Network, Options
    from topologies.catalog import metro
    net = Network(metro(), Options(controller=controller_works(), verify=False,
                                   label="pytest-metro"))
    net.start()
    try:
        yield net
    finally:
        net.stop()


@pytest.fixture
def http_stub():
    """Start tiny HTTP servers on 127.0.0.1: `http_stub(respond)` returns the base URL, where
    `respond(path) -> bytes` answers every GET with 200 and those bytes (it may sleep, record
    the path, or fetch elsewhere). Every server is shut down after the test."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    servers = []

    def start(respond) -> str:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server API)
                body = respond(self.path)
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass
        srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
        return f"http://127.0.0.1:{srv.server_address[1]}"
    yield start
    for srv in servers:
        srv.shutdown()
        srv.server_close()


def start_appliance(module: str, *args: str, timeout_s: float = 15.0) -> tuple[subprocess.Popen, int]:
    """`python -m module --listen 127.0.0.1:0 *args` until it prints READY; (process, its port).
    A process that does not get ready is killed and its stderr raised."""
    import select
    proc = subprocess.Popen([sys.executable, "-m", module, "--listen", "127.0.0.1:0", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ready, _, _ = select.select([proc.stdout], [], [], timeout_s)
    line = proc.stdout.readline() if ready else ""
    if not line.startswith("READY "):
        proc.kill()
        raise RuntimeError(f"{module} did not start: {line!r} {proc.stderr.read()[-2000:]}")
    return proc, int(line.strip().rsplit(":", 1)[1])


# one small real-media build shared by every test that needs encoded media (cached under
# build/media/ by its settings, so only the first run on a machine encodes: ~10-20 s)
TEST_MEDIA = dict(n_titles=2, patterns=("still", "fractal"), duration_s=8, segment_s=2,
                  probe_kbps=(100, 300, 900))


@pytest.fixture(scope="session")
def media_build():
    from appliances.media_encode import MediaSettings, build
    return build(MediaSettings(**TEST_MEDIA))
