"""`ocalab run chaos --quick` end to end on the emulated metro (root), run once for the module:
every fault kind applied and undone, no corrupted byte, no started session lost to the
control-plane kill, a recovery time for every fault, no stale flow after the controller's
restart, and the summary rebuilt by `ocalab report`."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from conftest import emulation_unavailable

pytestmark = pytest.mark.emulation
SEED = 3


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    reason = emulation_unavailable()
    if reason:
        pytest.skip(reason)
    from ocalab.cli import main
    out = tmp_path_factory.mktemp("chaos")
    assert main(["run", "chaos", "--quick", "--seed", str(SEED), "--out", str(out)]) == 0
    (d,) = list(out.glob("chaos-*"))
    return d


def test_every_fault_kind_applied_and_undone(run_dir):
    from scenarios.chaos_plan import KINDS, schedule
    from topologies.catalog import metro
    events = pd.read_csv(run_dir / "events.csv")
    assert set(events["kind"]) == set(KINDS)
    assert events["restored_unix"].notna().all()
    assert (events["start_unix"] < events["applied_unix"]).all()
    assert (events["applied_unix"] <= events["end_unix"]).all()
    assert (events["end_unix"] <= events["restored_unix"]).all()
    # the same seed gives the same schedule, and the manifest holds it
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["schedule"] == [e.to_json() for e in schedule(metro(), SEED, 115.0, True)]
    assert list(events["kind"]) == [e["kind"] for e in manifest["schedule"]]


def test_verdict_and_recovery(run_dir):
    from scenarios.chaos import verdict
    summary = pd.read_csv(run_dir / "summary.csv")
    faults = summary[summary["fault"] != "baseline"]
    assert int(summary["corrupted_bytes"].sum()) == 0 and int(summary["hash_failures_run"].fillna(0).sum()) == 0
    assert int(faults.loc[faults["kind"] == "control_plane_kill", "sessions_lost"].sum()) == 0
    assert faults["recovery_s"].notna().all(), faults[["fault", "kind", "recovery_s"]]
    assert verdict(summary.to_dict("records"))[0]
    # sessions started throughout: some began inside every fault's window
    assert (faults["sessions_started"] >= 1).all(), faults[["fault", "sessions_started"]]


def test_controller_restart_leaves_no_stale_flows(run_dir):
    ctl = pd.read_csv(run_dir / "events.csv").query("kind == 'controller_kill'").iloc[0]
    assert ctl["fail_mode"] == "secure"
    assert int(ctl["flows_kept_during"]) == 1  # fail-secure: forwarding state stayed
    assert int(ctl["stale_flows"]) == 0 and int(ctl["missing_flows"]) == 0
    assert int(ctl["flows_after"]) == int(ctl["flows_before"]) > 0


def test_control_plane_kill_fails_new_sessions_cleanly(run_dir):
    events = pd.read_csv(run_dir / "events.csv")
    cp = events.query("kind == 'control_plane_kill'").iloc[0]
    sessions = pd.read_csv(run_dir / "sessions.csv")
    bad = sessions[sessions["status"] != "ok"]
    # a session that did not finish ok ended in a fault's window (none fails on its own)
    assert all(any(e.start_unix <= t <= e.restored_unix + 5 for e in events.itertuples())
               for t in bad["ended_unix"]), bad[["viewer", "started_unix", "status", "error"]]
    # a session that began while the control plane was dead for all of its 3 login tries (3 s)
    # failed cleanly, its error naming the refused connection
    dead = sessions[sessions["started_unix"].between(cp["applied_unix"], cp["end_unix"] - 3.5)]
    assert (dead["status"] == "failed").all() and dead["error"].str.contains("Connect").all(), dead


def test_report_rebuilds_summary(run_dir, capsys):
    from ocalab.cli import main
    before = (run_dir / "summary.csv").read_text()
    (run_dir / "summary.csv").unlink()
    assert main(["report", str(run_dir)]) == 0
    assert (run_dir / "summary.csv").read_text() == before
    assert "chaos verdict: PASS" in capsys.readouterr().out
