"""Fair admission under load (appliances.admission): the pure decision and its state, driven
with an injected clock; no sockets."""
import pytest

from appliances.admission import Admission, EgressMeter, Limits, Usage, fair_decision

MB = 1_000_000


def test_within_share_admitted_over_share_refused_when_others_need_the_room():
    lim = Limits(max_streams=8, egress_mbps=None)
    idle = [Usage(0, 0.0)] * 4  # 4 other recent clients holding nothing: share 8 // 5 = 1
    assert fair_decision(Usage(0, 0.0), idle, Usage(3, 0.0), lim, 1.0) == "ok"
    # a client holding 3 streams (over its share of 1) may take a 4th: 3 + 1 + 4 unused <= 8
    assert fair_decision(Usage(3, 0.0), idle, Usage(3, 0.0), lim, 1.0) == "ok"
    # but not a 5th: the 4 slots the others may claim stay free
    assert fair_decision(Usage(4, 0.0), idle, Usage(4, 0.0), lim, 1.0) == "over_share"
    # others holding their share claim nothing more: the greedy client may use the rest
    busy = [Usage(1, 0.0)] * 4
    assert fair_decision(Usage(3, 0.0), busy, Usage(7, 0.0), lim, 1.0) == "ok"
    assert fair_decision(Usage(0, 0.0), busy, Usage(8, 0.0), lim, 1.0) == "at_capacity"


def test_alone_a_client_gets_everything_and_a_big_object_once():
    assert fair_decision(Usage(7, 0.0), [], Usage(7, 0.0), Limits(8, None), 1.0) == "ok"
    assert fair_decision(Usage(8, 0.0), [], Usage(8, 0.0), Limits(8, None), 1.0) == "at_capacity"
    # an object bigger than the whole egress limit is served when the OCA is idle ...
    assert fair_decision(Usage(0, 0.0), [], Usage(0, 0.0), Limits(None, 0.1), 0.45) == "ok"
    # ... and the next request waits until the window forgets it
    assert fair_decision(Usage(1, 0.45), [], Usage(1, 0.45), Limits(None, 0.1), 0.45) \
        == "at_capacity"


def test_egress_within_share_passes_a_greedy_excess_over_share_leaves_unmet_demand():
    lim = Limits(None, 400.0)  # 5 clients: 80 Mbit/s each
    legit = [Usage(0, 2.0, 2.0)] * 3
    greedy = Usage(0, 395.0, 3000.0)
    total = Usage(0, 401.0)
    # the OCA is over its limit only because of the greedy client: a legit request passes
    assert fair_decision(Usage(0, 3.0, 3.0), legit + [greedy], total, lim, 1.0) == "ok"
    # the greedy client is refused at the limit, and below it while others' demand is unmet
    assert fair_decision(greedy, legit + [Usage(0, 3.0)], total, lim, 23.0) == "at_capacity"
    refused = Usage(0, 0.0, 10.0)  # asked for 10 Mbit/s in the window, got nothing
    assert fair_decision(greedy, legit + [refused], Usage(0, 370.0), lim, 23.0) == "over_share"
    assert fair_decision(greedy, legit + [Usage(0, 0.0)], Usage(0, 370.0), lim, 23.0) == "ok"
    # everyone at its share: a real overload refuses everyone
    full = [Usage(0, 80.0, 80.0)] * 4
    assert fair_decision(Usage(0, 80.0), full, Usage(0, 400.0), lim, 1.0) == "at_capacity"


def _simulate(policy: str, ticks: int = 50) -> dict:
    """Greedy client asks 10 times per tick and holds each stream 3 ticks; two legit clients ask
    once per tick (after the greedy burst) and hold 1 tick. Successes per client."""
    adm = Admission(Limits(4, None), policy)
    running: list[tuple[int, str]] = []  # (end tick, client)
    ok = {"greedy": 0, "l1": 0, "l2": 0}
    for t in range(ticks):
        for end, c in [r for r in running if r[0] <= t]:
            running.remove((end, c))
            adm.finished(c)
        for client, tries, hold in (("greedy", 10, 3), ("l1", 1, 1), ("l2", 1, 1)):
            for _ in range(tries):
                if adm.decide(client, 1000, float(t)) == "ok":
                    adm.started(client, 1000, float(t))
                    running.append((t + hold, client))
                    ok[client] += 1
    assert adm.active_streams == len(running)
    return ok


def test_greedy_client_cannot_starve_others_first_come_can():
    fair = _simulate("fair")
    # alone at tick 0 the greedy client took all 4 slots (no stream is ever cut): newcomers wait
    # until those end (3 ticks), then every one of their requests is admitted
    assert fair["l1"] == fair["l2"] == 50 - 3
    assert fair["greedy"] >= 2 * 50 // 3  # its share of slots (1 of 4) and the free slot
    fcfs = _simulate("first-come")
    assert fcfs["l1"] + fcfs["l2"] == 0 and fcfs["greedy"] > fair["greedy"]


def test_clients_are_forgotten_when_idle_and_their_number_is_bounded():
    adm = Admission(Limits(8, 100.0), recent_s=2.0, max_clients=3)
    for i, ip in enumerate(("198.18.1.11", "198.18.1.12", "198.18.1.13")):
        assert adm.decide(ip, MB, now=i / 2) == "ok"
    assert adm.decide("198.18.1.14", MB, now=1.5) == "at_capacity"  # table full
    assert adm.clients(now=2.0) == 3  # 198.18.1.11 asked 2.0 s ago: still recent
    assert adm.decide("198.18.1.14", MB, now=2.1) == "ok"  # 198.18.1.11 idle > 2 s: forgotten
    assert adm.clients(now=2.1) == 3
    adm.started("198.18.1.14", MB, now=2.1)
    assert adm.clients(now=100.0) == 1  # still holds its stream
    adm.finished("198.18.1.14")
    assert adm.clients(now=100.0) == 0 and adm.active_streams == 0


def test_admission_validates_and_egress_meter_is_a_sliding_window():
    with pytest.raises(ValueError):
        Admission(Limits(1, None), "random")
    m = EgressMeter(window_s=1.0)
    m.add(1_000_000, now=10.0)
    assert m.mbps(10.5) == pytest.approx(8.0) and m.mbps(11.0) == 0.0
