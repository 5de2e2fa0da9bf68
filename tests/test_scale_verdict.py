"""bench.scale_verdict: QoE of a step, loaded RTT per link class, components, the headline."""
import pytest

from bench.scale import ladder, plan_overrides
from bench.scale_verdict import component_of, headline, qoe, relay_cpu_per_gbit, step_verdict
from emulation.loaded import loaded_tolerance_ms, rtt_by_class


def _sess(startup_s=0.5, rebuf=0.0, kbps=580.0, status="ok"):
    return {"status": status, "startup_s": startup_s, "rebuffer_ratio": rebuf, "mean_kbps": kbps}


def _step(n, sessions, rtt_rows=()):
    step = {"viewers": n, "qoe": qoe(sessions), "rtt": rtt_by_class(list(rtt_rows))}
    return step


def _rtt(classes, expected, rtts, jitter=0.0):
    return {"classes": classes, "expected_rtt_ms": expected, "jitter_ms": jitter, "rtts_ms": rtts}


def test_qoe_summary_counts_only_ok_sessions_for_figures():
    q = qoe([_sess(0.4), _sess(0.6, rebuf=0.02, kbps=400), _sess(9.0, status="failed")])
    assert q["sessions"] == 3 and q["sessions_ok"] == 2
    assert q["startup_p50_s"] == 0.5 and q["rebuffer_ratio"] == 0.01 and q["mean_kbps"] == 490.0


def test_rtt_by_class_judges_each_pair_against_its_own_plan():
    rows = [_rtt(["access", "internal"], 9.0, [9.1, 9.2, 9.3]),
            _rtt(["access", "internal"], 9.0, [10.2, 10.3, 10.4]),  # median 1.3 ms late: > 1 ms
            _rtt(["transit"], 30.0, [31.4, 31.5, 31.6])]              # 1.5 ms of 30: within 5%
    by = rtt_by_class(rows)
    assert by["access+internal"]["ok"] is False and by["access+internal"]["err_max_ms"] == 1.3
    assert by["transit"]["ok"] is True and by["transit"]["pairs"] == 1
    assert loaded_tolerance_ms(30.0) == 1.5 and loaded_tolerance_ms(4.0, 0.5) == 2.0


def test_a_pair_without_replies_fails_its_class():
    by = rtt_by_class([{**_rtt(["peering"], 14.0, []), "lost": 20}])
    assert by["peering"]["ok"] is False and by["peering"]["lost"] == 20


def test_step_verdict_passes_within_ten_percent_and_names_each_failure():
    base = _step(25, [_sess(0.5)] * 10)
    assert step_verdict(base, base)["ok"]
    assert step_verdict(_step(50, [_sess(0.54, kbps=530)] * 10), base)["ok"]
    bad = step_verdict(_step(300, [_sess(0.7, rebuf=0.05, kbps=500)] * 9 + [_sess(status="failed")],
                             [_rtt(["access"], 6.0, [7.5, 7.6, 7.7])]), base)
    text = " ".join(bad["reasons"])
    assert not bad["ok"]
    for word in ("sessions not ok", "startup", "rebuffer", "bitrate", "loaded RTT of access"):
        assert word in text, (word, text)


def test_small_startups_get_an_absolute_floor():
    base = _step(25, [_sess(0.30)] * 5)
    assert step_verdict(_step(50, [_sess(0.34)] * 5), base)["ok"]       # +40 ms: within 50 ms
    assert not step_verdict(_step(50, [_sess(0.36)] * 5), base)["ok"]   # +60 ms


def test_headline_is_the_last_step_of_an_unbroken_passing_run():
    ok, bad = {"ok": True}, {"ok": False}
    steps = [{"viewers": n, "verdict": v} for n, v in ((25, ok), (50, ok), (100, bad), (200, ok))]
    assert headline(steps) == 50
    assert headline([{"viewers": 25, "verdict": bad}]) is None


@pytest.mark.parametrize("label,comp", [("relay:l3", "relays"), ("player:s25-i1v1", "players"),
                                        ("controller", "controller"), ("probe", "controller"),
                                        ("origin", "origin"), ("control", "control_plane"),
                                        ("i1oca1", "ocas"), ("something", None)])
def test_component_of(label, comp):
    assert component_of(label, {"i1oca1"}) == comp


def test_relay_cost_and_scaling_rules():
    assert relay_cpu_per_gbit(2.0, 250_000_000) == 1.0
    assert relay_cpu_per_gbit(1.0, 0) is None
    assert ladder()[-1] == 580 and min(ladder()) >= 16
    # each of 6 hosts carries 400 / 6 -> 67 viewers x 0.58 Mbit/s x 2 headroom
    assert plan_overrides(400, 6) == {"access_bw_mbps": "78"}
    assert plan_overrides(25, 6) == {"access_bw_mbps": "50"}
