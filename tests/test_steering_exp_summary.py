"""Pure parts of the steering scenario on small synthetic tidy tables (no root), and the policy
proxy on loopback against a stand-in controller API."""
import json

import pytest

from scenarios import steering as steering_exp
from scenarios.logs import join_misses, read_steering
from harness.rundir import write_csv


def decision(ts, first, viewer="198.18.1.10", title="t0001", overloaded="", health=""):
    return {"arm": "nearest", "ts": ts, "viewer": viewer, "account": "a", "title": title, "first": first,
            "ranked": f"{first} origin", "overloaded": overloaded, "health_missed": health,
            "content_missed": "", "policy": "nearest", "fallback": 0}


def access(ts, server, status=200, cache="hit", client="198.18.1.10", path="/v/t0001/750/2"):
    return {"arm": "nearest", "server": server, "ts": ts, "client": client, "path": path, "status": status,
            "cache": cache, "bytes": 10}


def test_read_steering_flattens_the_control_plane_log(tmp_path):
    log = tmp_path / "steering.jsonl"
    reasons = {"nfxoca1": {"policy": "load_aware", "group": 0}, "origin": {"policy": "load_aware", "group": 3},
               "i1oca1": {"policy": "load_aware", "overloaded": True, "group": 1}}
    log.write_text(json.dumps({"ts": 5.0, "viewer": "198.18.1.10", "account": "i1v1-0000", "title": "t0001",
                               "ranked": ["nfxoca1", "i1oca1", "origin"], "reasons": reasons,
                               "excluded": {"i2oca1": "status:unreachable", "i0oca1": "no_path"}}) + "\n")
    [row] = read_steering(log, "load_aware")
    assert row["first"] == "nfxoca1" and row["overloaded"] == "i1oca1" and row["health_missed"] == ""
    assert row["excluded"] == "i0oca1=no_path i2oca1=status:unreachable"
    assert row["policy"] == "load_aware" and row["fallback"] == 0


def test_join_misses_uses_the_latest_prior_decision_of_that_viewer_and_title():
    """HEAD requests (the cache warm-up) are not viewers' misses."""
    decisions = [decision(1.0, "i1oca1"), decision(3.0, "nfxoca1", overloaded="i1oca1"),
                 decision(2.0, "i1oca1", viewer="198.18.1.11"), decision(9.0, "i1oca1")]
    rows = join_misses(
        [access(2.0, "i1oca1", 503), access(4.0, "i1oca1", 503), access(4.5, "i1oca1"),
         access(0.5, "i1oca1", 503), {**access(2.5, "i1oca1", 503), "method": "HEAD"}], decisions)
    assert [(r["decision_ts"], r["ranked_first"], r["known_overloaded"]) for r in rows] == [
        (1.0, 1, 0), (3.0, 0, 1), ("", 0, 0)]


def test_summarize_counts_health_and_content_misses_and_tier_shares(tmp_path):
    chunks = [{"arm": "nearest", "bytes": 300, "tier": "embedded", "fallback": 0},
              {"arm": "nearest", "bytes": 100, "tier": "ixp", "fallback": 1},
              {"arm": "load_aware", "bytes": 100, "tier": "embedded", "fallback": 0},
              {"arm": "load_aware", "bytes": 100, "tier": "ixp", "fallback": 0}]
    sessions = [{"arm": a, "status": "ok", "qoe_lin": q, "rebuffer_ratio": rr, "mean_kbps": k, "startup_s": 1.0}
                for a, q, rr, k in (("nearest", 10, 0.1, 1000), ("nearest", 20, 0.0, 3000),
                                    ("load_aware", 40, 0.0, 4000))]
    acc = [access(1, "i1oca1", 503), access(2, "i1oca1", 200, "fill"), access(3, "i1oca1"),
           access(4, "origin", 200, "none"), {**access(1, "nfxoca1"), "arm": "load_aware"}]
    write_csv(tmp_path / "chunks.csv", chunks)
    write_csv(tmp_path / "sessions.csv", sessions)
    write_csv(tmp_path / "access.csv", acc)
    write_csv(tmp_path / "steering.csv", [decision(0.5, "i1oca1"), {**decision(0.5, "nfxoca1"), "arm": "load_aware"}])
    write_csv(tmp_path / "misses.csv", join_misses(acc, [decision(0.5, "i1oca1")]))
    near, aware = steering_exp.summarize(tmp_path)
    assert near["arm"] == "nearest" and aware["arm"] == "load_aware"
    assert near["health_misses"] == 1 and near["oca_requests"] == 3 and near["health_miss_ratio"] == 0.3333
    assert near["content_misses"] == 1 and near["health_misses_ranked_first"] == 1
    assert near["embedded_share"] == 0.75 and near["ixp_share"] == 0.25 and near["fallback_chunks"] == 1
    assert near["qoe_lin"] == 15.0 and near["rebuffer_ratio"] == 0.05 and near["first_embedded_share"] == 1.0
    assert aware["health_misses"] == 0 and aware["first_embedded_share"] == 0.0 and aware["mean_kbps"] == 4000.0
    assert (tmp_path / "steering.png").stat().st_size > 0
    assert "health_misses" in steering_exp.format_table([near, aware])


def test_control_plane_rejects_a_policy_without_the_controller(tmp_path, capsys):
    from appliances import control
    with pytest.raises(SystemExit):
        control.main(["--listen", "127.0.0.1:0", "--deployment", "x", "--token-key", "y",
                      "--steering-policy", "fastest"])
    assert "invalid choice: 'fastest'" in capsys.readouterr().err
    assert control.main(["--listen", "127.0.0.1:0", "--deployment", "x", "--token-key", "y",
                         "--steering-policy", "load_aware"]) == 2
    assert "--steering-policy needs --steering" in capsys.readouterr().err
