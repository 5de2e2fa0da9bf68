"""Pure parts of the experiment layer: parsers, byte accounting by class, deployment, run folders."""
import json

import pytest

from emulation import probes as measure
from scenarios.traffic import bytes_by_class
from harness.rundir import new_run_dir, write_manifest
from harness.services import ServiceOptions, deployment, ocas_for_arm
from topologies.catalog import metro

TRACEROUTE = """traceroute to 198.19.10.11 (198.19.10.11), 16 hops max, 60 byte packets
 1  198.18.1.1  8.512 ms
 2  198.19.2.254  38.400 ms
 3  *
 4  198.19.10.11  98.770 ms
"""


def test_parse_traceroute_keeps_silent_hops():
    assert measure.parse_traceroute(TRACEROUTE) == ["198.18.1.1", "198.19.2.254", "*", "198.19.10.11"]


def test_bytes_by_class_counts_interdomain_bytes_once_at_the_isp_border():
    plan = metro()
    rows = [{"link": "a", "cls": "transit", "node": "i1br", "to_node_bytes": 100, "from_node_bytes": 5},
            {"link": "b", "cls": "transit", "node": "trr", "to_node_bytes": 105, "from_node_bytes": 100},
            {"link": "c", "cls": "peering", "node": "nfxr", "to_node_bytes": 7, "from_node_bytes": 70},
            {"link": "d", "cls": "peering", "node": "i2br", "to_node_bytes": 70, "from_node_bytes": 7},
            {"link": "e", "cls": "access", "node": "i1v1", "to_node_bytes": 50, "from_node_bytes": 1}]
    assert bytes_by_class(rows, plan) == {"transit": 105, "peering": 77, "access": 51}


@pytest.mark.parametrize("arm,tiers", [("origin", set()), ("ixp", {"ixp"}), ("embedded", {"ixp", "embedded"})])
def test_arms_select_oca_tiers(arm, tiers):
    assert {n.tier for n in ocas_for_arm(metro(), arm)} == tiers


def test_deployment_from_plan_has_hops_rtt_and_prefixes():
    dep = deployment(metro(), ServiceOptions(arm="embedded"))
    by = {o["name"]: o for o in dep["ocas"]}
    assert by["i1oca1"]["serves"] == ["198.18.1.0/24"] and by["i1oca1"]["distance_hops"] == 1
    assert by["i1oca1"]["rtt_ms"] == 6.2  # 2 x (3 ms access + 0.1 ms OCA LAN port)
    assert by["nfxoca1"]["distance_hops"] == 3 and len(by["nfxoca1"]["serves"]) == 3
    assert dep["origin"]["url"] == "http://198.19.10.11:8080"


def test_bad_arm_is_rejected():
    with pytest.raises(ValueError, match="arm"):
        ServiceOptions(arm="edge")


def test_miss_modes_default_content_miss_proxy_accepted_unknown_rejected():
    assert ServiceOptions().miss == "content_miss"  # Open Connect's serve path is the default
    assert ServiceOptions(miss="proxy").miss == "proxy"
    with pytest.raises(ValueError, match="miss"):
        ServiceOptions(miss="pull")


def test_run_dirs_never_collide(tmp_path):
    a, b = new_run_dir("x", tmp_path), new_run_dir("x", tmp_path)
    assert a != b and a.exists() and b.exists()
    write_manifest(a, scenario="x", seed=3)
    m = json.loads((a / "manifest.json").read_text())
    assert m["seed"] == 3 and "commit" in m["git"] and m["versions"]["python"]


def test_failed_sessions_are_an_outcome_but_a_crashed_player_stops_the_run(tmp_path):
    import subprocess
    import sys
    from appliances.player import SESSIONS_FAILED
    from harness.services import Services
    from emulation.linkemu import EmulationError
    svc = Services.__new__(Services)  # wait_players needs only the log folder
    svc.logs = tmp_path

    def players(*codes):
        return [subprocess.Popen([sys.executable, "-c", f"import sys; sys.exit({c})"]) for c in codes]
    assert svc.wait_players(players(0, SESSIONS_FAILED), 30) == [0, SESSIONS_FAILED]
    with pytest.raises(EmulationError, match=r"players exited with \[1\]"):
        svc.wait_players(players(0, 1), 30)  # 1: a Python traceback, not a session outcome


def test_main_server_breaks_ties_by_tier_then_name_not_by_log_order():
    from scenarios.placement import main_server
    tiers = {"i1oca1": "embedded", "nfxoca1": "ixp"}
    chunks = [{"server": s} for s in ["nfxoca1", "i1oca1"] * 3]
    assert main_server(chunks, tiers) == main_server(chunks[::-1], tiers) == "i1oca1"
    assert main_server(chunks + [{"server": "nfxoca1"}], tiers) == "nfxoca1"  # a count decides first
    assert main_server([{"server": "origin"}, {"server": "nfxoca1"}], tiers) == "nfxoca1"


def test_compare_arms_puts_doan_beside_embedded_vs_ixp_only():
    from scenarios.placement import DOAN, compare_arms
    by = {"origin": {"hops": 4, "connect_ms": 100.0, "chunk_mbps": 10.0},
          "ixp": {"hops": 3, "connect_ms": 28.0, "chunk_mbps": 20.0},
          "embedded": {"hops": 1, "connect_ms": 8.0, "chunk_mbps": 40.0}}
    lines = compare_arms(by)
    assert [ln.split(":")[0] for ln in lines] == ["embedded vs ixp", "embedded vs origin", "ixp vs origin"]
    assert "path 67% shorter (Doan et al.: 40-50%)" in lines[0] and "x2.0 (Doan et al.: x3)" in lines[0]
    assert f"{DOAN['connect_time_reduction_pct']}%" in lines[0] and "Doan" not in lines[1] + lines[2]
    assert compare_arms({"embedded": by["embedded"], "ixp": {**by["ixp"], "chunk_mbps": ""}}) == []


def test_fill_mode_and_capacity_rules_are_checked_before_anything_starts():
    assert ServiceOptions().fill == "none"
    with pytest.raises(ValueError, match="fill"):
        ServiceOptions(fill="nightly")
    with pytest.raises(ValueError, match="stage_tiers"):
        ServiceOptions(stage_tiers=("edge",))
    with pytest.raises(ValueError, match="embedded_capacity"):
        ServiceOptions(capacity_rules={"embedded": "head:1.5"})
