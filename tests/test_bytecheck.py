"""Independent byte accounting (issue 16 item 3), pure: relay stats as link rows, the per-class
table of kernel, relay and log bytes, its gaps and the placement headline."""
from __future__ import annotations

from emulation.probes import kernel_read_point, relay_rows
from scenarios.bytecheck import COLUMNS, MIN_BYTES, byte_rows, gap_pct, headline, relay_delta
from scenarios.placement import byte_lines
from topologies.catalog import metro
from topologies.routes import l3_end


def line(bytes_in=0, fwd=0, sport_new=0, tcp=0, lost=0) -> dict:
    return {"bytes_in": bytes_in, "bytes_forwarded": fwd, "sport_new_payload_bytes": sport_new,
            "tcp_payload_bytes": tcp, "holes_forgotten": lost, "flows_evicted": 0}


def test_relay_rows_take_each_direction_where_the_kernel_counts_it():
    """The switch end (b) is where link_counters reads: b->a leaves it (frames the relay read),
    a->b arrives there (frames the relay sent); to_node is toward the L3 end a."""
    plan = metro()
    lk = next(lk for lk in plan.links if lk.cls == "transit" and lk.a.node == "i1br")
    assert kernel_read_point(plan, lk) == ("b", "i1br") and l3_end(plan)[lk.name] == "i1br"
    st = {"pid": 7, "ab": line(1000, 990, 5, 6), "ba": line(2000, 1990, 700, 800, lost=2)}
    row = relay_rows(plan, {lk.name: st})[lk.name]
    assert row == {"cls": "transit", "node": "i1br", "relay_pid": 7,
                   "to_node_bytes": 2000, "from_node_bytes": 990,
                   "to_node_payload_bytes": 700, "from_node_payload_bytes": 5,
                   "to_node_tcp_payload_bytes": 800, "from_node_tcp_payload_bytes": 6,
                   "lost_track_count": 2}


def test_relay_delta_leaves_out_a_restarted_relay():
    before = {"x": {"cls": "transit", "node": "i1br", "relay_pid": 1, "to_node_bytes": 10},
              "y": {"cls": "transit", "node": "i2br", "relay_pid": 2, "to_node_bytes": 10}}
    after = {"x": {"cls": "transit", "node": "i1br", "relay_pid": 1, "to_node_bytes": 25},
             "y": {"cls": "transit", "node": "i2br", "relay_pid": 3, "to_node_bytes": 4}}
    rows, restarted = relay_delta(before, after)
    assert restarted == ["y"] and rows == [{"link": "x", "cls": "transit", "node": "i1br", "to_node_bytes": 15}]


def _rows(plan, scale: dict[str, tuple[int, int, int, int]]) -> tuple[list[dict], list[dict]]:
    """Kernel and relay delta rows: per class (kernel wire, relay wire, relay payload, tcp payload)
    on the class's first border-counted link, zeros elsewhere."""
    kernel, relay, done = [], [], set()
    for lk in plan.links:
        node = kernel_read_point(plan, lk)[1]
        k, w, p, t = scale.get(lk.cls, (0, 0, 0, 0)) if lk.cls not in done and \
            (lk.cls not in ("transit", "peering") or plan.node(node).role == "border") else (0, 0, 0, 0)
        if k:
            done.add(lk.cls)
        kernel.append({"link": lk.name, "cls": lk.cls, "node": node, "to_node_bytes": k, "from_node_bytes": 0})
        relay.append({"link": lk.name, "cls": lk.cls, "node": node, "to_node_bytes": w, "from_node_bytes": 0,
                      "to_node_payload_bytes": p, "from_node_payload_bytes": 0,
                      "to_node_tcp_payload_bytes": t, "from_node_tcp_payload_bytes": 0})
    return kernel, relay


def test_byte_rows_put_the_sources_side_by_side():
    plan = metro()
    viewer = plan.primary_ip("i1v1")
    access = [{"server": "origin", "client": viewer, "bytes": 50_000_000}]
    kernel, relay = _rows(plan, {"transit": (54_000_000, 54_000_540, 50_400_000, 51_000_000),
                                 "access": (500, 500, 0, 0)})
    rows = {r["cls"]: r for r in byte_rows("origin", kernel, relay, access, plan)}
    tr = rows["transit"]
    assert list(tr) == list(COLUMNS) and tr["log_payload_bytes"] == 50_000_000
    assert tr["gap_wire_pct"] == 0.001 and tr["gap_payload_pct"] == 0.8
    assert rows["access"]["gap_wire_pct"] == "" and rows["peering"]["gap_payload_pct"] == ""  # under MIN_BYTES
    assert rows["access"]["log_payload_bytes"] == 50_000_000 and rows["access"]["gap_payload_pct"] == -100.0
    assert headline(list(rows.values())) == {"gap_wire_pct": 0.001, "gap_payload_pct": 0.8}


def test_relay_figures_empty_for_a_class_with_an_unrelayed_link():
    plan = metro()
    kernel, relay = _rows(plan, {"transit": (2 * MIN_BYTES, 2 * MIN_BYTES, 0, 0)})
    border_transit = [r["link"] for r in relay if r["cls"] == "transit" and r["node"] == "i2br"]
    relay = [r for r in relay if r["link"] not in border_transit]
    rows = {r["cls"]: r for r in byte_rows("ixp", kernel, relay, [], plan)}
    assert rows["transit"]["relay_wire_bytes"] == "" and rows["transit"]["gap_wire_pct"] == ""
    assert rows["peering"]["relay_wire_bytes"] == 0
    assert {r["relay_wire_bytes"] for r in byte_rows("ixp", kernel, [], [], plan)} == {""}  # no relays (netem)


def test_gap_pct_and_headline_lines():
    assert gap_pct(101, 100) == "" and gap_pct(None, 10 * MIN_BYTES) == ""
    assert gap_pct(0, MIN_BYTES) == -100.0
    lines = byte_lines([{"relay_vs_kernel_wire_pct": 0.002, "relay_vs_log_payload_pct": -0.31,
                         "ctl_vs_kernel_pct": 0.004},
                        {"relay_vs_kernel_wire_pct": "", "relay_vs_log_payload_pct": 0.5, "ctl_vs_kernel_pct": ""}])
    assert "within 0.002% of kernel interface counters" in lines[0] and "within 0.500% of logged" in lines[0]
    assert lines[1].endswith("(mapping check, same counter source)") and "0.004%" in lines[1]
    assert byte_lines([{"ctl_vs_kernel_pct": ""}]) == []
