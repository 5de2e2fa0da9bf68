"""The OCA prober: its adaptive timeout (pure), the controller's reading of "pending", and the
real `python -m controller.probe` process against real HTTP servers on 127.0.0.1."""
from __future__ import annotations

import json
import signal
import statistics
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from controller.ocas import PENDING_ERROR, OcaRegistry
from controller.probe_timer import MAX_TIMEOUT_S, MIN_TIMEOUT_S, ProbeTimer

NOW = 1000.0
# the fields a deployment OCA needs besides name, tier and url (contracts.deployment)
PLACE = {"serves": ["127.0.0.0/8"], "distance_hops": 1, "rtt_ms": 1.0}


# ---- the timer (RFC 6298 shape) ----------------------------------------------------------
def test_timer_starts_at_the_floor_and_stays_there_for_short_round_trips():
    t = ProbeTimer()
    assert t.timeout_s() == MIN_TIMEOUT_S
    for rtt in (0.09, 0.11, 0.08, 0.1):
        t.answered(rtt)
    assert t.timeout_s() == MIN_TIMEOUT_S and 0.08 < t.srtt_s < 0.11


def test_timer_follows_long_variable_round_trips_and_caps():
    t = ProbeTimer()
    t.answered(1.0)  # first sample: SRTT = R, RTTVAR = R/2 -> 1 + 4 x 0.5 = 3 s
    assert t.timeout_s() == pytest.approx(3.0)
    t.answered(0.5)  # RTTVAR = 3/4 x 0.5 + 1/4 x 0.5 = 0.5; SRTT = 7/8 + 1/16 = 0.9375
    assert t.timeout_s() == pytest.approx(0.9375 + 4 * 0.5)
    t.answered(5.0)
    assert t.timeout_s() == MAX_TIMEOUT_S


def test_timer_backs_off_on_timeouts_and_an_answer_ends_it():
    t = ProbeTimer()
    seen = []
    for _ in range(4):
        seen.append(t.timeout_s())
        t.timed_out()
    assert seen == [1.5, 3.0, 6.0, 6.0]
    t.answered(0.1)
    assert t.timeout_s() == MIN_TIMEOUT_S and t.timeouts_in_row == 0


# ---- "pending" at the controller -----------------------------------------------------------
def _push(probe: dict, health: dict | None) -> dict:
    return {"origin": {"name": "origin", "url": "http://198.19.10.11:8080"},
            "ocas": [{"name": "i1oca1", "tier": "embedded", "url": "http://198.18.1.100:8080",
                      "serves": ["198.18.1.0/24"], "probe": probe, "health": health}]}


def test_pending_keeps_the_last_state_and_lets_the_heartbeat_age():
    reg = OcaRegistry()
    reg.apply(_push({"ok": True, "error": None, "rtt_ms": 90.0}, {"status": "ok", "load": 0.3}), NOW)
    reg.apply(_push({"ok": False, "error": PENDING_ERROR, "rtt_ms": 400.0}, None), NOW + 1.0)
    [s] = reg.states()
    assert (s.status, s.load, s.heartbeat_s) == ("ok", 0.3, NOW)
    assert reg.view(NOW + 1.0)["ocas"][0]["timeouts_in_row"] == 0
    with pytest.raises(ValueError, match=r"ocas\[0\].url"):  # still validated whole
        bad = _push({"ok": False, "error": PENDING_ERROR, "rtt_ms": 1.0}, None)
        bad["ocas"][0]["url"] = "ftp://x"
        reg.apply(bad, NOW + 1.1)


def test_the_registry_reads_a_pull_through_miss_mode():
    reg = OcaRegistry()
    reg.apply(_push({"ok": True, "error": None, "rtt_ms": 1.0}, {"status": "ok", "miss_mode": "proxy"}), NOW)
    assert reg.states()[0].pulls_through
    reg.apply(_push({"ok": True, "error": None, "rtt_ms": 1.0}, {"status": "ok", "miss_mode": "content_miss"}),
              NOW + 1)
    assert not reg.states()[0].pulls_through


def test_pending_before_any_answer_is_not_healthy():
    reg = OcaRegistry()
    reg.apply(_push({"ok": False, "error": PENDING_ERROR, "rtt_ms": 400.0}, None), NOW)
    [s] = reg.states()
    assert s.status == "pending" and s.heartbeat_s is None


# ---- the real prober -----------------------------------------------------------------------
_OCA = """
import json, sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
delay_s = float(sys.argv[1])
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        time.sleep(delay_s)
        body = json.dumps({"status": "ok", "load": 0.1}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
s = ThreadingHTTPServer(("127.0.0.1", 0), H)
print(s.server_address[1], flush=True)
s.serve_forever()
"""


class _Pushes:
    """A push receiver on 127.0.0.1 that records (receive time, body)."""

    def __init__(self) -> None:
        self.got: list[tuple[float, dict]] = []
        outer = self

        class H(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.got.append((time.monotonic(), body))
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/ocas"

    def probes(self, name: str, since: float = 0.0) -> list[tuple[float, dict]]:
        return [(t, o["probe"]) for t, b in self.got if t >= since for o in b["ocas"] if o["name"] == name]


@pytest.fixture
def servers():
    """Start OCA stand-ins by answer delay; each is SIGKILLed (if still alive) afterwards."""
    procs = []

    def start(delay_s: float) -> tuple[subprocess.Popen, str]:
        p = subprocess.Popen([sys.executable, "-c", _OCA, str(delay_s)], stdout=subprocess.PIPE, text=True)
        procs.append(p)
        return p, f"http://127.0.0.1:{int(p.stdout.readline())}"
    yield start
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait(5)


def test_a_slow_oca_neither_times_out_nor_holds_back_news_of_a_dead_one(servers, tmp_path):
    """One OCA answers in 0.8 s (beyond the old fixed 0.5 s timeout), one at once and is then
    SIGKILLed: pushes keep their 0.25 s interval, the slow one is answered (pending between
    answers, never a timeout), the death is pushed within about one interval."""
    _, slow_url = servers(0.8)
    victim, fast_url = servers(0.0)
    dep = tmp_path / "deployment.json"
    dep.write_text(json.dumps({"origin": {"name": "origin", "url": "http://127.0.0.1:9"},
                               "ocas": [{"name": "slow", "tier": "embedded", "url": slow_url, **PLACE},
                                        {"name": "fast", "tier": "ixp", "url": fast_url, **PLACE}]}))
    rx = _Pushes()
    prober = subprocess.Popen([sys.executable, "-m", "controller.probe", "--deployment", str(dep),
                               "--push", rx.url], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert prober.stdout.readline().strip() == "READY probe 2 ocas"
        time.sleep(3.0)
        t_kill = time.monotonic()
        victim.send_signal(signal.SIGKILL)
        victim.wait(5)
        time.sleep(1.5)
        prober.send_signal(signal.SIGTERM)
        t_term = time.monotonic()
        assert prober.wait(10) == 0
        stop_s = time.monotonic() - t_term
    finally:
        if prober.poll() is None:
            prober.kill()
            prober.wait(5)
        rx.server.shutdown()
    times = [t for t, _ in rx.got]
    gaps = [b - a for a, b in zip(times, times[1:])]
    slow = [p for _, p in rx.probes("slow")]
    print(f"\n{len(times)} pushes, gap median {statistics.median(gaps) * 1e3:.0f} ms; slow OCA: "
          f"{sum(p['ok'] for p in slow)} answers, {sum(p['error'] == PENDING_ERROR for p in slow)} pending; "
          f"SIGTERM -> exit {stop_s:.2f} s")
    assert statistics.median(gaps) < 0.5  # the 0.8 s probe does not set the pace
    assert all(p["error"] in (None, PENDING_ERROR) for p in slow), slow
    oks = [p for p in slow if p["ok"]]
    assert len(oks) >= 3 and all(700 < p["rtt_ms"] < 1400 for p in oks)
    assert all(p["timeout_ms"] >= 1000 * MIN_TIMEOUT_S for p in slow)
    dead = [(t, p) for t, p in rx.probes("fast", since=t_kill) if p["error"] not in (None, PENDING_ERROR)]
    assert dead and dead[0][0] - t_kill < 1.0, rx.probes("fast", since=t_kill)[:4]
    assert dead[0][1]["error"] != "timeout"  # refused or reset: the fast signal
    assert stop_s < 4.0  # a probe in flight does not hold up SIGTERM


def test_a_deployment_without_ocas_still_pushes(tmp_path):
    """The `none` arm of fill has no OCAs: the prober must still push (the origin) and be READY."""
    dep = tmp_path / "deployment.json"
    dep.write_text(json.dumps({"origin": {"name": "origin", "url": "http://127.0.0.1:9"}, "ocas": []}))
    rx = _Pushes()
    prober = subprocess.Popen([sys.executable, "-m", "controller.probe", "--deployment", str(dep),
                               "--push", rx.url], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert prober.stdout.readline().strip() == "READY probe 0 ocas"
        prober.send_signal(signal.SIGTERM)
        assert prober.wait(10) == 0
    finally:
        if prober.poll() is None:
            prober.kill()
            prober.wait(5)
        rx.server.shutdown()
    assert rx.got and rx.got[0][1]["ocas"] == [] and rx.got[0][1]["origin"]["name"] == "origin"
