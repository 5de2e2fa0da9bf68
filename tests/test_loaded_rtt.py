"""Loaded RTT: ping logs, serve windows, the per-class verdict and the run folder's annotation (pure)."""
import csv
import gzip

from emulation.loaded import inside, merge_windows, pair_rows_in, parse_ping_log, rtt_by_class
from harness import loadedrtt

LOG = """PING 198.18.1.1 (198.18.1.1) 56(84) bytes of data.
[100.0] 64 bytes from 198.18.1.1: icmp_seq=1 ttl=64 time=6.21 ms
[100.7] no answer yet for icmp_seq=2
[100.9] From 198.18.1.9 icmp_seq=3 Destination Host Unreachable
[101.2] no answer yet for icmp_seq=3
[101.3] 64 bytes from 198.18.1.1: icmp_seq=2 ttl=64 time=800.5 ms

--- 198.18.1.1 ping statistics ---
rtt min/avg/max/mdev = 6.21/403.3/800.5/397.1 ms
"""


def test_ping_log_counts_a_late_reply_once_and_a_lost_probe_as_lost():
    assert parse_ping_log(LOG) == [(100.0, 6.21), (101.3, 800.5), (101.2, None)]
    assert parse_ping_log("ping: connect: Network is unreachable\n") == []


def test_windows_merge_and_membership():
    w = merge_windows([(5, 7), (0, 2), (1, 3), (9, 8)])
    assert w == [(0, 3), (5, 7)]
    assert inside(0, w) and inside(3, w) and inside(6, w)
    assert not inside(4, w) and not inside(-1, w) and not inside(7.5, w)


def _sample(t, rtt, src="i1v1", cls="access+internal", plan=6.0, dst_addr="198.18.1.1"):
    return {"unix_s": t, "src": src, "dst": "i1r", "dst_addr": dst_addr, "classes": cls, "expected_rtt_ms": plan,
            "jitter_ms": 0.0, "rtt_ms": rtt}


def test_only_samples_inside_the_windows_count():
    samples = [_sample(1, 6.2), _sample(2, None), _sample(3, 6.4), _sample(50, 90.0)]
    rows = pair_rows_in(samples, [(0, 10)])
    assert rows == [{"src": "i1v1", "dst": "i1r", "dst_addr": "198.18.1.1", "classes": ["access", "internal"], "expected_rtt_ms": 6.0,
                     "jitter_ms": 0.0, "rtts_ms": [6.2, 6.4], "lost": 1}]
    by = rtt_by_class(rows)["access+internal"]
    assert by["ok"] and by["lost"] == 1 and by["err_p50_ms"] == 0.3


def test_two_pairs_of_the_same_hosts_on_two_segments_stay_apart():
    """i1br pings i2br over the IXP (28 ms) and over transit (60 ms): one pair each."""
    samples = [_sample(1, 28.2, src="i1br", cls="peering", plan=28.0, dst_addr="198.19.0.2"),
               _sample(1, 60.3, src="i1br", cls="transit", plan=60.0, dst_addr="198.19.2.2")]
    by = rtt_by_class(pair_rows_in(samples, [(0, 10)]))
    assert by["peering"]["ok"] and by["transit"]["ok"] and by["peering"]["err_max_ms"] == 0.2


def test_a_class_off_by_more_than_its_tolerance_fails_its_arm_only():
    sessions = [{"arm": "embedded", "started_unix": 0, "ended_unix": 10},
                {"arm": "ixp", "started_unix": 20, "ended_unix": 30},
                {"arm": "ixp", "started_unix": "", "ended_unix": ""}]  # never started
    samples = [_sample(t, 6.3) for t in range(0, 10)] + [_sample(t, 7.6) for t in range(20, 30)] \
        + [_sample(t, 30.0, src="t1r", cls="transit", plan=30.0) for t in range(0, 30)]
    rows = loadedrtt.judge(samples, sessions)
    by = {(r["arm"], r["classes"]): r for r in rows}
    assert by[("embedded", "access+internal")]["ok"] and not by[("ixp", "access+internal")]["ok"]
    assert by[("ixp", "access+internal")]["err_max_ms"] == 1.6  # > 1 ms (5% of 6 ms is less)
    assert by[("ixp", "transit")]["ok"]
    v = loadedrtt.verdict(rows)
    assert not v["ok"] and v["off"] == ["ixp/access+internal"] and v["worst_err_ms"] == 1.6
    assert "WARNING" in loadedrtt.line(v) and "ixp/access+internal" in loadedrtt.line(v)
    arms = loadedrtt.per_arm(rows)
    assert arms["embedded"] == {"loaded_rtt_err_ms": 0.3, "loaded_rtt_ok": True}
    assert arms["ixp"]["loaded_rtt_ok"] is False
    assert loadedrtt.verdict([])["ok"] is False  # no sample inside a session proves nothing


def test_annotate_adds_columns_and_keeps_the_summary_text(tmp_path):
    (tmp_path / "summary.csv").write_text("arm,startup_p50_s,note\nembedded,0.950,a\nixp,1.20,\n")
    with (tmp_path / "sessions.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["arm", "started_unix", "ended_unix"])
        w.writeheader()
        w.writerows([{"arm": "embedded", "started_unix": 0, "ended_unix": 10},
                     {"arm": "ixp", "started_unix": 20, "ended_unix": 30}])
    loadedrtt.write_samples(tmp_path, [_sample(t, 6.3) for t in range(0, 10)]
                            + [_sample(t, None if t % 2 else 9.0) for t in range(20, 30)])
    with gzip.open(tmp_path / loadedrtt.SAMPLES, "rt") as f:
        assert f.readline().strip() == ",".join(loadedrtt.COLUMNS)
    v = loadedrtt.annotate(tmp_path)
    assert v["off"] == ["ixp/access+internal"]
    lines = (tmp_path / "summary.csv").read_text().splitlines()
    assert lines[0] == "arm,startup_p50_s,note,loaded_rtt_err_ms,loaded_rtt_ok"
    assert lines[1] == "embedded,0.950,a,0.3,True" and lines[2] == "ixp,1.20,,3.0,False"
    assert loadedrtt.annotate(tmp_path) == v  # idempotent: columns replaced, not added twice
    assert (tmp_path / "summary.csv").read_text().splitlines()[0].count("loaded_rtt_ok") == 1
    assert (tmp_path / loadedrtt.SUMMARY).exists()
    assert loadedrtt.annotate(tmp_path / "nothing-here") is None
