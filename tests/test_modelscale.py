"""harness.modelscale: one scale, every rate and size derived from it (pure, no root)."""
import pytest

from harness.modelscale import ModelScale, apply, from_settings
from harness.runner import scaled_overrides


def test_identity_scale_changes_nothing():
    s = ModelScale()
    assert s.ladder((235, 750, 5800)) == (235, 750, 5800)
    assert s.shared_mbps(50) == 50 and s.flow_mbps(8) == 8 and s.sessions(3) == 3
    assert s.store_rule("mb:100") == "mb:100"
    assert s.plan_overrides({"access_bw_mbps": 50.0}, {}) == {}


def test_rates_sizes_and_sessions_follow_d_and_v():
    s = ModelScale(bitrate_divisor=10, viewer_factor=17 / 3)
    assert s.ladder((235, 750, 1750, 3000, 5800)) == (24, 75, 175, 300, 580)
    assert s.flow_mbps(30) == 3.0                     # fill: the same bytes / D in the same time
    assert s.shared_mbps(50) == pytest.approx(28.3333, abs=1e-3)  # same share per viewer
    assert s.sessions(3) == 17
    assert s.store_rule("mb:400") == "mb:40" and s.store_rule("head:0.95") == "head:0.95"
    # each viewer keeps the reference's share of its access link, in ladder-top units
    assert s.shared_mbps(50) / s.sessions(3) / s.ladder((5800,))[0] == pytest.approx(50 / 3 / 5800, rel=0.01)


@pytest.mark.parametrize("d,v", [(0.5, 1), (1, 0), (float("nan"), 1), (True, 1), ("10", 1)])
def test_bad_scale_is_refused(d, v):
    with pytest.raises(ValueError, match="model scale"):
        ModelScale(bitrate_divisor=d, viewer_factor=v)


def test_collapsing_ladder_is_refused():
    with pytest.raises(ValueError, match="collapses"):
        ModelScale(bitrate_divisor=100).ladder((235, 750, 1750))


def test_apply_records_reference_and_scaled_values():
    cfg = {"viewers_per_host": 3, "fill_rate_mbps": {"ixp": 30.0, "embedded": 8.0}, "sweep": ["mb:100"],
           "catalog": {"seed": 1, "n_titles": 4, "duration_s": 8}}
    out = apply(cfg, ModelScale(10, 2), sessions=("viewers_per_host",), flow_mbps=("fill_rate_mbps",),
                store_rules=("sweep",))
    assert out["viewers_per_host"] == 6 and out["fill_rate_mbps"] == {"ixp": 3.0, "embedded": 0.8}
    assert out["sweep"] == ["mb:10"] and out["catalog"]["ladder_kbps"] == [24, 75, 175, 300, 580]
    d = out["model_scale"]["derived"]
    assert d["viewers_per_host"] == {"reference": 3, "scaled": 6}
    assert from_settings(out) == ModelScale(10, 2)
    assert cfg["viewers_per_host"] == 3  # the reference is not modified
    with pytest.raises(ValueError, match="no field"):
        apply(cfg, ModelScale(10, 2), sessions=("viewers_per_hots",))
    with pytest.raises(ValueError, match="unknown keys"):
        from_settings({"model_scale": {"bitrate_divisr": 10}})


def test_plan_links_scale_unless_the_user_set_them():
    cfg = apply({"catalog": {"seed": 1}}, ModelScale(10, 5))
    out = scaled_overrides(cfg, {"transit_bw_mbps": "77"})
    assert out["access_bw_mbps"] == "25" and out["core_bw_mbps"] == "500" and out["transit_bw_mbps"] == "77"
    assert cfg["model_scale"]["derived"]["transit_bw_mbps"]["explicit"] is True
    # the queues follow the rates, so a full queue holds the reference's time
    assert out["queue_pkts"] == "500" and cfg["model_scale"]["derived"]["queue_pkts"]["reference"] == 1000
    assert scaled_overrides(apply({}, ModelScale(10, 5)), {"queue_pkts": "64"})["queue_pkts"] == "64"
    assert ModelScale(100, 1).queue_pkts(1000) == 10  # never below 10 packets
    assert scaled_overrides({"catalog": {}}, {"isps": "2"}) == {"isps": "2"}  # no scale stated


def test_the_scaled_plan_keeps_each_queue_time():
    from topologies.catalog import by_name
    cfg = apply({"catalog": {"seed": 1}}, ModelScale(10, 1.7))
    ref, scaled = by_name("metro"), by_name("metro", scaled_overrides(cfg, {}))
    for a, b in zip(ref.links, scaled.links):
        assert b.queue_pkts * 1500 * 8 / (b.bw_mbps * 1e3) == pytest.approx(
            a.queue_pkts * 1500 * 8 / (a.bw_mbps * 1e3), rel=0.01)  # ms of queue at the link rate


def test_full_settings_reach_100_sessions_per_arm():
    from scenarios import placement
    cfg = placement._settings(False)
    assert cfg["viewers_per_host"] * 6 >= 100
    assert placement._settings(True).get("model_scale") is None  # quick runs stay at world scale


def test_initial_window_scales_with_the_bitrates():
    from emulation.build import initcwnd_script
    from emulation.linkemu import EmulationError
    from harness.runner import scaled_initcwnd
    assert ModelScale().initcwnd() is None and ModelScale(10, 5).initcwnd() == 1
    assert ModelScale(2).initcwnd() == 5 and ModelScale(40).initcwnd() == 1
    cfg = apply({"catalog": {"seed": 1}}, ModelScale(10, 5))
    assert scaled_initcwnd(cfg) == 1 and cfg["model_scale"]["derived"]["initcwnd"] == {"reference": 10, "scaled": 1}
    assert scaled_initcwnd({"catalog": {}}) is None
    lines = initcwnd_script(1)
    assert "initcwnd 1" in lines[0] and lines[-1].startswith("test -z")  # read back: fails unless set
    for bad in (0, 101, 1.5, True):
        with pytest.raises(EmulationError, match="initcwnd"):
            initcwnd_script(bad)
