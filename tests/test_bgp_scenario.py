"""Pure parts of the bgp scenario (no root): reading `ss -ti` and FRR's counters, the byte
deltas across phases, and summarize() on small synthetic tables."""
from harness.rundir import write_csv
from scenarios import bgp as sc

SS = """0      0      198.19.0.1:179 198.19.0.2:40123
\t cubic wscale:7,7 rto:204 bytes_sent:90 bytes_acked:91 bytes_received:1234 segs_out:9
0      0      198.18.1.1:43210 198.18.1.100:179
\t cubic wscale:7,7 rto:204 bytes_sent:19 bytes_acked:20 segs_out:2
"""


def test_parse_ss_reads_bytes_received_per_socket():
    assert sc.parse_ss(SS) == {("198.19.0.1:179", "198.19.0.2:40123"): 1234,
                               ("198.18.1.1:43210", "198.18.1.100:179"): 0}
    assert sc.parse_ss("") == {}


def test_received_delta_counts_growth_new_sockets_whole_and_closed_ones_not():
    a, b, c = ("x:179", "y:1"), ("x:179", "z:2"), ("x:3", "w:179")
    before = {a: 100, b: 50}
    after = {a: 160, c: 40}  # b closed (a link went down), c opened (it came back)
    assert sc.received_delta(before, after) == 60 + 40
    # a socket whose count went down is a new one on the same ports: all of it counts
    assert sc.received_delta({a: 100}, {a: 30}) == 30


def test_frr_counts_sum_over_neighbors():
    js = {"198.19.0.2": {"messageStats": {"totalRecv": 40, "updatesRecv": 3}},
          "198.19.2.254": {"messageStats": {"totalRecv": 10, "updatesRecv": 1}}}
    assert sc.frr_counts(js) == {"messages": 50, "updates": 4}
    assert sc.frr_counts({}) == {"messages": 0, "updates": 0}


def test_summarize_one_row_per_phase(tmp_path):
    events = [{"event": e, "t_unix": 100.0 + i, "bgp_converged_s": 2.5 + i, "steering_s": 3.0 + i}
              for i, e in enumerate(sc.EVENTS)]
    traffic = [{"phase": p, "speaker": s, "t_start": 0, "t_end": 4, "duration_s": 4.0,
                "bytes_received": 100 * (i + 1), "frr_messages_received": 5, "frr_updates_received": i}
               for i, p in enumerate(sc.PHASES) for s in ("i1br", "i1oca1")]
    write_csv(tmp_path / "events.csv", events)
    write_csv(tmp_path / "bgp_traffic.csv", traffic)
    rows = sc.summarize(tmp_path)
    assert [r["phase"] for r in rows] == list(sc.PHASES)
    steady, down = rows[0], rows[1]
    assert steady["bgp_converged_s"] is None and steady["bgp_bytes"] == 200 and steady["bgp_bytes_per_s"] == 50.0
    assert (down["bgp_converged_s"], down["steering_s"], down["bgp_bytes"], down["frr_messages"],
            down["frr_updates"]) == (2.5, 3.0, 400, 10, 2)
    assert (tmp_path / "summary.csv").exists()
    assert "bgp_converged_s" in sc.format_table(rows).splitlines()[0]


def test_run_forces_bgp_routing(monkeypatch):
    import argparse
    seen = {}
    monkeypatch.setattr("harness.runner.run", lambda a, s: seen.setdefault("routing", a.routing) and 0)
    a = argparse.Namespace(routing="static")
    sc.run(a)
    assert seen["routing"] == "bgp" and a.routing == "static"  # the caller's args are untouched
