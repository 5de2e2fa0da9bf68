"""`ocalab run bgp --quick` end to end on the emulated metro (root, FRR): the viewers' bytes move
the way the BGP events say, in the players' logs and in the border links' counters, and the two
agree. Asserts directions and the agreement gate on the saved tables, never timings. Skips the
fidelity gate (--no-verify): test_bgp_metro and the fidelity tests judge the network itself."""
from __future__ import annotations

import csv
import os

import pytest

pytestmark = [pytest.mark.emulation,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root (namespaces, OVS)")]

MB = 1_000_000


def _rows(path):
    with path.open() as f:
        return list(csv.DictReader(f))


def _num(x) -> float:
    return float(x) if x not in ("", None) else 0.0


def test_bgp_quick_bytes_move_with_the_events(tmp_path):
    from emulation.frr import missing
    from ocalab.cli import main
    if missing():
        pytest.skip(missing())
    assert main(["run", "bgp", "--quick", "--no-verify", "--out", str(tmp_path)]) == 0
    (run_dir,) = list(tmp_path.glob("bgp-*"))
    summary = {r["phase"]: r for r in _rows(run_dir / "summary.csv")}
    assert list(summary) == ["steady", "ixp_link_down", "ixp_link_up", "prefix_withdraw", "prefix_announce"]
    relays = summary["steady"]["ixp_path_relay_mb"] != ""

    def path_mb(phase, path):  # the link counter: relay payload, or kernel bytes without relays
        return _num(summary[phase][f"{path}_path_{'relay' if relays else 'kernel'}_mb"])

    steady, down, up, withdraw, announce = (summary[p] for p in summary)
    # steady: the held title from the embedded OCA, the lacking one over the IXP fabric
    assert _num(steady["embedded_mb"]) > 1 and _num(steady["ixp_mb"]) > 1 and path_mb("steady", "ixp") > 1
    # IXP link down: no isp1 bytes on the IXP fabric, the lacking title from the origin over transit
    assert _num(down["ixp_mb"]) == 0 and _num(down["origin_mb"]) > 1
    assert path_mb("ixp_link_down", "ixp") < 0.2 and path_mb("ixp_link_down", "transit") > 1
    assert path_mb("ixp_link_down", "transit") > 3 * path_mb("steady", "transit") / _num(steady["duration_s"]) \
        * _num(down["duration_s"])
    # back up: new sessions and re-probes return to the IXP OCA
    assert _num(up["ixp_mb"]) > 1 and path_mb("ixp_link_up", "ixp") > 1
    # prefix withdrawn from the embedded OCA: sessions begun after steering changed get nothing
    # from it (those begun before keep their manifest); announced again, they get it back
    assert _num(withdraw["new_embedded_mb"]) == 0 and _num(withdraw["new_ixp_mb"]) > 1
    assert _num(announce["new_embedded_mb"]) > 1
    # the players' log and the links' counters: same bytes per path over the run
    if relays:
        assert steady["paths_agree"] == "True", summary
    paths = _rows(run_dir / "path_bytes.csv")
    assert {(r["phase"], r["path"]) for r in paths if r["phase"] == "all"} == {("all", "ixp"), ("all", "transit")}
    sessions = _rows(run_dir / "sessions.csv")
    assert sum(s["status"] == "ok" for s in sessions) >= 10
