"""Plan-distance steering: tier order, prefix filter, content and health misses, determinism."""
import json

import pytest

from appliances.control_health import HealthRegistry
from appliances.steering_local import LocalSteering, RemoteSteering, SteeringUnavailable
from contracts.deployment import DeploymentError, parse_deployment
from contracts.steering import Location

NOW = 1_000_000.0


def deployment(extra_ocas=()):
    return parse_deployment({
        "ocas": [
            {"name": "ixp1", "tier": "ixp", "url": "http://198.18.9.10:8080",
             "serves": ["198.18.1.0/24", "198.18.2.0/24"], "distance_hops": 3, "rtt_ms": 12},
            {"name": "i1oca2", "tier": "embedded", "url": "http://198.18.1.101:8080",
             "serves": ["198.18.1.0/24"], "distance_hops": 1, "rtt_ms": 4.5},
            {"name": "i1oca1", "tier": "embedded", "url": "http://198.18.1.100:8080",
             "serves": ["198.18.1.0/24"], "distance_hops": 1, "rtt_ms": 4.2},
            {"name": "i2oca1", "tier": "embedded", "url": "http://198.18.2.100:8080",
             "serves": ["198.18.2.0/24"], "distance_hops": 1, "rtt_ms": 4.0},
            *extra_ocas],
        "origin": {"name": "origin", "url": "http://198.18.100.10:8080", "tier": "origin"},
        "catalog": {"n_titles": 10, "duration_s": 40},
        "regions": {"isp1": {"prefixes": ["198.18.1.0/24"], "preference_seed": 11},
                    "isp2": {"prefixes": ["198.18.2.0/24"], "preference_seed": 12}},
    })


def healthy(reg, name, titles=None, now=NOW, status="ok", objects=None, miss_mode=None):
    h = {"name": name, "status": status, "load": 0.1}
    if miss_mode is not None:
        h["miss_mode"] = miss_mode
    if titles is not None:
        h["stored_titles"] = titles
    if objects is not None:
        h["title_objects"] = objects
    reg.update(name, h, now)


def names(locs):
    return [loc.name for loc in locs]


def test_tier_then_distance_then_rtt_and_prefix_filter():
    reg = HealthRegistry()
    for n in ("ixp1", "i1oca1", "i1oca2", "i2oca1"):
        healthy(reg, n)
    s = LocalSteering(deployment(), reg)
    assert names(s.rank("198.18.1.7", "t0001", NOW)) == ["i1oca1", "i1oca2", "ixp1", "origin"]
    assert names(s.rank("198.18.2.7", "t0001", NOW)) == ["i2oca1", "ixp1", "origin"]
    # a viewer no OCA serves only gets the origin
    assert names(s.rank("198.18.50.1", "t0001", NOW)) == ["origin"]
    loc = s.rank("198.18.1.7", "t0001", NOW)[0]
    assert loc.base_url_root == "http://198.18.1.100:8080" and loc.tier == "embedded"
    assert loc.reason["health"] == "ok"


def test_content_miss_pushed_below_hits_but_above_origin():
    reg = HealthRegistry()
    healthy(reg, "i1oca1", titles=["t0002"])
    healthy(reg, "i1oca2", titles=["t0001"])
    healthy(reg, "ixp1", titles=["t0001", "t0002"])
    s = LocalSteering(deployment(), reg)
    locs = s.rank("198.18.1.7", "t0001", NOW)
    assert names(locs) == ["i1oca2", "ixp1", "i1oca1", "origin"]
    assert locs[2].reason["content"] == "miss"
    assert names(s.rank("198.18.1.7", "t0002", NOW)) == ["i1oca1", "ixp1", "i1oca2", "origin"]
    # unknown content (no stored_titles in the heartbeat) counts as a hit
    healthy(reg, "i1oca1")
    assert names(s.rank("198.18.1.7", "t0001", NOW))[:2] == ["i1oca1", "i1oca2"]


def test_a_pull_through_oca_ranks_as_if_it_held_every_title():
    reg = HealthRegistry()
    healthy(reg, "i1oca1", titles=["t0002"], objects={"t0002": 30}, miss_mode="proxy")
    healthy(reg, "i1oca2", titles=["t0002"], objects={"t0002": 30}, miss_mode="content_miss")
    healthy(reg, "ixp1", titles=["t0001"], objects={"t0001": 30}, miss_mode="content_miss")
    locs = LocalSteering(deployment(), reg).rank("198.18.1.7", "t0001", NOW, need_objects=30)
    assert names(locs) == ["i1oca1", "ixp1", "i1oca2", "origin"]
    assert [loc.reason["content"] for loc in locs[:3]] == ["pull", "hit", "miss"]


def test_content_is_what_the_session_needs_when_counts_and_need_are_known():
    reg = HealthRegistry()
    healthy(reg, "i1oca1", titles=["t0001"], objects={"t0001": 29})  # nearest, one object short
    healthy(reg, "i1oca2", titles=["t0001"], objects={"t0001": 30})
    healthy(reg, "ixp1", titles=["t0001"])                            # no counts published
    s = LocalSteering(deployment(), reg)
    locs = s.rank("198.18.1.7", "t0001", NOW, need_objects=30)
    assert names(locs) == ["i1oca2", "ixp1", "i1oca1", "origin"]
    assert [loc.reason["content"] for loc in locs[:3]] == ["hit", "hit", "miss"]
    assert [loc.reason["group"] for loc in locs] == [0, 0, 1, 2]
    # need unknown: one stored object of the title is a hit (the stored_titles rule)
    locs = s.rank("198.18.1.7", "t0001", NOW)
    assert names(locs) == ["i1oca1", "i1oca2", "ixp1", "origin"]
    assert {loc.reason["content"] for loc in locs[:3]} == {"hit"}
    # no list and no counts: unknown, ranked as a hit; a health miss reads unknown too
    healthy(reg, "ixp1")
    healthy(reg, "i1oca2", objects={"t0001": 30}, now=NOW - 10)
    locs = s.rank("198.18.1.7", "t0001", NOW, need_objects=30)
    assert [(loc.name, loc.reason["content"]) for loc in locs] == [
        ("ixp1", "unknown"), ("i1oca1", "miss"), ("origin", "hit"), ("i1oca2", "unknown")]


def test_health_misses_stale_status_and_missing_heartbeat():
    reg = HealthRegistry()
    healthy(reg, "i1oca1", now=NOW - 3.5)            # stale (> 3 s)
    healthy(reg, "i1oca2", status="overloaded")        # status != ok
    healthy(reg, "ixp1", now=NOW - 2.9)               # fresh enough
    s = LocalSteering(deployment(), reg)
    locs = s.rank("198.18.1.7", "t0001", NOW)
    assert names(locs) == ["ixp1", "origin", "i1oca1", "i1oca2"]
    assert locs[2].reason["health"] == "stale"
    assert locs[3].reason["health"] == "status:overloaded"
    # the one with no heartbeat at all is a health miss too
    assert s.rank("198.18.2.7", "t0001", NOW)[-1].reason["health"] == "no_heartbeat"
    dropping = LocalSteering(deployment(), reg, drop_health_misses=True)
    assert names(dropping.rank("198.18.1.7", "t0001", NOW)) == ["ixp1", "origin"]


def test_ties_are_broken_by_name_deterministically():
    twin = {"name": "i1oca0", "tier": "embedded", "url": "http://198.18.1.99:8080",
            "serves": ["198.18.1.0/24"], "distance_hops": 1, "rtt_ms": 4.2}
    reg = HealthRegistry()
    for n in ("ixp1", "i1oca1", "i1oca2", "i1oca0"):
        healthy(reg, n)
    s = LocalSteering(deployment([twin]), reg)
    first = names(s.rank("198.18.1.7", "t0001", NOW))
    assert first[:2] == ["i1oca0", "i1oca1"]
    assert all(names(s.rank("198.18.1.7", "t0001", NOW)) == first for _ in range(5))


def test_deployment_errors_name_the_field():
    bad = json.loads(json.dumps({"ocas": [{"name": "x", "tier": "moon", "url": "http://a:1",
                                           "serves": ["198.18.1.0/24"], "distance_hops": 1,
                                           "rtt_ms": 1}],
                                 "origin": {"name": "origin", "url": "http://a:2"}}))
    with pytest.raises(DeploymentError, match=r"ocas\[0\]\.tier"):
        parse_deployment(bad)
    bad["ocas"][0]["tier"] = "ixp"
    bad["ocas"][0]["serves"] = ["198.18.1.1/24"]
    with pytest.raises(DeploymentError, match="serves"):
        parse_deployment(bad)
    bad["ocas"][0]["serves"] = ["198.18.1.0/24"]
    bad["origin"]["url"] = "http://a:2/path"
    with pytest.raises(DeploymentError, match="origin.url"):
        parse_deployment(bad)


def test_client_prefix_is_region_prefix_or_host():
    d = deployment()
    assert d.client_prefix("198.18.2.9") == "198.18.2.0/24"
    assert d.client_prefix("127.0.0.1") == "127.0.0.1/32"
    assert d.region_of_ip("198.18.1.3").name == "isp1"


def _rank_answer(path: str) -> bytes:
    return json.dumps({"locations": [{"name": "ixp1", "tier": "ixp", "base_url_root": "http://198.18.9.10:8080",
                                      "reason": {"path": path}}],
                       "excluded": [{"name": "emb1", "tier": "embedded", "why": "stale_heartbeat:2.1s"}]}).encode()


def test_remote_steering_round_trip_and_failure(http_stub):
    url = http_stub(_rank_answer)
    locs = RemoteSteering(url).rank("198.18.1.7", "t0003", NOW)
    assert locs == [Location("ixp1", "ixp", "http://198.18.9.10:8080")]
    assert locs[0].reason["path"] == "/rank?viewer=198.18.1.7&title=t0003"
    # the OCAs the controller left out, and why, come with the detailed answer
    assert RemoteSteering(url).rank_detail("198.18.1.7", "t0003", NOW) == (locs, {"emb1": "stale_heartbeat:2.1s"})
    # a policy, when given, goes to the controller with every query
    locs = RemoteSteering(url, policy="load_aware").rank("198.18.1.7", "t0003", NOW)
    assert locs[0].reason["path"] == "/rank?viewer=198.18.1.7&title=t0003&policy=load_aware"
    # the objects the session needs, when known, go with the query
    locs = RemoteSteering(url).rank("198.18.1.7", "t0003", NOW, need_objects=30)
    assert locs[0].reason["path"] == "/rank?viewer=198.18.1.7&title=t0003&need=30"
    import socket
    with socket.socket() as s:  # a port with nothing listening: bind, note it, close
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    with pytest.raises(SteeringUnavailable):
        RemoteSteering(dead, timeout_s=1.0).rank("198.18.1.7", "t0003", NOW)


def test_location_retries_round_trip_and_are_validated():
    from contracts.steering import MAX_RETRIES, Location
    loc = Location("anycast", "embedded", "http://198.19.254.1:8080", retries=2)
    assert Location.from_json(loc.to_json()) == loc
    assert Location.from_json({k: v for k, v in loc.to_json().items() if k != "retries"}).retries == 0
    for bad in (-1, MAX_RETRIES + 1, "2", 1.5, True):
        with pytest.raises(ValueError, match="retries"):
            Location.from_json({**loc.to_json(), "retries": bad})
