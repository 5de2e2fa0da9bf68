"""The control plane's fallback and the controller rank with one ranker (contracts.steering).

Pinned here: for the same OCAs, heartbeats, titles, per-title object counts and objects needed,
with the deployment's declared distances as the controller's path view, no load (policy
"nearest") and heartbeats judged at `now`, both give the same order and the same groups (the
fallback numbers them without the overloaded band), and the fallback's reason["content"] is
"miss" exactly for the controller's content misses.
"""
from hypothesis import given, settings
from hypothesis import strategies as st

from appliances.control_health import HealthRegistry
from appliances.steering_local import LOCAL_GROUP, LocalSteering
from contracts.deployment import parse_deployment
from contracts.steering import STALE_AFTER_S, PathMetrics
from controller.steering import OcaState, Origin, rank

NOW = 50_000.0
VIEWER = "198.18.1.7"
TITLES = ("t0000", "t0001", "t0002")

oca_st = st.fixed_dictionaries({
    "tier": st.sampled_from(("embedded", "ixp")),
    "serves_viewer": st.booleans(),
    "distance_hops": st.integers(1, 4),
    "rtt_ms": st.sampled_from((2.0, 4.2, 4.5, 12.0)),
    # None: never heard of; else the heartbeat's age in s (beyond STALE_AFTER_S: stale)
    "age_s": st.none() | st.sampled_from((0.0, 1.0, STALE_AFTER_S, STALE_AFTER_S + 0.5)),
    "status": st.sampled_from(("ok", "ok", "draining")),
    "stored": st.none() | st.lists(st.sampled_from(TITLES), unique=True),
    # None: the OCA publishes no counts; else title -> stored objects, around the needs below
    "objects": st.none() | st.dictionaries(st.sampled_from(TITLES), st.integers(0, 31)),
})
need_st = st.none() | st.sampled_from((1, 2, 29, 30, 31))


def _deployment(specs):
    ocas = [{"name": f"oca{i}", "tier": s["tier"], "url": f"http://198.18.1.{100 + i}:8080",
             "serves": ["198.18.1.0/24" if s["serves_viewer"] else "198.18.2.0/24"],
             "distance_hops": s["distance_hops"], "rtt_ms": s["rtt_ms"]}
            for i, s in enumerate(specs)]
    return parse_deployment({"ocas": ocas, "origin": {"name": "origin", "url": "http://198.19.10.11:8080"}})


def _heartbeat(s) -> dict:
    h = {"status": s["status"]}
    if s["stored"] is not None:
        h["stored_titles"] = s["stored"]
    if s["objects"] is not None:
        h["title_objects"] = s["objects"]
    return h


def _controller_state(dep, specs):
    states, view = [], {}
    for o, s in zip(dep.ocas, specs):
        states.append(OcaState(o.name, o.tier, o.url[len("http://"):].split(":")[0],
                               tuple(str(n) for n in o.serves), status=s["status"],
                               heartbeat_s=None if s["age_s"] is None else NOW - s["age_s"],
                               stored_titles=None if s["stored"] is None else frozenset(s["stored"]),
                               title_objects=s["objects"], url=o.url))
        view[o.name] = PathMetrics(o.distance_hops, o.rtt_ms)
    return states, view


@settings(max_examples=300, deadline=None)
@given(st.lists(oca_st, max_size=6), st.sampled_from(TITLES), need_st)
def test_fallback_and_controller_give_the_same_order_without_load(specs, title, need):
    dep = _deployment(specs)
    reg = HealthRegistry()
    for o, s in zip(dep.ocas, specs):
        if s["age_s"] is not None:
            reg.update(o.name, _heartbeat(s), NOW - s["age_s"])
    local = LocalSteering(dep, reg).rank(VIEWER, title, NOW, need)
    states, view = _controller_state(dep, specs)
    ctl = rank(VIEWER, title, states, view, Origin("origin", "198.19.10.11"), NOW,
               need_objects=need)
    assert [loc.name for loc in local] == [r.name for r in ctl]
    assert [loc.reason["group"] for loc in local] == [LOCAL_GROUP[r.reason["group"]] for r in ctl]
    assert [loc.reason["content"] == "miss" for loc in local] == [
        r.reason["content_miss"] and not r.reason["health_miss"] for r in ctl]
