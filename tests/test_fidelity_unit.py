"""The pure parts of the fidelity gate: tolerance, judge, parse_ping, pair choice (no root)."""
from __future__ import annotations

import math
import shutil
import subprocess

import pytest

from topologies.catalog import MetroParams, metro
from emulation.fidelity import Pair, judge, pairs, parse_ping, tolerance_ms
from topologies.plan import Link, LinkEnd, Node, Plan, Route

# Captured from iputils ping in an emulated metro viewer (first reply includes flow setup).
PING_METRO = """\
PING 198.19.10.11 (198.19.10.11) 56(84) bytes of data.
64 bytes from 198.19.10.11: icmp_seq=1 ttl=61 time=204 ms
64 bytes from 198.19.10.11: icmp_seq=2 ttl=61 time=103 ms
64 bytes from 198.19.10.11: icmp_seq=3 ttl=61 time=102.878 ms

--- 198.19.10.11 ping statistics ---
3 packets transmitted, 3 received, 0% packet loss, time 2000ms
rtt min/avg/max/mdev = 102.878/136.712/203.896/47.506 ms
"""
PING_UNREACHABLE = """\
PING 198.18.2.99 (198.18.2.99) 56(84) bytes of data.
From 198.18.1.1 icmp_seq=1 Destination Host Unreachable
From 198.18.1.1 icmp_seq=2 Destination Host Unreachable

--- 198.18.2.99 ping statistics ---
2 packets transmitted, 0 received, +2 errors, 100% packet loss, time 1015ms
"""
PING_BIG = """\
PING 127.0.0.1 (127.0.0.1) 2000(2028) bytes of data.
2008 bytes from 127.0.0.1: icmp_seq=1 ttl=64 time=0.055 ms
2008 bytes from 127.0.0.1: icmp_seq=2 ttl=64 time=0.063 ms
"""


def pair(expected_ms: float, jitter_ms: float = 0.0) -> Pair:
    return Pair("a", "b", "198.18.1.1", ("a:0-b:0",), ("access",), expected_ms, jitter_ms)


# ---- tolerance ------------------------------------------------------------------------------
@pytest.mark.parametrize("expected,jitter,tol", [
    (0.0, 0.0, 0.5), (2.0, 0.0, 0.5), (10.0, 0.0, 0.5), (20.0, 0.0, 1.0), (60.0, 0.0, 3.0),
    (90.0, 0.0, 4.5), (20.0, 2.0, 5.0), (4.0, 1.0, 2.5),
])
def test_tolerance_is_max_of_half_ms_and_5pct_plus_twice_jitter(expected, jitter, tol):
    assert tolerance_ms(expected, jitter) == pytest.approx(tol)


# ---- judge ----------------------------------------------------------------------------------
@pytest.mark.parametrize("expected,median,ok", [
    (10.0, 10.5, True), (10.0, 10.51, False), (10.0, 9.5, True), (10.0, 9.49, False),
    (60.0, 63.0, True), (60.0, 63.01, False), (60.0, 57.0, True), (60.0, 56.99, False),
    (0.0, 0.5, True), (0.0, 0.51, False),
])
def test_judge_at_the_boundary(expected, median, ok):
    m = judge(pair(expected), [median] * 5)
    assert m.ok is ok
    assert m.median_rtt_ms == pytest.approx(median)
    assert m.samples == 5


def test_judge_reads_the_fastest_sample_and_reports_median_and_quartile():
    m = judge(pair(10.0), [10.1, 10.2, 10.0, 55.0, 9.9])
    assert m.ok and m.median_rtt_ms == pytest.approx(10.1) and m.min_rtt_ms == pytest.approx(9.9)
    assert m.low_rtt_ms == pytest.approx(10.0)
    # noise only adds delay: a burst over all samples but one leaves the minimum on the plan
    m = judge(pair(10.0), [15.0, 15.0, 15.0, 15.0, 10.0])
    assert m.ok and m.median_rtt_ms == pytest.approx(15.0)
    # measured here: a healthy 8 ms pair whose median a burst moved 1.8 ms above the plan
    assert judge(pair(8.0), [8.0, 8.1, 8.1, 13.6, 8.1, 8.0, 9.8, 8.6, 10.4, 9.4, 11.5, 12.3, 16.3,
                             12.8, 11.0, 9.0, 14.9, 8.9, 15.5]).ok
    # a link slower than its plan moves every sample, the fastest too
    assert not judge(pair(10.0), [12.0 + i / 10 for i in range(20)]).ok
    assert not judge(pair(10.0), [10.6] * 20).ok
    # a faster link (or too much calibration) lets frames beat the plan: noise cannot do that,
    # and a noisy median does not hide it (measured: min 5.1, median 9.4 on an 8 ms plan)
    assert not judge(pair(10.0), [8.0 + i / 10 for i in range(20)]).ok
    assert not judge(pair(8.0), [5.12] + [7.0] * 5 + [9.41] * 14).ok


@pytest.mark.parametrize("expected,lo,err", [(10.0, 9.0, 1.0), (10.0, 10.7, 0.7), (10.0, 10.0, 0.0)])
def test_error_is_the_distance_of_the_fastest_sample_from_the_plan(expected, lo, err):
    from emulation.fidelity import error_ms
    assert error_ms(expected, lo) == pytest.approx(err)


def test_early_means_the_fastest_sample_beats_the_plan_beyond_tolerance():
    from emulation.fidelity import early
    assert early(judge(pair(10.0), [9.4] * 10))
    assert early(judge(pair(10.0), [9.4] + [12.0] * 9))  # a noisy median does not hide it
    assert not early(judge(pair(10.0), [9.6] * 10))
    assert not early(judge(pair(10.0), [30.0] * 10))  # late is noise or a wrong link, not early
    assert not early(judge(pair(10.0), [5.0]))  # too few samples to say


def test_judge_with_jitter_widens_tolerance():
    assert judge(pair(20.0, 2.0), [24.9] * 4).ok
    assert not judge(pair(20.0, 2.0), [25.1] * 4).ok


@pytest.mark.parametrize("samples", [[], [10.0], [10.0, 10.0]])
def test_judge_too_few_samples_fails(samples):
    m = judge(pair(10.0), samples)
    assert not m.ok and m.samples == len(samples) and math.isnan(m.median_rtt_ms)


# ---- parse_ping -----------------------------------------------------------------------------
def test_parse_ping_metro_output():
    assert parse_ping(PING_METRO) == [204.0, 103.0, 102.878]


def test_parse_ping_unreachable_has_no_samples():
    assert parse_ping(PING_UNREACHABLE) == []


def test_parse_ping_large_packets():
    assert parse_ping(PING_BIG) == [0.055, 0.063]


@pytest.mark.skipif(shutil.which("ping") is None, reason="ping not installed")
def test_parse_ping_live_loopback():
    r = subprocess.run(["ping", "-n", "-c", "3", "-i", "0.2", "127.0.0.1"], capture_output=True,
                       text=True, timeout=10)
    if r.returncode != 0:
        pytest.skip(f"ping 127.0.0.1 not permitted here: {r.stderr.strip()}")
    samples = parse_ping(r.stdout)
    assert len(samples) == 3 and all(0 < s < 1000 for s in samples)


# ---- pairs ----------------------------------------------------------------------------------
def test_pairs_cover_every_metro_link():
    plan = metro()
    ps = pairs(plan)
    covered = {name for p in ps for name in p.links}
    assert covered == {lk.name for lk in plan.links}


def test_pairs_are_same_segment_and_expect_twice_the_delay():
    plan = metro()
    by_name = {lk.name: lk for lk in plan.links}
    for p in pairs(plan):
        assert p.src != p.dst
        assert plan.owner_of(p.dst_addr) == p.dst
        assert p.expected_rtt_ms == pytest.approx(2 * sum(by_name[n].delay_ms for n in p.links))
        assert p.classes == tuple(by_name[n].cls for n in p.links)
        assert p.jitter_ms == 0.0
    ps = {(p.src, p.dst): p for p in pairs(plan)}
    assert ps[("i1v1", "i1br")].expected_rtt_ms == 8.0       # 2 x (3 access + 1 internal)
    assert ps[("i3v1", "i3br")].expected_rtt_ms == 10.0      # ISP 3 access is 4 ms
    assert ps[("i1br", "trr")].expected_rtt_ms == 30.2       # 2 x (15 + 0.1 transit router port)
    assert ps[("cldr", "nfxr")].expected_rtt_ms == 40.2       # 2 x (20 backbone + 0.1)


def test_pairs_sum_jitter_on_the_path():
    ps = {(p.src, p.dst): p for p in pairs(metro(MetroParams(jitter_ms=1.0)))}
    assert ps[("i1v1", "i1br")].jitter_ms == 1.0          # jitter is on the access link only
    assert ps[("i1oca1", "i1br")].jitter_ms == 0.0        # no access link on this path


def test_pairs_walk_a_chain_of_switches():
    nodes = (Node("r1", "router", "border", "a"), Node("h1", "host", "viewer", "a"),
             Node("ocs1", "switch", "lan", "a", dpid=1), Node("ocs2", "switch", "lan", "a", dpid=2))
    links = (
        Link(LinkEnd("h1", 0, "02:00:00:00:01:00", "198.18.1.10/24"),
             LinkEnd("ocs1", 0, "02:00:00:00:02:00"), "access", 50.0, 3.0),
        Link(LinkEnd("ocs1", 1, "02:00:00:00:02:01"), LinkEnd("ocs2", 0, "02:00:00:00:03:00"),
             "internal", 1000.0, 2.0),
        Link(LinkEnd("ocs2", 1, "02:00:00:00:03:01"),
             LinkEnd("r1", 0, "02:00:00:00:00:00", "198.18.1.1/24"), "internal", 1000.0, 0.5),
    )
    plan = Plan("chain", nodes, links, (Route("h1", "default", "198.18.1.1"),))
    ps = {(p.src, p.dst): p for p in pairs(plan)}
    assert set(ps) == {("h1", "r1"), ("r1", "h1")}
    assert ps[("h1", "r1")].links == tuple(lk.name for lk in links)
    assert ps[("h1", "r1")].expected_rtt_ms == 11.0
    assert ps[("r1", "h1")].links == tuple(lk.name for lk in reversed(links))


def test_cpu_busy_frac_reads_proc_stat_deltas(tmp_path, monkeypatch):
    from emulation import fidelity
    lines = iter(["cpu  100 0 100 700 100 0 0 0 0 0\n", "cpu  150 0 150 750 150 0 0 0 0 0\n",
                  "cpu  100 0 100 700 100 0 0 10 0 0\n", "cpu  150 0 150 750 150 0 0 60 0 0\n"])
    stat = tmp_path / "stat"

    def fake_sleep(_s):
        stat.write_text(next(lines))
    stat.write_text(next(lines))
    monkeypatch.setattr(fidelity.time, "sleep", fake_sleep)
    # 200 jiffies passed, 100 of them idle or iowait
    assert fidelity.cpu_busy_frac(0.5, str(stat)) == 0.5
    # 250 jiffies, 100 idle or iowait, 50 stolen by the hypervisor (counted as busy)
    stat.write_text(next(lines))
    assert fidelity.cpu_fracs(0.5, str(stat)) == (0.6, 0.2)
    monkeypatch.undo()
    assert 0.0 <= fidelity.cpu_busy_frac(0.05) <= 1.0  # the real /proc/stat


def test_closer_keeps_the_measurement_nearer_the_plan_per_pair():
    from emulation.fidelity import closer
    p1 = Pair("a", "b", "198.18.1.2", ("l1",), ("access",), 10.0, 0.0)
    p2 = Pair("c", "d", "198.18.1.4", ("l2",), ("access",), 20.0, 0.0)
    first = [judge(p1, [13.0] * 10), judge(p2, [20.1] * 10)]  # p1 disturbed by a CPU spike
    again = [judge(p1, [10.2] * 10)]
    out = closer(first, again)
    assert [(m.pair.src, m.median_rtt_ms, m.ok) for m in out] == [("a", 10.2, True), ("c", 20.1, True)]
    # systematically off stays off; a re-measurement without samples never wins
    assert not closer([judge(p1, [13.0] * 10)], [judge(p1, [12.8] * 10)])[0].ok
    assert closer([judge(p1, [13.0] * 10)], [judge(p1, [])])[0].median_rtt_ms == 13.0


def test_remeasure_waits_out_host_noise_and_keeps_a_wrong_pair_off(monkeypatch):
    """Settle rounds: a pair disturbed for two rounds comes back on the plan; a pair that is
    really off fails every round; each round measures only the pairs still off, after longer pauses."""
    from emulation import fidelity
    noisy = Pair("a", "b", "198.18.1.2", ("l1",), ("access",), 10.0, 0.0)
    wrong = Pair("c", "d", "198.18.1.4", ("l2",), ("access",), 20.0, 0.0)
    fine = Pair("e", "f", "198.18.1.6", ("l3",), ("access",), 5.0, 0.0)
    script = iter([{"a": 11.8, "c": 23.0}, {"a": 10.1, "c": 23.1}, {"c": 22.9}])
    asked, slept = [], []

    def fake_gate(net, count, batch, raise_on_fail=False, only=None):
        medians = next(script)
        asked.append(sorted(p.src for p in only))
        return [judge(p, [medians[p.src]] * 10) for p in only]
    monkeypatch.setattr(fidelity, "gate", fake_gate)
    monkeypatch.setattr(fidelity, "wait_quiet", lambda max_wait_s, busy_frac: 0.0)
    monkeypatch.setattr(fidelity.time, "sleep", slept.append)
    first = [judge(noisy, [12.0] * 10), judge(wrong, [23.0] * 10), judge(fine, [5.1] * 10)]
    log: list = []
    out = fidelity.remeasure(None, first, 3, 3.0, 0.1, log=log)
    assert asked == [["a", "c"], ["a", "c"], ["c"]] and log == [2, 2, 1] and slept == [3.0, 6.0, 9.0]
    assert [(m.pair.src, m.median_rtt_ms, m.ok) for m in out] == [
        ("a", 10.1, True), ("c", 22.9, False), ("e", 5.1, True)]


def test_settle_measures_again_until_close_and_keeps_the_closest(monkeypatch):
    """One number settled like the gate: a disturbed reading is measured again after longer
    pauses; a reading that stays off returns the closest after `rounds`; a good first one is kept."""
    from emulation import fidelity
    slept = []
    monkeypatch.setattr(fidelity, "wait_quiet", lambda max_wait_s, busy_frac: 0.0)
    monkeypatch.setattr(fidelity.time, "sleep", slept.append)
    readings = iter([31.0, 40.0, 47.5, 10.0])
    got = fidelity.settle(lambda: next(readings), lambda x: abs(x - 47.8), 2.4, rounds=5, pause_s=2.0)
    assert got == 47.5 and slept == [2.0, 4.0]
    slept.clear()
    wrong = iter([30.0, 29.0, 31.0, 30.5])
    got = fidelity.settle(lambda: next(wrong), lambda x: abs(x - 47.8), 2.4, rounds=3, pause_s=1.0)
    assert got == 31.0 and slept == [1.0, 2.0, 3.0]
    slept.clear()
    assert fidelity.settle(lambda: 47.0, lambda x: abs(x - 47.8), 2.4) == 47.0 and slept == []


def test_check_names_every_link_of_a_refused_pair():
    from emulation.fidelity import check
    from emulation.linkemu import EmulationError
    p = Pair("i1br", "i1v1", "198.18.1.10", ("i1br:0-oci1lan:0", "i1v1:0-oci1lan:1"),
             ("internal", "access"), 8.0, 0.0)
    check([judge(p, [8.1] * 10)])  # on the plan: nothing raised
    with pytest.raises(EmulationError, match=r"i1br -> i1v1 over i1br:0-oci1lan:0 \+ i1v1:0-oci1lan:1"):
        check([judge(p, [10.0] * 10)])
