"""Port-stats accounting: counter deltas, wrap and reset, rates, link-class tagging."""
import pytest

from controller.accounting import (COUNTER_MOD, UNSUPPORTED, Accounting, PortCounters,
                                   counter_delta, measured_end, rate_mbps)
from topologies.catalog import metro


def sample(tx, rx, txp=0, rxp=0, txd=0, rxd=0):
    return {"tx_bytes": tx, "rx_bytes": rx, "tx_packets": txp, "rx_packets": rxp,
            "tx_dropped": txd, "rx_dropped": rxd}


def test_counter_delta_ok_wrap_reset():
    assert counter_delta(100, 350) == (250, "ok")
    assert counter_delta(7, 7) == (0, "ok")
    assert counter_delta(COUNTER_MOD - 100, 50) == (150, "wrap")
    assert counter_delta(5_000_000, 1_000) == (1_000, "reset")
    with pytest.raises(ValueError, match="counter values"):
        counter_delta(-1, 5)
    with pytest.raises(ValueError):
        counter_delta(0, COUNTER_MOD)


def test_rate_mbps():
    assert rate_mbps(125_000, 1.0) == pytest.approx(1.0)
    assert rate_mbps(1_250_000, 0.5) == pytest.approx(20.0)
    assert rate_mbps(10, 0.0) is None


def test_port_counters_totals_and_rates():
    pc = PortCounters()
    pc.update(sample(1000, 500, 10, 5), t_s=10.0, wall_s=1e9)
    assert pc.totals == sample(1000, 500, 10, 5)
    assert pc.rates_mbps == {"tx": None, "rx": None}
    pc.update(sample(1000 + 250_000, 500 + 125_000, 30, 25), t_s=12.0, wall_s=1e9 + 2)
    assert pc.totals["tx_bytes"] == 251_000 and pc.totals["rx_packets"] == 25
    assert pc.rates_mbps["tx"] == pytest.approx(1.0)
    assert pc.rates_mbps["rx"] == pytest.approx(0.5)
    pc.update({"tx_bytes": 251_000, "rx_bytes": 125_500}, t_s=13.0, wall_s=1e9 + 3)  # no packets
    assert pc.totals == sample(251_000, 125_500, 30, 25)
    assert pc.rates_mbps == {"tx": 0.0, "rx": 0.0}
    assert pc.samples == 3 and pc.wall_s == 1e9 + 3


def test_port_counters_reset_and_wrap_keep_totals_growing():
    pc = PortCounters()
    pc.update(sample(COUNTER_MOD - 1000, 9_000_000), 0.0, 0.0)
    pc.update(sample(3000, 100), 1.0, 1.0)  # tx wrapped, rx reset (port re-created)
    assert pc.totals["tx_bytes"] == COUNTER_MOD - 1000 + 4000
    assert pc.totals["rx_bytes"] == 9_000_100
    assert pc.wraps == 1 and pc.resets == 1
    assert pc.rates_mbps["tx"] == pytest.approx(4000 * 8 / 1e6)


def test_unsupported_counter_is_absent_not_a_value():
    pc = PortCounters()
    pc.update({**sample(100, 100), "rx_packets": UNSUPPORTED}, 0.0, 0.0)
    pc.update({**sample(200, 300), "rx_packets": UNSUPPORTED}, 1.0, 1.0)
    assert pc.totals["rx_packets"] == 0
    assert pc.totals["rx_bytes"] == 300


def test_time_going_backwards_is_an_error():
    pc = PortCounters()
    pc.update(sample(1, 1), 5.0, 5.0)
    with pytest.raises(ValueError, match="backwards"):
        pc.update(sample(2, 2), 4.0, 4.0)


def test_links_are_tagged_with_class_and_measured_at_the_switch_port():
    plan = metro()
    acc = Accounting(plan)
    access = next(lk for lk in plan.links if lk.cls == "access")
    port = measured_end(plan, access).intf
    assert port.startswith("oci1lan-")
    assert acc.update(port, sample(0, 0), 0.0, 100.0)
    assert acc.update(port, sample(1_250_000, 250_000, 1000, 200), 1.0, 101.0)
    assert not acc.update("i1v1-0", sample(1, 1), 1.0, 101.0)  # host side: not a switch port
    rows = {r["name"]: r for r in acc.link_rows()}
    assert len(rows) == len(plan.links)
    row = rows[access.name]
    assert row["cls"] == "access" and row["switch"] == "oci1lan" and row["port"] == port
    assert row["tx_bytes"] == 1_250_000 and row["rx_packets"] == 200
    assert row["tx_mbps"] == pytest.approx(10.0) and row["rate_mbps"] == pytest.approx(10.0)
    assert row["updated_unix_s"] == 101.0
    untouched = next(r for r in rows.values() if r["name"] != access.name)
    assert untouched["tx_bytes"] is None and untouched["rate_mbps"] is None
    classes = acc.class_rows()
    assert set(classes) == {lk.cls for lk in plan.links}
    assert classes["access"]["tx_bytes"] == 1_250_000
    assert classes["access"]["rate_mbps"] == pytest.approx(10.0)
    assert classes["peering"]["tx_bytes"] == 0
    assert sum(c["links"] for c in classes.values()) == len(plan.links)
