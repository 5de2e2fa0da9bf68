"""Pure controller logic added for steering: anycast rules, pushed OCA state, the steering view
(link state applied to rankings), plan path links, and the prober's snapshot."""
from __future__ import annotations

import time

import pytest

from controller import anycast as ac
from controller import forwarding as fw
from controller.ocas import TIMEOUT_ERROR, TIMEOUTS_TO_EXCLUDE, OcaRegistry
from controller.probe import snapshot, targets
from topologies.routes import path_links
from contracts.steering import MONITOR_DEAD_S, STALE_AFTER_S
from controller.steering_view import SteeringView
from topologies.catalog import metro
from topologies.plan import PlanError

PLAN = metro()
SPECS = fw.flow_specs(PLAN)
NOW = 1_000_000.0
OCA_LINK = "i1oca1:0-oci1lan:3"


def mac_of(node: str) -> str:
    return PLAN.ends_of(node)[0].mac


def push_body(ok: dict[str, bool] | None = None, **health) -> dict:
    ok = ok or {}
    rows = []
    for name, tier, ip, serves in [("i1oca1", "embedded", "198.18.1.100", ["198.18.1.0/24"]),
                                   ("i2oca1", "embedded", "198.18.2.100", ["198.18.2.0/24"]),
                                   ("nfxoca1", "ixp", "198.19.1.10", ["198.18.1.0/24", "198.18.2.0/24"])]:
        good = ok.get(name, True)
        rows.append({"name": name, "tier": tier, "url": f"http://{ip}:8080", "serves": serves,
                     "probe": {"ok": good, "error": None if good else "refused"},
                     "health": {"status": "ok", "load": 0.1, **health} if good else None})
    return {"origin": {"name": "origin", "url": "http://198.19.10.11:8080"}, "ocas": rows}


def view(body=None, now=NOW) -> SteeringView:
    sv = SteeringView(PLAN, ac.ANYCAST_IP)
    sv.ocas.apply(body or push_body(), now)
    return sv


# ---- plan paths and link state in rankings --------------------------------------------
def test_path_links_follow_the_plan():
    assert path_links(PLAN, "i1v1", "198.18.1.100") == ("i1v1:0-oci1lan:1", OCA_LINK)
    links = path_links(PLAN, "i1v1", "198.19.1.10")
    assert links[0] == "i1v1:0-oci1lan:1" and links[-1] == "nfxoca1:0-ocnfx:1"
    assert "i1br:1-ocixp:1" in links and not any("octrn" in lk for lk in links)  # peering, not transit


def test_rank_json_orders_isp_then_ixp_then_origin():
    sv = view()
    body = sv.rank_json("198.18.1.10", "t0001", NOW, frozenset(), sv.snapshot())
    assert [loc["name"] for loc in body["locations"]] == ["i1oca1", "nfxoca1", "origin"]
    assert body["excluded"] == []
    assert body["locations"][0]["base_url_root"] == "http://198.18.1.100:8080"
    assert body["locations"][-1]["base_url_root"] == "http://198.19.10.11:8080"


def test_down_link_on_path_excludes_only_the_locations_behind_it():
    sv = view()
    body = sv.rank_json("198.18.1.10", "t0001", NOW, frozenset({OCA_LINK}), sv.snapshot())
    assert [loc["name"] for loc in body["locations"]] == ["nfxoca1", "origin"]
    assert body["excluded"] == [{"name": "i1oca1", "tier": "embedded", "why": "no_path"}]
    other = sv.rank_json("198.18.2.10", "t0001", NOW, frozenset({OCA_LINK}), sv.snapshot())
    assert [loc["name"] for loc in other["locations"]] == ["i2oca1", "nfxoca1", "origin"]
    # the peering link down: the IXP OCA is gone for isp1, the origin (over transit) is not
    body = sv.rank_json("198.18.1.10", None, NOW, frozenset({"i1br:1-ocixp:1"}), sv.snapshot())
    assert [loc["name"] for loc in body["locations"]] == ["i1oca1", "origin"]


def test_failed_probe_excludes_at_once_and_stale_state_ages_out():
    sv = view()
    sv.ocas.apply(push_body({"i1oca1": False}), NOW + 0.25)
    body = sv.rank_json("198.18.1.10", "t0001", NOW + 0.25, frozenset(), sv.snapshot())
    assert body["excluded"] == [{"name": "i1oca1", "tier": "embedded", "why": "status:unreachable"}]
    assert sv.ocas.view(NOW + 0.25)["ocas"][0]["heartbeat_age_s"] == 0.25  # last good probe kept
    # pushes pausing (a monitor starved of CPU): the last pushed state stands (fail static)
    paused = sv.rank_json("198.18.1.10", "t0001", NOW + 0.25 + MONITOR_DEAD_S - 0.5, frozenset(), sv.snapshot())
    assert [loc["name"] for loc in paused["locations"]] == ["nfxoca1", "origin"]
    # no pushes for longer than MONITOR_DEAD_S: the monitor is dead, every OCA's heartbeat is
    # stale, the origin remains
    late = sv.rank_json("198.18.1.10", "t0001", NOW + 0.25 + MONITOR_DEAD_S + 0.5, frozenset(), sv.snapshot())
    assert [loc["name"] for loc in late["locations"]] == ["origin"]
    assert [e["why"] for e in late["excluded"]] == ["stale_heartbeat:5.8s", "stale_heartbeat:5.5s"]


def test_probe_timeouts_exclude_only_after_several_in_a_row():
    reg = OcaRegistry()
    reg.apply(push_body(), NOW)

    def push(t: float) -> str:
        body = push_body({"i1oca1": False})
        body["ocas"][0]["probe"]["error"] = TIMEOUT_ERROR
        reg.apply(body, t)
        return {s.name: s for s in reg.states()}["i1oca1"].status

    assert [push(NOW + 0.25 * i) for i in range(1, TIMEOUTS_TO_EXCLUDE + 1)] == \
        ["ok"] * (TIMEOUTS_TO_EXCLUDE - 1) + ["unreachable"]
    reg.apply(push_body(), NOW + 1)  # one good probe resets the count
    assert push(NOW + 1.25) == "ok"


def test_rank_before_any_push_and_for_unknown_viewer():
    sv = SteeringView(PLAN, ac.ANYCAST_IP)
    with pytest.raises(LookupError, match="no OCA state"):
        sv.rank_json("198.18.1.10", "t0001", NOW, frozenset(), sv.snapshot())
    sv = view()
    with pytest.raises(PlanError, match="198.18.1.99"):
        sv.rank_json("198.18.1.99", "t0001", NOW, frozenset(), sv.snapshot())


# ---- pushed OCA state -------------------------------------------------------------------
def test_registry_replaces_the_set_and_keeps_titles():
    reg = OcaRegistry()
    reg.apply(push_body(stored_titles=["t0001"], load=3), NOW)
    states = {s.name: s for s in reg.states()}
    assert states["i1oca1"].stored_titles == frozenset({"t0001"}) and states["i1oca1"].load == 1.0
    body = push_body()
    body["ocas"] = body["ocas"][:1]
    assert reg.apply(body, NOW + 1) == {"ok": True, "ocas": 1, "changed": {}, "unreachable": []}
    assert [s.name for s in reg.states()] == ["i1oca1"]


def test_registry_keeps_title_objects_and_drops_malformed_ones():
    reg = OcaRegistry()
    reg.apply(push_body(stored_titles=["t0001"], title_objects={"t0001": 12}), NOW)
    assert {s.name: dict(s.title_objects) for s in reg.states()}["i1oca1"] == {"t0001": 12}
    for bad in ({"t0001": -1}, {"t0001": 2.0}, ["t0001"], "12"):
        reg.apply(push_body(title_objects=bad), NOW + 1)
        assert all(s.title_objects is None for s in reg.states()), bad
    reg.apply(push_body(), NOW + 2)  # an OCA that does not publish counts: unknown
    assert all(s.title_objects is None for s in reg.states())


def test_rank_json_needs_the_sessions_objects_not_one_segment():
    # i1oca1 (nearest) holds 29 objects of t0001, nfxoca1 all 30 a session needs
    body = push_body(stored_titles=["t0001"], title_objects={"t0001": 29})
    body["ocas"][2]["health"]["title_objects"] = {"t0001": 30}
    sv = view(body)
    ranked = sv.rank_json("198.18.1.10", "t0001", NOW, frozenset(), sv.snapshot(), need_objects=30)
    assert [loc["name"] for loc in ranked["locations"]] == ["nfxoca1", "i1oca1", "origin"]
    assert ranked["locations"][1]["reason"]["content_miss"] and ranked["need_objects"] == 30
    # need unknown: holding any object of the title is a hit (stored_titles), nearest first
    ranked = sv.rank_json("198.18.1.10", "t0001", NOW, frozenset(), sv.snapshot())
    assert [loc["name"] for loc in ranked["locations"]] == ["i1oca1", "nfxoca1", "origin"]
    assert ranked["need_objects"] is None


def test_controller_api_rank_validates_need():
    from controller.api import controller_api
    from controller.app import ControllerState
    st = ControllerState(PLAN)
    body = push_body(title_objects={"t0001": 29})
    body["ocas"][2]["health"]["title_objects"] = {"t0001": 30}
    st.ocas_push(body, time.time())
    api = controller_api(st)
    try:
        status, ranked = api.dispatch("GET", "/rank?viewer=198.18.1.10&title=t0001&need=30", b"")
        assert status == 200 and [loc["name"] for loc in ranked["locations"]] == [
            "nfxoca1", "i1oca1", "origin"]
        for bad in ("0", "-3", "x", "1.5"):  # (a blank need= is absent: parse_qs drops it)
            for path in ("/rank", "/anycast/rank"):
                status, err = api.dispatch("GET", f"{path}?viewer=198.18.1.10&title=t0001&need={bad}", b"")
                assert status == 400 and "need must be an integer >= 1" in err["error"], (path, bad, err)
        status, err = api.dispatch("GET", "/rank?viewer=198.18.1.10&need=2&need=3", b"")
        assert status == 400 and "given 2 times" in err["error"]
    finally:
        api.httpd.server_close()


@pytest.mark.parametrize("mutate,msg", [
    (lambda b: b.pop("origin"), "origin"),
    (lambda b: b["ocas"][0].update(url="ftp://x"), r"ocas\[0\].url"),
    (lambda b: b["ocas"][1].update(tier="edge"), r"ocas\[1\].*tier"),
    (lambda b: b["ocas"][0].update(probe={}), r"ocas\[0\].probe"),
    (lambda b: b["ocas"][2].update(serves=["not-a-net"]), r"ocas\[2\].serves"),
    (lambda b: b["ocas"].append(dict(b["ocas"][0])), "duplicate"),
])
def test_bad_pushes_are_named_and_change_nothing(mutate, msg):
    reg = OcaRegistry()
    reg.apply(push_body(), NOW)
    body = push_body()
    mutate(body)
    with pytest.raises(ValueError, match=msg):
        reg.apply(body, NOW + 1)
    assert len(reg.states()) == 3 and reg.pushes == 1


def test_probe_snapshot_matches_the_push_format():
    dep = {"origin": {"name": "origin", "url": "http://198.19.10.11:8080", "tier": "origin"},
           "ocas": [{"name": "i1oca1", "tier": "embedded", "url": "http://198.18.1.100:8080/",
                     "serves": ["198.18.1.0/24"], "distance_hops": 1, "rtt_ms": 6}]}
    origin, ocas = targets(dep)
    body = snapshot(origin, ocas, [(None, "ClientConnectorError: refused", 0.4)])
    reg = OcaRegistry()
    assert reg.apply(body, NOW) == {"ok": True, "ocas": 1, "changed": {"i1oca1": [None, "unreachable"]},
                                    "unreachable": ["i1oca1"]}
    with pytest.raises(ValueError, match="deployment.ocas"):
        targets({"origin": dep["origin"], "ocas": {}})


# ---- anycast ----------------------------------------------------------------------------
def test_anycast_address_must_be_off_every_segment():
    assert ac.check_anycast_ip(PLAN, ac.ANYCAST_IP) == "198.19.254.1"
    with pytest.raises(PlanError, match="subnet of"):
        ac.check_anycast_ip(PLAN, "198.18.1.200")
    with pytest.raises(PlanError, match="outside"):
        ac.check_anycast_ip(PLAN, "192.0.2.1")


def test_punt_rules_only_on_viewer_switches_and_inside_the_cookie_space():
    rules = ac.punt_specs(PLAN, ac.ANYCAST_IP)
    assert sorted(rules) == ["oci1lan", "oci2lan", "oci3lan"]
    for sw, (syn, drop) in rules.items():
        assert syn.cookie & fw.APP_COOKIE_MASK == drop.cookie & fw.APP_COOKIE_MASK == fw.APP_COOKIE
        assert syn.actions == (("out", ac.CONTROLLER),) and ("ipv4_dst", ac.ANYCAST_IP) in syn.match
        assert dict(syn.match)["tcp_flags"] == (ac.TCP_SYN, ac.TCP_SYN | ac.TCP_ACK)  # SYN without ACK
        assert drop.actions == () and "tcp_flags" not in dict(drop.match)
        # a new SYN beats an old connection's rule; stray segments beat plain forwarding only
        assert syn.priority > ac.PRIORITY_ANYCAST_CONN > drop.priority > max(s.priority for s in SPECS[sw])


def test_conn_rules_to_embedded_oca_rewrite_both_ways():
    conn = ac.Conn("198.18.1.10", 40000)
    fwd, rev = ac.conn_rules(PLAN, SPECS, "oci1lan", conn, "198.18.1.100")
    assert dict(fwd.match) == {"eth_type": 0x800, "ip_proto": 6, "ipv4_src": "198.18.1.10",
                               "ipv4_dst": ac.ANYCAST_IP, "tcp_src": 40000, "tcp_dst": 8080}
    assert fwd.actions == (("set", "eth_dst", mac_of("i1oca1")), ("set", "ipv4_dst", "198.18.1.100"),
                           ("out", "oci1lan-3"))
    gw_mac = next(e.mac for e in PLAN.ends_of("i1br") if e.addr == "198.18.1.1")
    assert dict(rev.match)["ipv4_src"] == "198.18.1.100" and dict(rev.match)["tcp_dst"] == 40000
    assert rev.actions == (("set", "eth_src", gw_mac), ("set", "ipv4_src", ac.ANYCAST_IP),
                           ("out", "oci1lan-1"))
    assert fwd.idle_timeout_s == rev.idle_timeout_s == ac.IDLE_TIMEOUT_S
    assert fwd.cookie & fw.APP_COOKIE_MASK == fw.APP_COOKIE


def test_conn_rules_off_segment_go_through_the_gateway():
    gw_mac = next(e.mac for e in PLAN.ends_of("i1br") if e.addr == "198.18.1.1")
    fwd, rev = ac.conn_rules(PLAN, SPECS, "oci1lan", ac.Conn("198.18.1.11", 5555), "198.19.1.10")
    assert fwd.actions == (("set", "eth_dst", gw_mac), ("set", "ipv4_dst", "198.19.1.10"),
                           ("out", "oci1lan-0"))
    assert rev.actions[-1] == ("out", "oci1lan-2")  # i1v2's port


def test_anycast_steers_new_connections_away_from_a_failed_oca():
    sv = view()
    conn = ac.Conn("198.18.1.10", 40001)
    fwd, _ = sv.anycast_rules("oci1lan", conn, NOW, frozenset(), sv.snapshot(), SPECS)
    assert ("set", "ipv4_dst", "198.18.1.100") in fwd.actions
    sv.ocas.apply(push_body({"i1oca1": False}), NOW + 0.25)
    fwd, _ = sv.anycast_rules("oci1lan", ac.Conn("198.18.1.10", 40002), NOW + 0.25, frozenset(),
                              sv.snapshot(), SPECS)
    assert ("set", "ipv4_dst", "198.19.1.10") in fwd.actions
    assert [c["location"] for c in sv.anycast_view()["recent"]] == ["i1oca1", "nfxoca1"]
    # an unknown source is not steered (counted), nothing raises
    assert sv.anycast_rules("oci1lan", ac.Conn("198.18.1.99", 1), NOW, frozenset(), sv.snapshot(), SPECS) is None
    assert sv.anycast_view()["counts"]["unsteerable"] == 1


def test_choose_skips_health_misses():
    sv = view()
    sv.ocas.apply(push_body({"i1oca1": False, "nfxoca1": False}), NOW + 0.25)
    ranked = sv.ranked("198.18.1.10", None, NOW + 0.25, frozenset(), sv.snapshot())
    assert [r.name for r in ranked][0] == "origin" and ac.choose(ranked).name == "origin"


# ---- link state from port status (ControllerState, no switch needed) ----------------------
def test_link_state_from_ports_feeds_rank_and_links_view():
    from controller.app import ControllerState
    st = ControllerState(PLAN)
    sw = st.by_name["oci1lan"]
    assert st.down_links() == frozenset()  # nothing known yet: nothing is declared down
    sw.connected, sw.ports_known = True, True
    sw.port_up = {p: True for p in st.plan_ports["oci1lan"]}
    st.note_link_changes(PLAN.links_of("oci1lan"), NOW)
    assert st.down_links() == frozenset()
    sw.port_up["oci1lan-3"] = False  # the OCA's port lost carrier
    assert st.note_link_changes(PLAN.links_of("oci1lan"), NOW + 1) == [f"link {OCA_LINK} (internal) DOWN"]
    assert st.down_links() == frozenset({OCA_LINK})
    row = next(r for r in st.links_view() if r["name"] == OCA_LINK)
    assert row["up"] is False and row["changed_unix_s"] == NOW + 1
    st.ocas_push(push_body(), time.time())
    ranked = st.rank_view("198.18.1.10", None, time.time())
    assert [loc["name"] for loc in ranked["locations"]] == ["nfxoca1", "origin"]
    del sw.port_up["oci1lan-3"]  # port deleted (host gone): still down
    assert st.down_links() == frozenset({OCA_LINK})
    sw.connected = False  # a disconnected switch's ports are unknown, not down
    assert st.down_links() == frozenset()
    assert st.expected_flows("oci1lan") == len(SPECS["oci1lan"]) + 2 and st.expected_flows("ocixp") == len(SPECS["ocixp"])


def test_anycast_rank_json_offers_the_anycast_address_then_the_origin():
    from contracts.steering import Location
    sv = view()
    body = sv.anycast_rank_json("198.18.1.10", "t0001", NOW, frozenset(), sv.snapshot())
    locs = [Location.from_json(d) for d in body["locations"]]
    assert [(x.name, x.tier, x.base_url_root) for x in locs] == [
        ("anycast", "embedded", "http://198.19.254.1:8080"), ("origin", "origin", "http://198.19.10.11:8080")]
    assert locs[0].reason["now_choice"] == "i1oca1"
    assert [x.retries for x in locs] == [3, 0]  # the network re-steers: the player tries anycast again
    body = sv.anycast_rank_json("198.18.1.10", None, NOW, frozenset({OCA_LINK}), sv.snapshot())
    assert body["locations"][0]["tier"] == "ixp" and body["locations"][0]["reason"]["now_choice"] == "nfxoca1"
    with pytest.raises(LookupError, match="disabled"):
        SteeringView(PLAN, None).anycast_rank_json("198.18.1.10", None, NOW, frozenset(), sv.snapshot())


# ---- relay carrier watcher ----------------------------------------------------------------
def _newlink(name: str, flags: int, kind: int = 16) -> bytes:
    import struct
    attr = name.encode() + b"\0"
    rta = struct.pack("=HH", 4 + len(attr), 3) + attr
    rta += b"\0" * (-len(rta) % 4)
    body = struct.pack("=BxHiII", 0, 1, 7, flags, 0) + rta
    return struct.pack("=IHHII", 16 + len(body), kind, 0, 1, 0) + body


def test_parse_links_reads_carrier_and_deletion():
    from controller.linkwatch import IFF_LOWER_UP, IFF_UP, parse_links
    data = _newlink("ocrly-4", IFF_UP | IFF_LOWER_UP) + _newlink("ocrly-5", IFF_UP) + _newlink("ocrly-6", IFF_UP, kind=17)
    assert parse_links(data) == [("ocrly-4", True, False), ("ocrly-5", False, False), ("ocrly-6", False, True)]
    with pytest.raises(ValueError, match="truncated"):
        parse_links(data[:-3])


def test_relay_links_mark_a_link_down_when_a_relay_end_loses_carrier():
    from controller.app import ControllerState
    st = ControllerState(PLAN, relay_links={OCA_LINK: ("ocrly-6", "ocrly-7")})
    assert st.relay_update({"ocrly-6": True, "ocrly-7": True}, NOW) == []
    assert st.down_links() == frozenset()
    assert st.relay_update({"ocrly-6": False}, NOW + 1) == [f"link {OCA_LINK} (internal) DOWN"]
    assert st.down_links() == frozenset({OCA_LINK})
    assert st.relay_update({"ocrly-6": True}, NOW + 2) == [f"link {OCA_LINK} (internal) up"]
    with pytest.raises(ValueError, match="not in plan"):
        ControllerState(PLAN, relay_links={"nope:0-oc:1": ("a", "b")})


@pytest.mark.emulation
def test_link_watcher_sees_a_veth_peer_go_down():
    """A veth pair oc<pid>w/v in the root namespace: setting one end down drops the other's carrier."""
    import os
    import queue
    import subprocess
    from controller.linkwatch import LinkWatcher
    if os.geteuid() != 0:
        pytest.skip("needs root")
    a, b = f"oc{os.getpid()}w", f"oc{os.getpid()}v"
    subprocess.run(["ip", "link", "add", a, "type", "veth", "peer", "name", b], check=True)
    try:
        subprocess.run(["sh", "-c", f"ip link set {a} up && ip link set {b} up"], check=True)
        got: queue.Queue = queue.Queue()
        errors: list = []
        w = LinkWatcher(f"/proc/{os.getpid()}/ns/net", got.put, errors.append).start()
        assert w.ready.wait(5), errors
        first = got.get(timeout=2)
        deadline = time.monotonic() + 5
        while not first.get(a) and time.monotonic() < deadline:  # carrier may lag the admin up
            first.update(got.get(timeout=5))
        assert first[a] is True
        subprocess.run(["ip", "link", "set", b, "down"], check=True)
        seen = {}
        while seen.get(a) is not False and time.monotonic() < deadline + 5:
            seen.update(got.get(timeout=5))
        assert seen[a] is False and not errors
        w.stop()
    finally:
        subprocess.run(["ip", "link", "del", a], check=False)


def test_anycast_retries_outlast_the_controllers_detection_of_a_dead_oca():
    """Players retry the anycast address with doubling pauses for longer than this controller
    may still steer new connections to a dead OCA (a refused probe: one probe round; a timed-out
    one: until its heartbeat is stale), so a kill never sends them across transit to the origin."""
    from contracts.steering import MAX_RETRIES, retries_to_cover, retry_pause_s
    from controller.ocas import PROBE_INTERVAL_S
    from controller.steering_view import ANYCAST_RETRIES
    assert [retry_pause_s(k) for k in (1, 2, 3)] == [0.5, 1.0, 2.0]
    assert retries_to_cover(0.0) == 0 and retries_to_cover(0.5) == 1 and retries_to_cover(0.51) == 2
    waited = sum(retry_pause_s(k) for k in range(1, ANYCAST_RETRIES + 1))
    assert waited >= STALE_AFTER_S + PROBE_INTERVAL_S and ANYCAST_RETRIES <= MAX_RETRIES
    with pytest.raises(ValueError):
        retry_pause_s(0)
