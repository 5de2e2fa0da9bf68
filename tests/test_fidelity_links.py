"""The per-link fidelity verdict and calibration budget (emulation.linkfit), without root.

Synthetic measurements come from a real plan (metro): every planned pair's samples are its true
RTT (the realized links' two directions summed) plus positive host noise; the verdict reads the
minimum, as the gate does.
"""
from __future__ import annotations

import random

import pytest

from emulation.fidelity import check_links, judge, pairs, suspects
from emulation.linkemu import EmulationError
from emulation.linkfit import (COMPENSATION_BUDGET_MS, as_rows, calibrate, early_unit, groups,
                               judge_links)
from topologies.catalog import MetroParams, metro
from topologies.plan import Link, LinkEnd, Node, Plan, Route

ACCESS = "i1v1:0-oci1lan:1"
CLOUD = "cldr:0-octrn:1"   # transit router LAN to cloud region: 30 ms
# every LAN port with a delay line (metro's default has none there): the groups and calibration
# cases need links the pairs cannot separate
PLAN = metro(MetroParams(lan_delay_ms=0.5))


def synth(plan: Plan, skew: dict[str, tuple[float, float]] | None = None, seed: int = 0,
          overhead_ms: float = 0.0, bursts: float = 0.0, count: int = 19) -> list:
    """One Measurement per planned pair: true RTT (+ overhead_ms per link and direction) plus
    exponential noise (mean 0.2 ms); a `bursts` fraction of pairs get +1..5 ms on 3/4 of samples."""
    rng = random.Random(seed)
    skew = skew or {}
    one_way = {lk.name: (lk.delay_ms + overhead_ms + skew.get(lk.name, (0, 0))[0],
                         lk.delay_ms + overhead_ms + skew.get(lk.name, (0, 0))[1]) for lk in plan.links}
    out = []
    for p in pairs(plan):
        rtt = sum(sum(one_way[n]) for n in p.links)
        burst = rng.uniform(1, 5) if rng.random() < bursts else 0.0
        samples = [rtt + rng.expovariate(1 / 0.2) + (burst if i % 4 else 0.0) for i in range(count)]
        out.append(judge(p, samples))
    return out


def refused(units) -> list[tuple[str, ...]]:
    return [u.links for u in units if not u.ok]


# ---- identifiability on metro -----------------------------------------------------------------
def test_metro_links_are_judged_alone_except_two_point_to_point_segments():
    units = judge_links(PLAN, synth(PLAN))
    grouped = [u.links for u in units if u.kind == "group"]
    assert grouped == [("nfxr:1-ocnfx:0", "nfxoca1:0-ocnfx:1"), ("nfxr:2-ocbb:0", "cldr:1-ocbb:1")]
    alone = {u.links[0] for u in units if u.kind == "link"}
    assert alone == {lk.name for lk in PLAN.links} - {n for g in grouped for n in g}
    cloud = next(u for u in units if u.links == (CLOUD,))
    assert cloud.kind == "link" and cloud.tolerance_ms == pytest.approx(3.0)  # 5% of its own 60 ms


def test_separating_pairs_make_a_router_lan_identifiable():
    ps = {(p.src, p.dst) for p in pairs(PLAN)}
    assert {("i1v1", "i1v2"), ("ctl", "origin")} <= ps  # host-host pairs on switches with a router
    small = metro(MetroParams(isps=1, viewers_per_isp=1))
    units = judge_links(small, synth(small))
    assert {u.links for u in units if u.kind == "link"} >= {(ACCESS,), (CLOUD,)}


def test_groups_are_the_smallest_identifiable_sums():
    # a + b and b + c measured: neither alone, a + b and b + c are groups; a + c never measured
    assert groups([("a", "b"), ("b", "c")], ["a", "b", "c"]) == [("a", "b"), ("b", "c")]
    assert groups([("a", "b"), ("b", "c"), ("a", "c")], ["a", "b", "c"]) == [("a",), ("b",), ("c",)]


def chain_plan(second_delay_ms: float) -> Plan:
    nodes = (Node("r1", "router", "border", "a"), Node("h1", "host", "viewer", "a"),
             Node("ocs1", "switch", "lan", "a", dpid=1))
    links = (Link(LinkEnd("h1", 0, "02:00:00:00:01:00", "198.18.1.10/24"),
                  LinkEnd("ocs1", 0, "02:00:00:00:02:00"), "access", 50.0, 3.0),
             Link(LinkEnd("ocs1", 1, "02:00:00:00:02:01"),
                  LinkEnd("r1", 0, "02:00:00:00:00:00", "198.18.1.1/24"), "internal", 1000.0, second_delay_ms))
    return Plan("chain", nodes, links, (Route("h1", "default", "198.18.1.1"),))


def test_a_link_without_delay_emulation_is_pinned_and_its_neighbour_judged_alone():
    plan = chain_plan(0.0)
    units = {u.links: u for u in judge_links(plan, synth(plan))}
    assert units[("ocs1:1-r1:0",)].kind == "pinned" and units[("ocs1:1-r1:0",)].ok
    assert units[("h1:0-ocs1:0",)].kind == "link" and units[("h1:0-ocs1:0",)].ok
    assert refused(judge_links(plan, synth(plan, {"h1:0-ocs1:0": (1.0, 1.0)}))) == [("h1:0-ocs1:0",)]
    # both with delay: two L3 ends on one switch measure only the sum, judged as a group
    plan = chain_plan(0.5)
    assert [u.kind for u in judge_links(plan, synth(plan))] == ["group"]


# ---- the verdict ------------------------------------------------------------------------------
@pytest.mark.parametrize("link,skew", [
    (ACCESS, (1.0, 1.0)),    # 1 ms too slow each way
    (ACCESS, (-1.0, -1.0)),  # 1 ms too fast each way
    (CLOUD, (2.0, 2.0)),     # the cloud link 2 ms off: its own 3 ms tolerance, not a 90 ms pair's
    (CLOUD, (-2.0, -2.0)),
    (ACCESS, (1.0, 0.0)),    # asymmetric: one direction 1 ms slow
], ids=["access-slow", "access-fast", "cloud-slow", "cloud-fast", "access-asymmetric"])
def test_a_wrong_link_is_refused_by_name(link, skew):
    results = synth(PLAN, {link: skew}, seed=3)
    units = judge_links(PLAN, results)
    assert refused(units) == [(link,)]
    bad = next(u for u in units if not u.ok)
    assert bad.error_ms == pytest.approx(abs(sum(skew)), abs=0.1)
    with pytest.raises(EmulationError) as exc:
        check_links(units, results)
    cls = next(lk.cls for lk in PLAN.links if lk.name == link)
    assert f"{link} ({cls}): plan " in str(exc.value) and "tolerance" in str(exc.value)
    # the pairs crossing it are measured again before the verdict (settle), and only those
    again = suspects(results, PLAN)
    assert again and all(link in p.links for p in again)


def test_the_cloud_link_off_by_2ms_passes_every_pair_over_90ms():
    """What the pair verdict missed: a 90 ms pair has 4.5 ms of tolerance."""
    results = synth(PLAN, {CLOUD: (2.0, 2.0)}, seed=1)
    assert all(m.ok for m in results if CLOUD in m.pair.links and m.pair.expected_rtt_ms >= 90)
    assert (CLOUD,) in refused(judge_links(PLAN, results))


@pytest.mark.parametrize("seed", range(10))
def test_a_healthy_network_with_noise_passes(seed):
    results = synth(PLAN, seed=seed, overhead_ms=0.05, bursts=0.3)
    units = judge_links(PLAN, results)
    assert refused(units) == [] and all(m.ok for m in results)
    check_links(units, results)  # nothing raised


def test_a_pair_without_samples_leaves_its_links_unmeasured_and_refused():
    results = [judge(m.pair, []) if ACCESS in m.pair.links else m for m in synth(PLAN)]
    units = judge_links(PLAN, results)
    assert refused(units) == [(ACCESS,)] and next(u for u in units if not u.ok).kind == "unmeasured"
    assert as_rows(units)[[u.links for u in units].index((ACCESS,))]["estimated_delay_ms"] is None


# ---- calibration and its budget ---------------------------------------------------------------
def relayed_all(plan: Plan) -> set[str]:
    return {lk.name for lk in plan.links if lk.impaired}


def test_calibration_takes_off_the_emulator_overhead_per_link():
    relayed = relayed_all(PLAN)
    results = synth(PLAN, overhead_ms=0.2, seed=2)
    units = judge_links(PLAN, results, {}, relayed)
    comp = calibrate(units, PLAN, relayed)
    alone = [u.links[0] for u in units if u.kind == "link"]
    assert all(comp[n] == pytest.approx(0.2, abs=0.03) for n in alone)
    # a group shares its excess equally: 0.4 ms over two links
    assert comp["nfxr:2-ocbb:0"] == pytest.approx(0.2, abs=0.03) == comp["cldr:1-ocbb:1"]
    # measured again with that off: on the plan; an overshoot is given back, never below 0
    again = synth(PLAN, overhead_ms=0.2 - 0.3, seed=2)  # 0.3 off where 0.2 was needed
    back = calibrate(judge_links(PLAN, again, {n: 0.3 for n in relayed}, relayed), PLAN, relayed,
                     base={n: 0.3 for n in relayed})
    assert back[ACCESS] == pytest.approx(0.2, abs=0.03)


def test_a_calibration_over_the_budget_fails_naming_the_link():
    """0.45 ms slow one way plus 0.2 ms of emulator: 0.65 ms needed, 0.5 ms allowed. The
    compensation stays at the budget, and although the rest (0.15 ms one way) is inside the
    tolerance, the link is refused: more than the emulator's overhead is a wrong link."""
    relayed = relayed_all(PLAN)
    first = synth(PLAN, {ACCESS: (0.45, 0.45)}, overhead_ms=0.2, seed=4)
    comp = calibrate(judge_links(PLAN, first, {}, relayed), PLAN, relayed)
    assert comp[ACCESS] == COMPENSATION_BUDGET_MS
    # measured again with every link's compensation taken off
    shifted = synth(PLAN, {n: (0.45 - c, 0.45 - c) if n == ACCESS else (-c, -c) for n, c in comp.items()},
                    overhead_ms=0.2, seed=5)
    units = judge_links(PLAN, shifted, comp, relayed)
    bad = [u for u in units if not u.ok]
    assert [u.links for u in bad] == [(ACCESS,)] and bad[0].error_ms < bad[0].tolerance_ms
    assert bad[0].over_budget == (ACCESS,)
    with pytest.raises(EmulationError, match=rf"{ACCESS} would need 0\.6\d+ ms of compensation one way, "
                                             r"over the 0\.5 ms budget"):
        check_links(units, shifted)


def test_compensation_never_exceeds_the_budget_nor_80pct_of_a_link():
    lan = next(lk for lk in PLAN.links if lk.delay_ms == 0.5 and lk.cls == "internal")
    relayed = relayed_all(PLAN)
    units = judge_links(PLAN, synth(PLAN, overhead_ms=3.0), {}, relayed)
    comp = calibrate(units, PLAN, relayed)
    assert comp[ACCESS] == COMPENSATION_BUDGET_MS and comp[lan.name] == 0.4
    assert all(u.over_budget for u in units if u.kind in ("link", "group"))


def test_early_unit_means_too_much_compensation_or_a_fast_link():
    units = {u.links: u for u in judge_links(PLAN, synth(PLAN, {ACCESS: (-0.5, -0.5)}))}
    assert early_unit(units[(ACCESS,)]) and not early_unit(units[(CLOUD,)])


# ---- Options.skew_ms: break a link on purpose (no root: nothing is built) ----------------------
def test_skew_shapes_each_direction_on_netem_and_is_validated():
    pytest.importorskip("mininet")
    from emulation.build import Network, Options
    net = Network(PLAN, Options(skew_ms={ACCESS: (1.0, -0.5)}))
    net.link_backend = "netem"
    net._check_skew()
    lk = next(x for x in PLAN.links if x.name == ACCESS)
    assert net._realized(lk, lk.a.node).delay_ms == lk.delay_ms + 1.0   # a's egress: a -> b
    assert net._realized(lk, lk.b.node).delay_ms == lk.delay_ms - 0.5
    assert lk.delay_ms == 3.0  # the plan is unchanged
    s = net.summary()
    assert s["skew_ms"] == {ACCESS: [1.0, -0.5]} and s["compensation_budget_ms"] == COMPENSATION_BUDGET_MS
    assert s["link_verdict"] == []
    for bad, why in [({"nope": (1.0, 1.0)}, "not a link"), ({ACCESS: (-4.0, 0.0)}, ">= -3"),
                     ({ACCESS: (1.0,)}, "want")]:
        with pytest.raises(EmulationError, match=why):
            Network(PLAN, Options(skew_ms=bad))._check_skew()


def test_switch_ports_are_pinned_at_their_plan_not_at_zero():
    """metro's default LAN ports (0.1 ms, no delay line): pairs over them expect their plan, the
    estimator takes the plan off before fitting the relayed links, and a switch that takes what
    the plan says leaves every link ok; pairs over two ports alone are judged like any other."""
    from topologies.plan import SWITCH_PORT_DELAY_MS
    plan = metro()
    lan = [lk for lk in plan.links if lk.delay_ms == SWITCH_PORT_DELAY_MS]
    assert lan and not any(lk.impaired for lk in lan)
    assert all(lk.impaired for lk in plan.links if lk.delay_ms > SWITCH_PORT_DELAY_MS)
    units = judge_links(plan, synth(plan))
    assert all(u.ok for u in units), [u for u in units if not u.ok]
    assert {u.estimated_delay_ms for u in units if u.kind == "pinned"} == {SWITCH_PORT_DELAY_MS}
    both = [p for p in pairs(plan) if all(n in {lk.name for lk in lan} for n in p.links)]
    assert both and all(p.expected_rtt_ms == 4 * SWITCH_PORT_DELAY_MS for p in both)
    # a relayed link 1 ms slow is still found and named, with the ports pinned beside it
    bad = judge_links(plan, synth(plan, skew={ACCESS: (1.0, 1.0)}))
    assert [u.links for u in bad if not u.ok] == [(ACCESS,)]
