"""Placement on BGP matches placement on static routing (saved runs, no root): per arm, every
viewer host is served by the same server over the same traceroute path, so the summary's
servers and hops match. results/placement is the static reference (full size, rep1),
results/placement-bgp a quick run with --routing bgp; paths do not depend on the size."""
import json
from pathlib import Path

import pytest

from harness.rundir import table_path
from scenarios.logs import read_table

RESULTS = Path(__file__).resolve().parent.parent / "results"
STATIC, BGP = RESULTS / "placement", RESULTS / "placement-bgp"


def _paths(run: Path) -> set[tuple]:
    d = read_table(table_path(run, "paths"), optional=False)
    return {(r["arm"], r["host"], r["server"], int(r["hops"]), r["path"]) for r in d.to_dict("records")}


def _summary(run: Path) -> dict[str, tuple]:
    d = read_table(run / "summary.csv", optional=False)
    return {r["arm"]: (r["servers"], float(r["hops"])) for r in d.to_dict("records")}


@pytest.mark.skipif(not (STATIC.is_dir() and BGP.is_dir()), reason="no saved placement runs")
def test_placement_on_bgp_has_the_static_servers_hops_and_paths():
    routing = lambda run: json.loads((run / "manifest.json").read_text())["settings"].get("routing", "static")  # noqa: E731
    assert routing(BGP) == "bgp" and routing(STATIC) in ("static", None)
    static_paths = _paths(STATIC / "rep1")
    assert {p[0] for p in static_paths} == {"origin", "ixp", "embedded"}
    assert _paths(BGP) == static_paths
    assert _summary(BGP) == _summary(STATIC)

