"""Reliability and security pass/fail checks at moderate size, against real origin and OCA
subprocesses on 127.0.0.1 (the same code `ocalab bench reliability` runs, smaller counts)."""
import time

import pytest

from appliances import tokens
from appliances.content import Catalog
from bench import reliability_checks as checks
from bench import reliability_commands as cmds
from bench import reliability_fuzz as rf
from bench import reliability_load as load
from bench import reliability_report as report
from bench import reliability_spec as spec
from bench.reliability_servers import Integrity, Servers

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    out = tmp_path_factory.mktemp("reliability")
    servers, work = Servers(out), out / "work"
    integ = Integrity(Catalog(spec.SPEC))
    timeouts = ["--header-timeout-s", str(spec.HEADER_TIMEOUT_S),
                "--idle-timeout-s", str(spec.IDLE_TIMEOUT_S)]
    try:
        origin = servers.start("origin", "appliances.origin")
        ports = {"origin": origin,
                 "disk": servers.oca("oca-disk", origin, work / "disk", "--miss", "proxy",
                                     "--mem-mb", "0", "--access-log",
                                     str(servers.logs / "oca-disk-access.jsonl"), *timeouts),
                 "mem": servers.oca("oca-mem", origin, work / "mem", "--miss", "proxy"),
                 "load": servers.oca("oca-load", origin, work / "load", "--miss", "proxy",
                                     "--mem-mb", "0", "--max-conns", "24", *spec.LOAD_FLAGS),
                 "load-fcfs": servers.oca("oca-load-fcfs", origin, work / "load-fcfs", "--miss",
                                          "proxy", "--mem-mb", "0", "--max-conns", "24",
                                          "--admission", "first-come", *spec.LOAD_FLAGS)}
        ports["origin-fuzz"] = servers.start("origin-fuzz", "appliances.origin", *timeouts)
        ports["cmd"] = servers.oca("oca-cmd", origin, work / "cmd", "--miss", "redirect")
        key = tokens.write_key(work / "token.key")
        ports["tok"] = servers.oca("oca-tok", origin, work / "tok", "--miss", "proxy",
                                   "--token-key", str(work / "token.key"), *timeouts)
        canary = b"CANARY-reliability-test-7f3a"
        (work / "canary.txt").write_bytes(canary)
        (work / "disk" / "canary.txt").write_bytes(canary)
        yield {"servers": servers, "ports": ports, "integ": integ, "key": key, "work": work,
               "canaries": (canary, b"root:x:0:0:")}
    finally:
        codes = servers.stop()
    assert all(c == 0 for c in codes.values()), codes
    assert not any(servers.tracebacks().values()), servers.tracebacks()
    assert integ.mismatches == 0


def test_conformance_table_against_origin_and_oca(env):
    p = env["ports"]
    res = checks.check_conformance({"origin": p["origin"], "oca-disk": p["disk"],
                                 "oca-mem": p["mem"]}, env["integ"])
    assert res["cases"] >= 40 and res["failures"] == [] and res["ok"]
    assert res["passed"] == res["cases"] * 3


def test_fuzz_2000_hostile_requests(env):
    res = checks.check_fuzz(env["ports"]["disk"], env["servers"], "oca-disk", 2000, 11,
                         env["integ"], env["canaries"])
    assert res["requests"] == 2000
    counts = ("hangs", "over_timeout", "status_500", "junk_responses", "echoes", "tracebacks",
              "canary_leaks", "smuggled")
    assert {k: res[k] for k in counts} == dict.fromkeys(counts, 0), res
    assert res["alive_after"] and res["correct_bytes_after"]
    assert res["access_log"]["max_line_bytes"] <= 1024
    assert set(res["by_category"]) == set(rf.GENERATORS)


def test_path_traversal_shapes_never_reach_files(env):
    res = checks.check_traversal(env["ports"]["disk"], env["canaries"])
    assert res["ok"] and res["requests"] >= 30, res["served_outside_store"]
    refused = {r["target"]: r["status"] for r in res["rows"]
               if not r["target"].startswith("/v/t0000/235/0?")}
    assert set(refused.values()) <= {"400", "404"}, refused


def test_fuzz_origin_and_token_oca(env):
    def sign(path):
        return tokens.sign(env["key"], "/".join(path.split("/")[:3]) + "/", "127.0.0.0/8",
                           int(time.time()) + 600)
    for name, port, signer in (("origin-fuzz", env["ports"]["origin-fuzz"], None),
                               ("oca-tok", env["ports"]["tok"], sign)):
        res = checks.check_fuzz(port, env["servers"], name, 400, 12, env["integ"], env["canaries"],
                             signer)
        assert res["ok"] and res["requests"] == 400, (name, res)


def test_slowloris_connections_are_cut(env):
    res = load.check_slowloris(env["ports"]["disk"], 16, env["integ"], 3, slack_s=2.5)
    assert res["not_cut"] == 0, res
    assert res["outcomes"] == {"head:408": 4, "late:408": 4, "body:408": 4, "silent:None": 4}
    assert set(res["legit_during"]["status"]) == {"200"}


def test_connection_cap_refuses_with_503_retry_after(env):
    res = load.check_conn_cap(env["ports"]["load"], 24, 6)
    assert (res["refused_503"], res["refused_with_retry_after"], res["held_open"]) == (6, 6, 24)


def test_overload_gets_503_with_retry_after(env):
    res = load.check_overload(env["ports"]["load"], env["integ"], 12, 3.0, 5, spec.LOAD_LIMITS)
    assert res["functional_ok"], res
    assert res["greedy"].get("503", 0) > 0 and not res["greedy"].get("503_without_retry_after")
    assert set(res["legit_status"]) <= {"200", "503"}  # served or refused, never an error
    # fair admission: each legit client gets >= 80% of its fair share (measured: 100%)
    assert res["fair_ok"] and res["fairness"]["min_ratio"] >= spec.FAIR_SHARE_MIN, res["fairness"]
    assert res["fairness"]["clients"] == 5 and len(res["fairness"]["legit"]) == 4


def test_overload_fairness_check_fails_with_first_come_admission(env):
    """The old admission (whoever asks while below the limits) lets the greedy client take
    every slot as it frees: the fair-share check must report it (measured min ratio 0.07-0.33
    over 9 runs). Up to 3 runs: on a machine busy enough that the generator cannot saturate
    the OCA there is no overload to be unfair in (the pure test in test_admission.py shows
    first-come starving legit clients deterministically)."""
    for _ in range(3):
        res = load.check_overload(env["ports"]["load-fcfs"], env["integ"], 12, 3.0, 5,
                                  spec.LOAD_LIMITS)
        assert res["functional_ok"], res  # 503s carry Retry-After, bytes right: only unfair
        if not res["fair_ok"]:
            break
    assert not res["fair_ok"] and not res["ok"], (res["fairness"], res["greedy"])
    assert res["fairness"]["min_ratio"] < spec.FAIR_SHARE_MIN


def test_fair_shares_definition():
    greedy = {"200": 60, "503": 1000}
    legit = [{"200": 10, "503": 0}, {"200": 30, "503": 50}, {"200": 16, "503": 84}]
    res = load.fair_shares(legit, greedy)  # C = 116 successes, N = 4: 29 each
    assert (res["clients"], res["successes_total"], res["per_client_share"]) == (4, 116, 29.0)
    assert [r["fair_share"] for r in res["legit"]] == [10, 29.0, 29.0]  # min(demand, C / N)
    assert [r["ratio"] for r in res["legit"]] == [1.0, 1.034, 0.552]
    assert res["min_ratio"] == 0.552 and not res["fair_ok"]
    legit[2] = {"200": 24, "503": 76}  # 24 / 29 = 0.83 >= 0.8
    assert load.fair_shares(legit, {"200": 52})["fair_ok"]
    assert not load.fair_shares([], greedy)["fair_ok"]


def test_forged_replayed_expired_unsigned_commands_are_refused(env):
    res = cmds.check_commands(env["ports"]["cmd"], env["servers"].command_key,
                              env["ports"]["origin"])
    assert res["fill_commands_accepted_bad"] == 0, res["status"]
    assert {k: res["status"][k] for k in cmds.BAD_KINDS} == dict.fromkeys(cmds.BAD_KINDS, 403)
    assert res["valid_accepted"] and res["plans_run"] == 1 and res["read_only_open"]
    assert res["refusals_counted"] == {"commands_refused_unsigned": 1,
                                       "commands_refused_malformed": 1,
                                       "commands_refused_forged": 3,
                                       "commands_refused_expired": 2,
                                       "commands_refused_replayed": 1}
    assert res["ok"]


def test_token_matrix_accepts_no_attack(env):
    res = checks.check_tokens(env["ports"]["tok"], env["key"], 150, 3000, 9, env["integ"])
    assert res["matrix_wrong"] == [] and res["matrix_accepted"] == 0
    assert res["socket_mutations_accepted"] == 0 and res["pure_mutations_accepted"] == 0
    assert res["socket_mutations"] > 100 and res["pure_mutations"] > 2000


def test_sigkill_during_fill_never_serves_partial(env):
    res = load.check_kill_during_fill(env["servers"], env["ports"]["origin"], env["work"], 2,
                                     4, env["integ"])
    assert res["ok"] and res["partial_served_total"] == 0, res["rows"]


def test_report_files_and_summary(tmp_path):
    fuzz = {"ok": True, "server": "oca-x", "requests": 1, "hangs": 0, "over_timeout": 0,
            "late_s": 1, "status_500": 0, "echoes": 0, "tracebacks": 0, "canary_leaks": 0,
            "smuggled": 0, "alive_after": True, "correct_bytes_after": True, "max_seconds": 0.1,
            "by_category": {"x": {}}, "rss_kib_before": 1, "rss_kib_after": 2}
    fake = {"quick": True, "seed": 1, "duration_s": 1.0, "ok": False,
            "conformance": {"ok": True, "passed": 1, "checks": 1, "cases": 1, "targets": ["o"],
                            "rows": [{"case": "c", "method": "GET", "request": {"Range": "a|b"},
                                      "expect": 200, "o": 200}]},
            "fuzz": fuzz, "fuzz_origin": fuzz, "fuzz_oca_tok": fuzz,
            "traversal": {"ok": True, "requests": 1, "served_outside_store": [],
                          "rows": [{"target": "/v/../x", "status": "400", "leak": False}]},
            "atheris": {"skipped": "not installed", "ok": True},
            "slowloris": {"ok": False, "connections": 1, "cut_p50_s": 2, "cut_max_s": 2,
                          "header_timeout_s": 2, "not_cut": 1, "legit_baseline": {"p99_ms": 1},
                          "legit_during": {"p99_ms": 2}},
            "conn_cap": {"ok": True, "opened": 2, "held_open": 1, "refused_503": 1},
            "overload": {"ok": True, "max_streams": 1, "egress_limit_mbps": 1, "greedy": {},
                         "legit_status": {}, "legit_p99_ms": 1,
                         "baseline_p99_ms": 1, "p99_bound_ms": 1000},
            "tokens": {"ok": True, "matrix_accepted": 0, "matrix_attacks": 1, "matrix": [],
                       "socket_mutations_accepted": 0, "socket_mutations": 1,
                       "pure_mutations_accepted": 0, "pure_mutations": 1},
            "kill_during_fill": {"ok": True, "trials": 0, "kills_mid_object": 0,
                                 "partial_served_total": 0, "rows": []},
            "integrity": {"ok": True, "responses_verified": 1, "bytes_verified": 1,
                          "mismatches": 0},
            "servers": {"ok": True, "exit_codes": {}, "stderr_tracebacks": {}},
            "covered_by_tests": {"property tests": "tests/test_parsers_fuzz.py"}}
    report.write_report(tmp_path, fake)
    md = (tmp_path / "reliability.md").read_text()
    assert "Overall: **FAIL**" in md and "| slowloris | FAIL |" in md and "a\\|b" in md
    assert "| fuzzing oca-x | pass |" in md and (tmp_path / "reliability.json").exists()
    assert "- property tests: `tests/test_parsers_fuzz.py`" in md
    assert "fixed" not in md.lower()  # history lives in results/README, not in the report
