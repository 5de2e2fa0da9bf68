"""`ocalab bench scale --quick` end to end on metro: every step is measured (QoE of every
session, loaded RTT per link class, CPU per component, relay cost per Gbit) and judged. The
headline itself depends on the machine, so it is printed, not asserted."""
import json
import os
from types import SimpleNamespace

import pytest

from bench import run
from bench.scale import QUICK_STEPS
from bench.scale_verdict import COMPONENTS

pytestmark = [pytest.mark.emulation,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces")]


def test_quick_scale_bench_measures_and_judges_every_step(tmp_path):
    run.run_bench(SimpleNamespace(what="scale", out=tmp_path, quick=True))
    res = json.loads(next(tmp_path.glob("scale-*.json")).read_text())["scale"]
    assert [s["viewers"] for s in res["steps"]] == list(QUICK_STEPS)
    assert res["scaling"]["ladder_kbps"][-1] == 580
    relayed = res["network"]["link_backend"] == "relay"
    for step in res["steps"]:
        assert step["qoe"]["sessions"] == step["viewers"], step["qoe"]
        assert set(step["cpu_s"]) == set(COMPONENTS)
        assert step["cpu_s"]["players"] > 0 and step["cpu_s"]["ocas"] > 0
        if relayed:
            assert step["cpu_s"]["relays"] > 0 and step["relay_cpu_s_per_gbit"] is not None
        assert {"access+internal", "peering", "transit"} <= set(step["rtt"])
        assert all(c["samples"] >= 20 * c["pairs"] for c in step["rtt"].values())
        assert isinstance(step["verdict"]["ok"], bool)
    assert res["headline_viewers"] in (None, *QUICK_STEPS)
    assert (tmp_path / res["figure"]).stat().st_size > 10_000
