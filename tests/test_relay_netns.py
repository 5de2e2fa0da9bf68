"""The relay process between real namespaces: A (ocrt<pid>a) <-> relay (ocrt<pid>r) <-> B (ocrt<pid>b).

Needs root.  One topology per module; each test starts its own relay and stops it by handle.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import subprocess
import sys

import pytest

from emulation import fidelity
from emulation.relay import EARLY_NS
from bench.links import (ADDR_A, ADDR_B, NetnsLab, build_chain, iperf_mbps,
                                    ping_rtts_ms, ping_run, start_relay)

pytestmark = [
    pytest.mark.emulation,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
]

UDP_PORT = 45678
_relay_ids = itertools.count()
# constant-delay behaviour is checked on both engines: the native relay (build/ocalab-relay,
# built by `make setup`) must do what emulation.delayline specifies, as the Python one does
ENGINES = ("python", "native")
engines = pytest.mark.parametrize("engine", ENGINES)
# Timestamps: CLOCK_REALTIME taken by the sender just before sending, and the kernel's
# receive timestamp (SO_TIMESTAMPNS = 35 on Linux, 64-bit timespec), so the receiver's
# scheduling delay does not count.
_OWD_RECEIVER = """
import json, socket, struct, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, 35, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.settimeout(3.0)
print("ready", flush=True)
owd_ms = []
try:
    while len(owd_ms) < int(sys.argv[3]):
        data, anc, _, _ = s.recvmsg(64, 256)
        sec, nsec = struct.unpack("qq", anc[0][2][:16])
        owd_ms.append((sec * 10**9 + nsec - struct.unpack("!q", data[:8])[0]) / 1e6)
except socket.timeout:
    pass
print(json.dumps(owd_ms), flush=True)
"""
_OWD_SENDER = """
import socket, struct, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(int(sys.argv[3])):
    s.sendto(struct.pack("!q", time.time_ns()), (sys.argv[1], int(sys.argv[2])))
    time.sleep(0.01)
"""


@pytest.fixture(scope="module")
def topo():
    """(lab, ns_a, ns_b, ns_r, ra, rb); namespaces are always deleted afterwards."""
    with NetnsLab(f"ocrt{os.getpid()}") as lab:
        ns_a, ns_b, [(ns_r, ra, rb)] = build_chain(lab, 1)
        yield lab, ns_a, ns_b, ns_r, ra, rb


@pytest.fixture
def relay(topo):
    """Start a relay with given params; stopped (SIGTERM) after the test if still running."""
    lab, _, _, ns_r, ra, rb = topo
    started = []

    def start(engine: str = "python", extra_args: tuple[str, ...] = (), **params):
        proc, stats_path = start_relay(lab, ns_r, ra, rb, f"t{next(_relay_ids)}",
                                       extra_args=("--engine", engine, *extra_args), **params)
        started.append(proc)
        return proc, stats_path

    yield start
    for proc in started:
        lab.stop(proc)


def tolerance_ms(target_ms: float) -> float:
    return max(0.5, 0.05 * target_ms)


def near_target(measure, target_ms: float) -> tuple[float, list[float]]:
    """(lower quartile, samples) of `measure()`, judged and settled like the fidelity gate
    (`fidelity.low_quantile`, `fidelity.settle`). A relay never sends a frame more than
    EARLY_NS (50 us) early, and host noise (a descheduled relay, hypervisor steal) only ever adds
    delay: a wrong delay moves every sample, noise leaves the lowest quarter be. CI saw bursts of 30-60 s in which more than
    half of the pings on a 10 ms path read 11-56 ms."""
    samples = fidelity.settle(measure, lambda xs: abs(fidelity.low_quantile(xs) - target_ms),
                              tolerance_ms(target_ms), rounds=5)
    return fidelity.low_quantile(samples), samples


def stop_and_read_stats(lab: NetnsLab, proc, stats_path) -> dict:
    assert lab.stop(proc) == 0, "relay must exit 0 on SIGTERM"
    return json.loads(stats_path.read_text())


def one_way_delays_ms(lab: NetnsLab, ns_src: str, ns_dst: str, dst: str, count: int) -> list[float]:
    """One-way delays of UDP datagrams (all namespaces share one clock)."""
    rx = lab.popen(ns_dst, [sys.executable, "-c", _OWD_RECEIVER, dst, str(UDP_PORT), str(count)],
                   stdout=subprocess.PIPE, text=True)
    assert rx.stdout.readline().strip() == "ready"
    lab.sh(ns_src, sys.executable, "-c", _OWD_SENDER, dst, str(UDP_PORT), str(count))
    out, _ = rx.communicate(timeout=30)
    return json.loads(out)


@engines
def test_symmetric_delay_gives_twice_the_delay_as_rtt(topo, relay, engine):
    lab, ns_a, _, _, _, _ = topo
    delay_ms = 5.0
    proc, stats_path = relay(engine, delay_ms_ab=delay_ms, delay_ms_ba=delay_ms)
    ping_rtts_ms(lab, ns_a, ADDR_B, 2, interval_s=0.05)  # resolve ARP
    rounds = []  # near_target may measure again (host noise): count every ping sent

    def measure() -> list[float]:
        rounds.append(50)
        return ping_rtts_ms(lab, ns_a, ADDR_B, 50)
    on_time, rtts = near_target(measure, 2 * delay_ms)
    assert len(rtts) == 50
    for name, value in (("min", min(rtts)), ("lower quartile", on_time)):
        assert abs(value - 2 * delay_ms) <= tolerance_ms(2 * delay_ms), (name, value, rtts)
    stats = stop_and_read_stats(lab, proc, stats_path)
    pings = 2 + sum(rounds)
    for direction in ("ab", "ba"):
        st = stats[direction]
        assert st["frames_forwarded"] >= pings
        # our own sends must not be relayed back (that would loop and multiply frames)
        assert st["frames_in"] < 1.5 * pings, (pings, st)
        assert st["frames_send_errors"] == 0 and st["frames_dropped_loss"] == 0


@engines
def test_asymmetric_delay_per_direction(topo, relay, engine):
    lab, ns_a, ns_b, _, _, _ = topo
    delay_ab, delay_ba = 2.0, 8.0
    relay(engine, delay_ms_ab=delay_ab, delay_ms_ba=delay_ba)
    ping_rtts_ms(lab, ns_a, ADDR_B, 2, interval_s=0.05)
    target = delay_ab + delay_ba
    on_time, rtts = near_target(lambda: ping_rtts_ms(lab, ns_a, ADDR_B, 50), target)
    assert abs(on_time - target) <= tolerance_ms(target), rtts
    assert min(rtts) >= target - tolerance_ms(target), rtts  # never early
    ab, owd_ab = near_target(lambda: one_way_delays_ms(lab, ns_a, ns_b, ADDR_B, 30), delay_ab)
    ba, owd_ba = near_target(lambda: one_way_delays_ms(lab, ns_b, ns_a, ADDR_A, 30), delay_ba)
    assert len(owd_ab) == len(owd_ba) == 30
    assert abs(ab - delay_ab) <= tolerance_ms(delay_ab), owd_ab
    assert abs(ba - delay_ba) <= tolerance_ms(delay_ba), owd_ba
    early_ms = EARLY_NS / 1e6  # the relay sends what is due within EARLY_NS: never earlier
    assert min(owd_ab) >= delay_ab - early_ms and min(owd_ba) >= delay_ba - early_ms


def _pin_neighbours(lab: NetnsLab, ns_a: str, ns_b: str) -> None:
    """Static ARP entries so that lost ARP frames cannot bias the ping loss count."""
    def mac_and_dev(ns: str) -> tuple[str, str]:
        for link in json.loads(lab.sh(ns, "ip", "-j", "link", "show")):
            if link["ifname"] != "lo":
                return link["address"], link["ifname"]
        raise AssertionError(f"no interface in {ns}")

    mac_a, dev_a = mac_and_dev(ns_a)
    mac_b, dev_b = mac_and_dev(ns_b)
    lab.sh(ns_a, "ip", "neigh", "replace", ADDR_B, "lladdr", mac_b, "dev", dev_a, "nud", "permanent")
    lab.sh(ns_b, "ip", "neigh", "replace", ADDR_A, "lladdr", mac_a, "dev", dev_b, "nud", "permanent")


def test_loss_rate_over_1000_pings(topo, relay):
    lab, ns_a, ns_b, _, _, _ = topo
    _pin_neighbours(lab, ns_a, ns_b)
    loss = 0.20
    proc, stats_path = relay(delay_ms_ab=1.0, delay_ms_ba=1.0, loss_pct=100 * loss, seed=1234)
    n, rtts = ping_run(lab, ns_a, ADDR_B, 1000, wait_all=False)
    assert n >= 990
    received = len(rtts)
    p_ok = (1 - loss) ** 2  # the request and the reply each cross one lossy direction
    sigma = math.sqrt(n * p_ok * (1 - p_ok))
    assert abs(received - n * p_ok) <= 5 * sigma, (received, n * p_ok, sigma)
    stats = stop_and_read_stats(lab, proc, stats_path)
    for direction in ("ab", "ba"):
        st = stats[direction]
        frames = st["frames_in"]
        assert frames >= 0.7 * n
        sigma_d = math.sqrt(frames * loss * (1 - loss))
        assert abs(st["frames_dropped_loss"] - frames * loss) <= 5 * sigma_d, st
    # ARP pinned and IPv6 off, so (almost) only the echo requests cross a->b
    assert n <= stats["ab"]["frames_in"] <= n + 2


def test_tcp_flow_through_relay(topo, relay):
    lab, ns_a, ns_b, _, _, _ = topo
    proc, stats_path = relay(delay_ms_ab=2.0, delay_ms_ba=2.0, jitter_ms=0.5, queue_pkts=5000)
    mbps = iperf_mbps(lab, ns_a, ns_b, 2)
    assert mbps > 1.0
    stats = stop_and_read_stats(lab, proc, stats_path)
    assert stats["ab"]["bytes_forwarded"] >= mbps * 1e6 * 2 / 8 * 0.5
    assert stats["ab"]["frames_send_errors"] == 0 and stats["ba"]["frames_send_errors"] == 0


def test_native_tcp_flow_queue_limit_and_counters_balance(topo, relay):
    """A TCP flow through the native relay with a short drop-tail queue: frames over the
    limit are dropped and counted, and forwarded + dropped + queued == in, both ways."""
    lab, ns_a, ns_b, _, _, _ = topo
    proc, stats_path = relay("native", delay_ms_ab=2.0, delay_ms_ba=2.0, queue_pkts=20)
    mbps = iperf_mbps(lab, ns_a, ns_b, 2)
    assert mbps > 1.0
    stats = stop_and_read_stats(lab, proc, stats_path)
    assert stats["engine"] == "native" and stats["params_ab"]["queue_pkts"] == 20
    for d in ("ab", "ba"):
        st = stats[d]
        assert st["frames_forwarded"] + st["frames_dropped_queue"] + st["frames_queued"] == st["frames_in"]
        assert st["bytes_forwarded"] + st["bytes_dropped_queue"] <= st["bytes_in"]
        assert st["max_queue_pkts"] <= 20 and st["frames_send_errors"] == 0
    assert stats["ab"]["frames_dropped_queue"] > 0  # a 2 ms x 1 Gbit/s path needs ~170 frames
    assert stats["ab"]["bytes_forwarded"] >= mbps * 1e6 * 2 / 8 * 0.5


@engines
def test_relay_exits_nonzero_on_missing_interface(topo, engine):
    lab, _, _, ns_r, ra, _ = topo
    res = subprocess.run(["ip", "netns", "exec", ns_r, sys.executable, "-m", "emulation.relay",
                          "--a", ra, "--b", "ocnosuchif", "--engine", engine],
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 1
    assert "ocnosuchif" in res.stderr and "does not exist" in res.stderr


@engines
def test_userspace_outgoing_filter_fallback(topo, relay, engine):
    """The pre-4.20 path (filtering PACKET_OUTGOING by sll_pkttype) must not loop frames."""
    lab, ns_a, _, _, _, _ = topo
    proc, stats_path = relay(engine, delay_ms_ab=1.0, delay_ms_ba=1.0,
                             extra_args=("--no-kernel-outgoing-filter",))
    ping_rtts_ms(lab, ns_a, ADDR_B, 2, interval_s=0.05)
    rtts = ping_rtts_ms(lab, ns_a, ADDR_B, 30)
    assert len(rtts) == 30
    stats = stop_and_read_stats(lab, proc, stats_path)
    assert stats["kernel_outgoing_filter"] is False
    assert 32 <= stats["ab"]["frames_in"] < 50 and 32 <= stats["ba"]["frames_in"] < 50


@engines
def test_relay_survives_interface_down_and_up(topo, relay, engine):
    """Link failure injection sets the relay's interface down; the relay must keep running."""
    lab, ns_a, _, ns_r, ra, _ = topo
    proc, stats_path = relay(engine, delay_ms_ab=1.0, delay_ms_ba=1.0)
    assert len(ping_rtts_ms(lab, ns_a, ADDR_B, 5, interval_s=0.02)) == 5
    lab.sh(ns_r, "ip", "link", "set", ra, "down")
    try:
        assert ping_rtts_ms(lab, ns_a, ADDR_B, 5, interval_s=0.02, wait_all=False) == []
    finally:
        lab.sh(ns_r, "ip", "link", "set", ra, "up")
    assert proc.poll() is None, "relay died when its interface went down"
    deadline_rtts = []
    for _ in range(20):  # the veth needs a moment to carry traffic again
        deadline_rtts = ping_rtts_ms(lab, ns_a, ADDR_B, 3, interval_s=0.05, wait_all=False)
        if len(deadline_rtts) == 3:
            break
    assert len(deadline_rtts) == 3
    stop_and_read_stats(lab, proc, stats_path)


@engines
def test_sigint_also_exits_cleanly_with_stats(topo, relay, engine):
    lab, _, _, _, _, _ = topo
    proc, stats_path = relay(engine, delay_ms_ab=1.0, delay_ms_ba=1.0)
    proc.send_signal(2)  # SIGINT
    assert proc.wait(timeout=10) == 0
    stats = json.loads(stats_path.read_text())
    assert stats["ab"]["frames_dropped_loss"] == 0 and stats["engine"] == engine


def test_bench_chain_reports_relay_cost_per_gbit():
    """`ocalab bench links`' chain figure: throughput, CPU per Gbit forwarded and the engine
    (native where built: make test builds it). Speeds are printed by the bench, not asserted."""
    from bench.links import bench_chain
    with NetnsLab(f"ocrc{os.getpid() % 100000}") as lab:
        row = bench_chain(lab, 1, 1.0, 2.0)
    assert row["tcp_mbps"] > 0 and row["relay_cpu_s_total"] > 0
    assert row["relay_cpu_s_per_gbit"] > 0 and row["engines"] == ["native"]
    assert row["rtt"]["pings_received"] == 50 and row["frames_send_errors"] == 0
