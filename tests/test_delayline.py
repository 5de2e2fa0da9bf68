"""Unit tests of the pure relay core (emulation.delayline) and the relay's argument parsing."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emulation.delayline import DelayLine, LineParams
from emulation.relay import parse_args

MS = 1_000_000  # ns per ms


def test_constant_delay_releases_exactly_at_due_time():
    line = DelayLine(LineParams(delay_ms=10.0))
    assert line.push(b"x" * 100, now_ns=5 * MS)
    assert line.next_due_ns() == 15 * MS
    assert line.pop_due(15 * MS - 1) == []
    assert line.pop_due(15 * MS) == [b"x" * 100]
    assert line.next_due_ns() is None
    assert line.pop_due(10**12) == []


def test_frames_keep_order_and_each_gets_its_own_due_time():
    line = DelayLine(LineParams(delay_ms=2.0))
    for i in range(5):
        line.push(i + 1, now_ns=i * MS)  # int frames stand for lengths
    assert line.pop_due(3 * MS) == [1, 2]
    assert line.next_due_ns() == 4 * MS
    assert line.pop_due(100 * MS) == [3, 4, 5]
    st = line.stats()
    assert st["frames_forwarded"] == 5 and st["bytes_forwarded"] == 15


def test_push_many_equals_repeated_push():
    fast, slow = DelayLine(LineParams(delay_ms=3.0)), DelayLine(LineParams(delay_ms=3.0))
    frames = [b"a", b"bb", b"ccc"]
    fast.push_many(frames, 7 * MS)
    for f in frames:
        slow.push(f, 7 * MS)
    assert fast.next_due_ns() == slow.next_due_ns() == 10 * MS
    assert fast.pop_due(10 * MS) == slow.pop_due(10 * MS) == frames
    assert fast.stats() == slow.stats()


@pytest.mark.parametrize("dist", ["uniform", "normal"])
def test_jitter_keeps_fifo_and_stays_within_bounds(dist):
    delay_ms, jitter_ms = 10.0, 4.0
    line = DelayLine(LineParams(delay_ms=delay_ms, jitter_ms=jitter_ms, jitter_dist=dist), seed=7)
    arrivals, dues = [], []
    for i in range(5000):
        now = i * 100_000  # 0.1 ms apart: much less than the jitter, so reordering would happen
        line.push(i, now)
        arrivals.append(now)
        dues.append(line._queue[-1][0])
    assert dues == sorted(dues), "due times must never decrease"
    assert all(d >= a for a, d in zip(arrivals, dues)), "delay is clipped at 0"
    if dist == "uniform":  # due = max(a + delay + j, previous due) and j <= jitter
        assert max(d - a for a, d in zip(arrivals, dues)) <= (delay_ms + jitter_ms) * MS
    out = line.pop_due(10**15)
    assert out == list(range(5000))


def test_jitter_actually_varies_delay_when_frames_are_sparse():
    line = DelayLine(LineParams(delay_ms=10.0, jitter_ms=2.0), seed=3)
    delays = []
    for i in range(2000):
        now = i * 100 * MS  # far apart: FIFO clamp never applies
        line.push(1, now)
        delays.append((line.next_due_ns() - now) / MS)
        line.pop_due(now + 20 * MS)
    assert 8.0 <= min(delays) < 8.1 and 11.9 < max(delays) <= 12.0
    assert abs(sum(delays) / len(delays) - 10.0) < 0.1  # mean of U(-2,2) is 0; sd of mean ~0.026


def test_jitter_clipped_at_zero_delay():
    line = DelayLine(LineParams(delay_ms=1.0, jitter_ms=5.0), seed=11)
    for i in range(1000):
        now = i * 100 * MS
        line.push(1, now)
        assert line.next_due_ns() >= now
        line.pop_due(now + 100 * MS)


def test_loss_rate_matches_probability_with_seed():
    n, p = 20_000, 0.10
    line = DelayLine(LineParams(loss_pct=10.0), seed=42)
    accepted = sum(line.push(100, i) for i in range(n))
    lost = n - accepted
    sigma = math.sqrt(n * p * (1 - p))  # binomial sd ~42 frames
    assert abs(lost - n * p) < 5 * sigma  # false failure probability < 1e-6
    st = line.stats()
    assert st["frames_dropped_loss"] == lost and st["bytes_dropped_loss"] == 100 * lost
    assert st["frames_queued"] == accepted


def test_loss_is_reproducible_per_seed():
    def pattern(seed):
        line = DelayLine(LineParams(loss_pct=30.0), seed=seed)
        return [line.push(1, i) for i in range(500)]

    assert pattern(5) == pattern(5)
    assert pattern(5) != pattern(6)


def test_loss_extremes():
    none = DelayLine(LineParams(loss_pct=0.0))
    everything = DelayLine(LineParams(loss_pct=100.0))
    assert all(none.push(1, i) for i in range(1000))
    assert not any(everything.push(1, i) for i in range(1000))


def test_queue_limit_drops_tail_and_counts():
    line = DelayLine(LineParams(delay_ms=5.0, queue_pkts=3))
    results = [line.push(10, 0) for _ in range(5)]
    assert results == [True, True, True, False, False]
    st = line.stats()
    assert st["frames_dropped_queue"] == 2 and st["bytes_dropped_queue"] == 20
    assert st["max_queue_pkts"] == 3 and len(line) == 3
    assert len(line.pop_due(5 * MS)) == 3
    assert line.push(10, 6 * MS)  # room again after the queue drained


def test_counters_balance():
    line = DelayLine(LineParams(delay_ms=1.0, jitter_ms=0.5, loss_pct=20.0, queue_pkts=50), seed=9)
    for i in range(3000):
        line.push(64 + i % 1400, i * 10_000)
        if i % 7 == 0:
            line.pop_due(i * 10_000)
    st = line.stats()
    for unit in ("frames", "bytes"):
        parts = st[f"{unit}_forwarded"] + st[f"{unit}_dropped_loss"] + st[f"{unit}_dropped_queue"]
        queued = st["frames_queued"] if unit == "frames" else sum(f for _, f in line._queue)
        assert parts + queued == st[f"{unit}_in"]
    assert st["frames_dropped_queue"] > 0 and st["frames_dropped_loss"] > 0


@settings(max_examples=150, deadline=None)
@given(gaps_us=st.lists(st.integers(0, 5000), min_size=1, max_size=200),
       delay_ms=st.floats(0, 20), jitter_ms=st.floats(0, 10), loss_pct=st.floats(0, 100),
       queue_pkts=st.one_of(st.none(), st.integers(1, 50)), seed=st.integers(0, 10**6),
       dist=st.sampled_from(["uniform", "normal"]), pop_every=st.integers(1, 10))
def test_invariants_hold_for_any_schedule(gaps_us, delay_ms, jitter_ms, loss_pct, queue_pkts,
                                          seed, dist, pop_every):
    """FIFO, never early, counters balance, for arbitrary arrivals and interleaved pops."""
    line = DelayLine(LineParams(delay_ms=delay_ms, jitter_ms=jitter_ms, loss_pct=loss_pct,
                                queue_pkts=queue_pkts, jitter_dist=dist), seed=seed)
    now, accepted, released, arrival_of = 0, [], [], {}
    # uniform jitter never shortens the delay below delay - jitter; normal jitter only below 0
    min_delay_ns = max(0.0, delay_ms - jitter_ms) * MS - 2 if dist == "uniform" else 0
    for i, gap in enumerate(gaps_us):
        now += gap * 1000
        if line.push(b"f%d" % i, now):
            accepted.append(b"f%d" % i)
            arrival_of[b"f%d" % i] = now
        if i % pop_every == 0:
            due = line.next_due_ns()
            out = line.pop_due(now)
            assert due is None or out == [] or due <= now
            for frame in out:
                assert now >= arrival_of[frame] + min_delay_ns  # never early
            released += out
    released += line.pop_due(now + 10**12)
    assert released == accepted
    stats = line.stats()
    assert stats["frames_forwarded"] + stats["frames_dropped_loss"] + stats["frames_dropped_queue"] \
        == stats["frames_in"] == len(gaps_us)
    if queue_pkts is not None:
        assert stats["max_queue_pkts"] <= queue_pkts


@pytest.mark.parametrize("kwargs, word", [
    ({"delay_ms": -1.0}, "delay_ms"),
    ({"delay_ms": float("nan")}, "delay_ms"),
    ({"jitter_ms": -0.1}, "jitter_ms"),
    ({"loss_pct": 100.5}, "loss_pct"),
    ({"loss_pct": "5"}, "loss_pct"),
    ({"queue_pkts": 0}, "queue_pkts"),
    ({"queue_pkts": 2.5}, "queue_pkts"),
    ({"jitter_dist": "pareto"}, "jitter_dist"),
])
def test_bad_params_name_the_problem(kwargs, word):
    with pytest.raises(ValueError, match=word):
        LineParams(**kwargs)


def test_parse_args_builds_both_directions():
    cfg = parse_args(["--a", "ra", "--b", "rb", "--delay-ms-ab", "3", "--delay-ms-ba", "7",
                      "--jitter-ms", "1", "--loss-pct", "2.5", "--seed", "4", "--queue-pkts", "100"])
    assert (cfg.a, cfg.b, cfg.seed) == ("ra", "rb", 4)
    assert cfg.ab == LineParams(delay_ms=3.0, jitter_ms=1.0, loss_pct=2.5, queue_pkts=100)
    assert cfg.ba.delay_ms == 7.0 and cfg.ba.loss_pct == 2.5
    assert cfg.rt_priority == 10 and cfg.kernel_outgoing_filter


@pytest.mark.parametrize("argv, word", [
    (["--a", "x", "--b", "x"], "must differ"),
    (["--a", "x", "--b", "y", "--loss-pct", "150"], "loss_pct"),
    (["--a", "x", "--b", "y", "--delay-ms-ab", "-2"], "delay_ms"),
    (["--a", "x" * 16, "--b", "y"], "invalid interface name"),
    (["--b", "y"], "--a"),
    (["--a", "x", "--b", "y", "--rt-priority", "100"], "rt-priority"),
])
def test_parse_args_rejects_bad_input(argv, word, capsys):
    with pytest.raises(SystemExit) as exc:
        parse_args(argv)
    assert exc.value.code == 2
    assert word in capsys.readouterr().err


def test_relay_cli_reports_missing_interface():
    res = subprocess.run([sys.executable, "-m", "emulation.relay", "--a", "ocnosuch0", "--b", "ocnosuch1"],
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 1
    assert "ocnosuch0" in res.stderr and ("does not exist" in res.stderr or "root" in res.stderr)


def test_engine_choice_native_only_for_constant_delay():
    from emulation.relay import choose_engine
    plain, lossy = LineParams(delay_ms=1.0), LineParams(delay_ms=1.0, loss_pct=1.0)
    jittery = LineParams(delay_ms=1.0, jitter_ms=0.2)
    assert choose_engine("auto", plain, plain, built=True) == "native"
    assert choose_engine("auto", plain, plain, built=False) == "python"
    assert choose_engine("auto", plain, lossy, built=True) == "python"
    assert choose_engine("python", plain, plain, built=True) == "python"
    with pytest.raises(ValueError, match="constant delay"):
        choose_engine("native", jittery, plain, built=True)
    with pytest.raises(ValueError, match="make setup"):
        choose_engine("native", plain, plain, built=False)


def test_vlan_tag_goes_back_into_the_frame():
    """The receive path moves an 802.1Q tag into PACKET_AUXDATA; the relay restores it."""
    from emulation.relay import (AUXDATA, PACKET_AUXDATA, SOL_PACKET, TP_STATUS_VLAN_TPID_VALID,
                                 TP_STATUS_VLAN_VALID, with_vlan_tag)
    frame = bytes(range(12)) + b"\x08\x00" + b"payload"
    aux = AUXDATA.pack(TP_STATUS_VLAN_VALID | TP_STATUS_VLAN_TPID_VALID, 0, 0, 0, 0, 7, 0x88A8)
    tagged = with_vlan_tag(frame, [(SOL_PACKET, PACKET_AUXDATA, aux)])
    assert tagged == frame[:12] + b"\x88\xa8\x00\x07" + frame[12:]
    plain = AUXDATA.pack(0, 0, 0, 0, 0, 0, 0)
    assert with_vlan_tag(frame, [(SOL_PACKET, PACKET_AUXDATA, plain)]) == frame
    no_tpid = AUXDATA.pack(TP_STATUS_VLAN_VALID, 0, 0, 0, 0, 5, 0)  # TPID unknown: 802.1Q
    assert with_vlan_tag(frame, [(SOL_PACKET, PACKET_AUXDATA, no_tpid)])[12:16] == b"\x81\x00\x00\x05"
