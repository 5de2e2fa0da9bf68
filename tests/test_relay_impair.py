"""Run-time faults in a running relay, both engines, between real namespaces (issue 16 item 5):
extra delay, down and up, injected loss and malformed control files, applied through the
control file and SIGUSR1 as emulation.build.Network does. Needs root; small and fast."""
from __future__ import annotations

import json
import math
import os
import signal
import time

import pytest

from bench.links import ADDR_A, ADDR_B, NetnsLab, build_chain, ping_run, ping_rtts_ms, start_relay
from emulation.impair import Impairment, parse_control, render_control

pytestmark = [pytest.mark.emulation,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces")]
engines = pytest.mark.parametrize("engine", ["python", "native"])
BASE_DELAY_MS = 2.0
TOL_MS = 2.0  # on the minimum RTT of PINGS samples
PINGS = 20
APPLY_S = 0.15  # the relay applies a file within a wake-up; this leaves a wide margin


@pytest.fixture(scope="module")
def topo():
    with NetnsLab(f"ocri{os.getpid() % 100000}") as lab:
        ns_a, ns_b, [(ns_r, ra, rb)] = build_chain(lab, 1)
        yield lab, ns_a, ns_b, ns_r, ra, rb


@pytest.fixture
def relay(topo):
    """start(engine, tag, **params) -> (proc, stats path, control path); stopped by handle."""
    lab, _, _, ns_r, ra, rb = topo
    started = []

    def start(engine: str, tag: str, control_text: str | None = None, with_control: bool = True,
              **params):
        control = lab.tmp / f"{tag}.control"
        control.unlink(missing_ok=True)
        if control_text is not None:
            control.write_text(control_text)
        extra = ("--engine", engine) + (("--control-file", str(control)) if with_control else ())
        params = {"delay_ms_ab": BASE_DELAY_MS, "delay_ms_ba": BASE_DELAY_MS, **params}
        proc, stats = start_relay(lab, ns_r, ra, rb, tag, extra_args=extra, **params)
        started.append(proc)
        return proc, stats, control

    yield start
    for proc in started:
        lab.stop(proc)


def apply(proc, control, text: str | bytes) -> None:
    """Replace the control file atomically and signal the relay by its pid, as Network does."""
    tmp = control.with_suffix(".tmp")
    tmp.write_bytes(text if isinstance(text, bytes) else text.encode())
    tmp.replace(control)
    proc.send_signal(signal.SIGUSR1)
    time.sleep(APPLY_S)


def min_rtt_ms(lab: NetnsLab, ns: str) -> float:
    rtts = ping_rtts_ms(lab, ns, ADDR_B, PINGS, interval_s=0.01)
    assert len(rtts) >= 10, rtts
    return min(rtts)


def replies_after_up(lab: NetnsLab, ns: str) -> list[float]:
    """Pings until 3 of 3 come back (ARP may need to resolve again after a down)."""
    rtts: list[float] = []
    for _ in range(20):
        rtts = ping_rtts_ms(lab, ns, ADDR_B, 3, interval_s=0.05, wait_all=False)
        if len(rtts) == 3:
            break
    return rtts


def stop_stats(lab: NetnsLab, proc, stats_path) -> dict:
    assert lab.stop(proc) == 0, "relay must exit 0 on SIGTERM"
    return json.loads(stats_path.read_text())


def balanced(st: dict) -> bool:
    return st["frames_forwarded"] + st["frames_dropped_loss"] + st["frames_dropped_queue"] \
        + st["frames_dropped_injected"] + st["frames_dropped_down"] + st["frames_queued"] \
        == st["frames_in"]


@engines
def test_delay_down_up_and_bad_file_at_run_time(topo, relay, engine):
    lab, ns_a, _, _, _, _ = topo
    proc, stats_path, control = relay(engine, f"d{engine}")
    ping_rtts_ms(lab, ns_a, ADDR_B, 2, interval_s=0.05)  # ARP
    base = min_rtt_ms(lab, ns_a)
    assert abs(base - 2 * BASE_DELAY_MS) <= TOL_MS, base
    apply(proc, control, render_control(Impairment(extra_delay_ms_ab=5, extra_delay_ms_ba=5)))
    slow = min_rtt_ms(lab, ns_a)
    assert abs(slow - base - 10.0) <= TOL_MS, (base, slow)
    apply(proc, control, render_control(Impairment()))
    assert abs(min_rtt_ms(lab, ns_a) - base) <= TOL_MS
    apply(proc, control, render_control(Impairment(down=True)))
    sent, rtts = ping_run(lab, ns_a, ADDR_B, 10, interval_s=0.02, wait_all=False)
    assert sent == 10 and rtts == [], rtts  # 100% loss
    apply(proc, control, render_control(Impairment()))
    assert len(replies_after_up(lab, ns_a)) == 3
    for bad in ("extra_delay_ms_ab=abc\n", "down=2\n", "loss_pct_ab=101\n", "nonsense\n"):
        apply(proc, control, bad)
    assert proc.poll() is None, "a malformed control file killed the relay"
    assert abs(min_rtt_ms(lab, ns_a) - base) <= TOL_MS  # previous state (clear) kept
    stats = stop_stats(lab, proc, stats_path)
    assert stats["engine"] == engine
    assert stats["impairment_changes"] == 4 and stats["impairment_rejects"] == 4, stats
    assert stats["impairment"]["down"] is False and stats["impairment"]["extra_delay_ms_ab"] == 0
    assert stats["ab"]["frames_dropped_down"] >= 10  # the pings sent while down
    for d in ("ab", "ba"):
        assert balanced(stats[d]), stats[d]
        assert stats[d]["frames_dropped_loss"] == stats[d]["frames_dropped_injected"] == 0


def _pin_neighbours(lab: NetnsLab, ns_a: str, ns_b: str) -> None:
    """Static ARP entries so that lost ARP frames cannot bias the loss count."""
    def mac_and_dev(ns: str) -> tuple[str, str]:
        for link in json.loads(lab.sh(ns, "ip", "-j", "link", "show")):
            if link["ifname"] != "lo":
                return link["address"], link["ifname"]
        raise AssertionError(f"no interface in {ns}")
    mac_a, dev_a = mac_and_dev(ns_a)
    mac_b, dev_b = mac_and_dev(ns_b)
    lab.sh(ns_a, "ip", "neigh", "replace", ADDR_B, "lladdr", mac_b, "dev", dev_a, "nud", "permanent")
    lab.sh(ns_b, "ip", "neigh", "replace", ADDR_A, "lladdr", mac_a, "dev", dev_b, "nud", "permanent")


@engines
def test_injected_loss_counted_apart_from_plan_loss(topo, relay, engine):
    lab, ns_a, ns_b, _, _, _ = topo
    _pin_neighbours(lab, ns_a, ns_b)
    proc, stats_path, control = relay(engine, f"l{engine}", delay_ms_ab=0.5, delay_ms_ba=0.5)
    loss = 0.30
    apply(proc, control, render_control(Impairment(loss_pct_ab=100 * loss, loss_pct_ba=100 * loss)))
    n, rtts = ping_run(lab, ns_a, ADDR_B, 400, interval_s=0.005, wait_all=False)
    p_ok = (1 - loss) ** 2
    sigma = math.sqrt(n * p_ok * (1 - p_ok))
    assert abs(len(rtts) - n * p_ok) <= 5 * sigma, (len(rtts), n * p_ok)
    stats = stop_stats(lab, proc, stats_path)
    ab = stats["ab"]
    sigma_ab = math.sqrt(ab["frames_in"] * loss * (1 - loss))
    assert abs(ab["frames_dropped_injected"] - ab["frames_in"] * loss) <= 5 * sigma_ab, ab
    for d in ("ab", "ba"):
        assert stats[d]["frames_dropped_loss"] == 0 and balanced(stats[d]), stats[d]


@engines
def test_control_file_read_at_start(topo, relay, engine):
    """A relay restarted (e.g. by calibration) keeps the faults its control file holds."""
    lab, ns_a, _, _, _, _ = topo
    proc, stats_path, _ = relay(engine, f"s{engine}", control_text="down=1\n")
    sent, rtts = ping_run(lab, ns_a, ADDR_B, 5, interval_s=0.02, wait_all=False)
    assert rtts == []
    stats = stop_stats(lab, proc, stats_path)
    assert stats["impairment_changes"] == 1 and stats["impairment"]["down"] is True


@engines
def test_sigusr1_without_control_file_is_logged_not_fatal(topo, relay, engine):
    lab, ns_a, _, _, _, _ = topo
    proc, stats_path, _ = relay(engine, f"n{engine}", with_control=False)
    proc.send_signal(signal.SIGUSR1)
    time.sleep(APPLY_S)
    assert proc.poll() is None
    assert len(ping_rtts_ms(lab, ns_a, ADDR_B, 3, interval_s=0.05)) == 3
    stats = stop_stats(lab, proc, stats_path)
    assert stats["impairment_rejects"] == 1 and stats["impairment_changes"] == 0


# Cases for the grammar: each engine must accept exactly those emulation.impair accepts.
GRAMMAR_CASES = [
    b"", b"# only a comment\n\n", b"  extra_delay_ms_ab = 1.5 \r\nloss_pct_ba=100\n",
    b"down=1", b"extra_delay_ms_ba=60000\n", b"# \xff\xfe any bytes in a comment\n",
    b"extra_delay_ms_ab=60000.000000001\n", b"extra_delay_ms_ab=-1\n", b"extra_delay_ms_ab=1e3\n",
    b"extra_delay_ms_ab=.5\n", b"extra_delay_ms_ab=5.\n", b"extra_delay_ms_ab=nan\n",
    b"extra_delay_ms_ab=inf\n", b"loss_pct_ab=100.5\n", b"down=true\n", b"down=\n",
    b"down=1\ndown=1\n", b"delay=5\n", b"extra_delay_ms_ab\n", b"extra_delay_ms_ab=1_0\n",
    b"extra_delay_ms_ab=\xff\n", b"extra_delay_ms_ab=1 2\n", b"x" * 5000,
    b"loss_pct_ab=0\x00\n",
]


def _python_accepts(data: bytes) -> bool:
    try:
        parse_control(data)
    except ValueError:
        return False
    return True


@engines
def test_control_file_grammar_same_in_both_engines(topo, relay, engine):
    lab, ns_a, _, _, _, _ = topo
    proc, stats_path, control = relay(engine, f"g{engine}")
    for data in GRAMMAR_CASES:
        apply(proc, control, data)
    apply(proc, control, b"")  # clear whatever the last accepted case set
    assert proc.poll() is None
    assert len(ping_rtts_ms(lab, ns_a, ADDR_B, 3, interval_s=0.05)) == 3
    stats = stop_stats(lab, proc, stats_path)
    accepted = sum(map(_python_accepts, GRAMMAR_CASES)) + 1
    assert stats["impairment_changes"] == accepted, stats
    assert stats["impairment_rejects"] == len(GRAMMAR_CASES) + 1 - accepted, stats


def _keys(d: dict, prefix: str = "") -> set[str]:
    return {k2 for k, v in d.items()
            for k2 in ({prefix + k} | (_keys(v, f"{prefix}{k}.") if isinstance(v, dict) else set()))}


def test_both_engines_write_the_same_stats_keys(topo, relay):
    lab = topo[0]
    keys = {}
    for engine in ("python", "native"):
        proc, stats_path, control = relay(engine, f"k{engine}")
        apply(proc, control, "loss_pct_ab=1\n")
        keys[engine] = _keys(stop_stats(lab, proc, stats_path))
    assert keys["python"] == keys["native"], keys["python"] ^ keys["native"]
