"""scenarios.chaos_plan (pure): the seeded fault schedule of `ocalab run chaos`."""
from __future__ import annotations

import pytest

from scenarios.chaos_plan import (CONTROLLER, GAP_S, KINDS, WARMUP_S, min_duration_s, schedule,
                                  targets)
from topologies.catalog import metro

PLAN = metro()
FULL_S, QUICK_S = 600.0, 120.0


def _plan_targets() -> set[str]:
    return {n.name for n in PLAN.nodes} | {lk.name for lk in PLAN.links} | {CONTROLLER}


@pytest.mark.parametrize("quick,duration_s", [(True, QUICK_S), (False, FULL_S)])
def test_same_seed_same_schedule(quick, duration_s):
    assert schedule(PLAN, 7, duration_s, quick) == schedule(metro(), 7, duration_s, quick)


@pytest.mark.parametrize("quick,duration_s", [(True, QUICK_S), (False, FULL_S)])
def test_different_seeds_differ(quick, duration_s):
    runs = {tuple((e.kind, e.target, e.time_s) for e in schedule(PLAN, s, duration_s, quick))
            for s in range(10)}
    assert len(runs) >= 9


@pytest.mark.parametrize("quick,duration_s", [(True, QUICK_S), (False, FULL_S)])
def test_every_kind_present(quick, duration_s):
    for seed in range(20):
        kinds = [e.kind for e in schedule(PLAN, seed, duration_s, quick)]
        assert set(kinds) == set(KINDS), (seed, kinds)
        if quick:
            assert len(kinds) == len(KINDS)


def test_full_adds_faults_while_they_fit():
    assert max(len(schedule(PLAN, s, FULL_S, False)) for s in range(10)) > len(KINDS)


@pytest.mark.parametrize("quick,duration_s", [(True, QUICK_S), (False, FULL_S)])
def test_one_fault_at_a_time_inside_the_duration(quick, duration_s):
    gap = GAP_S[quick]
    for seed in range(30):
        events = schedule(PLAN, seed, duration_s, quick)
        assert events[0].time_s >= WARMUP_S[quick]
        for prev, nxt in zip(events, events[1:]):
            assert nxt.time_s >= prev.time_s + prev.duration_s + gap - 1e-9, (prev, nxt)
        for e in events:
            assert 0 < e.duration_s and e.time_s + e.duration_s + gap <= duration_s + 1e-9, e


def test_targets_exist_and_fit_their_kind():
    names = _plan_targets()
    cands = targets(PLAN)
    ocas = {n.name for n in PLAN.nodes_of(role="oca")}
    for seed in range(30):
        for e in schedule(PLAN, seed, FULL_S, False):
            assert e.target in names and e.target in cands[e.kind], e
            if e.kind == "oca_kill":
                assert e.target in ocas
            if e.kind == "link_impair":
                assert e.params["extra_delay_ms"] > 0 and 0 < e.params["loss_pct"] <= 100
            if e.kind == "controller_kill":
                assert e.target == CONTROLLER
    assert cands["control_plane_kill"] == ["ctl"]


def test_too_short_a_run_is_refused_with_the_minimum():
    need = min_duration_s(PLAN, True)
    schedule(PLAN, 1, need, True)
    with pytest.raises(ValueError, match=f"at least {need:g} s"):
        schedule(PLAN, 1, need - 1, True)


def test_events_are_json_ready():
    import json
    ev = schedule(PLAN, 3, QUICK_S, True)
    assert json.loads(json.dumps([e.to_json() for e in ev]))[0]["kind"] in KINDS
