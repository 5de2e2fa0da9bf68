"""QoE_lin, switches, session summary, and the playback-buffer stall accounting."""
import pytest

from appliances.qoe import PlaybackBuffer, count_switches, qoe_lin, summarize


def test_qoe_lin_formula():
    # 0.235 + 0.75 + 0.75 + 1.75 = 3.485; smoothness |0.515| + 0 + |1.0| = 1.515
    assert qoe_lin([235, 750, 750, 1750], 0.0) == pytest.approx(3.485 - 1.515)
    assert qoe_lin([235, 750, 750, 1750], 2.0) == pytest.approx(3.485 - 1.515 - 8.6)
    assert qoe_lin([], 0.0) == 0.0
    with pytest.raises(ValueError):
        qoe_lin([235], -1.0)


def test_switches():
    assert count_switches([235, 235, 750, 235, 235]) == 2
    assert count_switches([750]) == 0


def test_summarize():
    q = summarize([235, 750, 750], segment_s=4, startup_s=0.5, rebuffer_count=1, rebuffer_s=1.0)
    assert q.mean_kbps == pytest.approx(578.333, abs=1e-3)
    assert q.switches == 1
    assert q.rebuffer_ratio == pytest.approx(1.0 / 13.0)
    assert q.qoe_lin == pytest.approx(1.735 - 4.3 - 0.515)
    d = q.to_dict()
    assert d["segments"] == 3 and d["startup_s"] == 0.5


def test_buffer_startup_then_stall():
    b = PlaybackBuffer(start_threshold_s=4.0)
    assert b.drain(10.0) == 0.0  # not playing yet: startup wait is not a rebuffer
    assert b.add_segment(4.0) is True and b.playing
    assert b.drain(3.0) == 0.0 and b.level_s == pytest.approx(1.0)
    assert b.drain(2.5) == pytest.approx(1.5)  # stall starts
    assert b.drain(1.0) == pytest.approx(1.0)  # same stall continues
    assert b.rebuffer_count == 1 and b.rebuffer_s == pytest.approx(2.5)
    b.add_segment(4.0)
    b.drain(5.0)
    assert b.rebuffer_count == 2 and b.rebuffer_s == pytest.approx(3.5)
    assert b.played_s == pytest.approx(8.0)
    assert b.level_s == 0.0


def test_buffer_never_negative_and_validates():
    b = PlaybackBuffer(start_threshold_s=8.0)
    assert b.add_segment(4.0) is False
    assert b.add_segment(4.0) is True
    b.drain(100.0)
    assert b.level_s == 0.0
    with pytest.raises(ValueError):
        b.drain(-1)
    with pytest.raises(ValueError):
        PlaybackBuffer(start_threshold_s=0)
