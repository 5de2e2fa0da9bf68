"""emulation.impair (pure): the control file format and the netem commands for faults."""
from __future__ import annotations

import pytest

from emulation.delayline import DelayLine, LineParams
from emulation.impair import (Impairment, combined_loss_pct, netem_commands, parse_control,
                              render_control)
from topologies.plan import Link, LinkEnd


def test_render_parse_round_trip():
    for imp in (Impairment(), Impairment(5, 7.25, 0.5, 100, True),
                Impairment(extra_delay_ms_ab=60000), Impairment(loss_pct_ab=0.000001)):
        assert parse_control(render_control(imp)) == imp


def test_missing_keys_are_zero_and_comments_blank_lines_ok():
    assert parse_control("# nothing\n\n") == Impairment()
    assert parse_control(" loss_pct_ba = 2.5 \r\n") == Impairment(loss_pct_ba=2.5)


@pytest.mark.parametrize("text", [
    "extra_delay_ms_ab=abc", "extra_delay_ms_ab=-1", "extra_delay_ms_ab=1e3", "loss_pct_ab=100.1",
    "extra_delay_ms_ab=60001", "down=2", "down=yes", "nonsense", "bogus=1", "=1",
    "down=1\ndown=0", "extra_delay_ms_ab=nan", "extra_delay_ms_ab=inf", "extra_delay_ms_ab=1_0",
    "extra_delay_ms_ab=.5", "x" * 5000])
def test_bad_files_are_rejected(text):
    with pytest.raises(ValueError):
        parse_control(text)


def test_impairment_validates():
    for bad in (dict(extra_delay_ms_ab=-1), dict(loss_pct_ba=101), dict(down=1),
                dict(extra_delay_ms_ab=float("nan")), dict(loss_pct_ab=True)):
        with pytest.raises(ValueError):
            Impairment(**bad)


def _link(delay_ms: float = 3.0, loss_pct: float = 0.0) -> Link:
    return Link(a=LinkEnd("i1v1", 0, "02:00:00:00:00:01"), b=LinkEnd("oci1lan", 1, "02:00:00:00:00:02"),
                cls="access", bw_mbps=50.0, delay_ms=delay_ms, loss_pct=loss_pct, queue_pkts=100)


def test_netem_commands_change_each_direction():
    cmds = netem_commands(_link(), Impairment(extra_delay_ms_ab=5, loss_pct_ba=10))
    assert [node for node, _ in cmds] == ["i1v1", "i1v1", "oci1lan", "oci1lan"]
    ab, ab_lane, ba, ba_lane = (cmd for _, cmd in cmds)
    assert ab.startswith("tc qdisc change dev i1v1-0 parent 1:10 handle 10: netem limit ")
    assert " delay 8ms" in ab and "loss" not in ab
    assert ab_lane.startswith("tc qdisc change dev i1v1-0 parent 1:5 handle 5: netem limit ")
    assert " delay 8ms" in ab_lane  # the loaded-RTT probes see the fault too
    assert ba.startswith("tc qdisc change dev oci1lan-1 parent 1:10 handle 10: netem ")
    assert " delay 3ms" in ba and ba.endswith(" loss 10%") and ba_lane.endswith(" loss 10%")


def test_netem_down_and_clear_and_combined_loss():
    down = netem_commands(_link(loss_pct=1.0), Impairment(down=True))
    assert all(cmd.endswith(" loss 100%") for _, cmd in down)
    clear = netem_commands(_link(loss_pct=1.0), Impairment())
    assert all(cmd.endswith(" delay 3ms loss 1%") for _, cmd in clear)
    assert combined_loss_pct(10, 10) == pytest.approx(19.0)


def test_netem_commands_on_a_link_without_plan_impairment():
    """Such a link has a pfifo leaf: replaced by netem while impaired, and put back when clear."""
    lk = _link(delay_ms=0.0)
    on = netem_commands(lk, Impairment(extra_delay_ms_ab=2))
    assert on[0][1].startswith("tc qdisc replace dev i1v1-0 parent 1:10 handle 10: netem ")
    assert " delay 2ms" in on[0][1] and " delay 2ms" in on[1][1] and " delay 0ms" in on[2][1]
    off = netem_commands(lk, Impairment())
    assert [cmd for _, cmd in off] == [f"tc qdisc replace dev {e} parent {p} handle {h} pfifo limit {q}"
                                       for e in ("i1v1-0", "oci1lan-1")
                                       for p, h, q in (("1:10", "10:", 100), ("1:5", "5:", 16))]


def test_delayline_impair_counts_apart_and_keeps_queued_due_times():
    line = DelayLine(LineParams(delay_ms=1.0, loss_pct=0.0), seed=1)
    line.push(b"a", 0)
    line.impair(extra_delay_ms=4.0, loss_pct=0.0, down=False)
    line.push(b"b", 0)
    assert line.pop_due(1_000_000) == [b"a"] and line.pop_due(4_999_999) == []
    assert line.pop_due(5_000_000) == [b"b"]
    line.impair(0.0, 0.0, True)
    assert line.push(b"c", 0) is False
    line.impair(0.0, 100.0, False)
    assert line.push(b"d", 0) is False
    st = line.stats()
    assert st["frames_dropped_down"] == 1 and st["frames_dropped_injected"] == 1
    assert st["frames_dropped_loss"] == 0 and st["frames_in"] == 4 and st["frames_forwarded"] == 2
    with pytest.raises(ValueError):
        line.impair(-1.0, 0.0, False)
