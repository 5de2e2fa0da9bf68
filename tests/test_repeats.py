"""Pure parts of repeats and reproducibility: spread over repeats, payload bytes per class over
plan paths, chunk-to-access-log joins, and the series layout that `ocalab report` rebuilds."""
import json
from pathlib import Path

import pytest

from scenarios.logs import attach_cache
from scenarios.traffic import payload_by_class
from harness.repeats import children, format_spread, spread, summarize_series
from harness.rundir import write_csv
from harness.runner import Scenario
from topologies.catalog import metro


def test_spread_reports_mean_sd_and_identical_stable_figures():
    reps = [[{"arm": "a", "hops": "1", "ttfb_ms": "10", "servers": "x=y"}, {"arm": "b", "hops": "4", "ttfb_ms": "30", "servers": "q"}],
            [{"arm": "a", "hops": "1", "ttfb_ms": "14", "servers": "x=y"}, {"arm": "b", "hops": "3", "ttfb_ms": "50"}]]
    rows = {(r["arm"], r["metric"]): r for r in spread(reps, ("arm",), ("hops", "servers"))}
    assert rows[("a", "hops")]["identical"] == 1 and rows[("a", "hops")]["stable"] == 1
    assert rows[("b", "hops")]["identical"] == 0 and rows[("b", "hops")]["values"] == "4|3"
    assert rows[("a", "ttfb_ms")]["mean"] == 12 and rows[("a", "ttfb_ms")]["sd"] == pytest.approx(2.8284, abs=1e-3)
    assert rows[("a", "ttfb_ms")]["stable"] == 0
    assert rows[("a", "servers")]["identical"] == 1 and rows[("a", "servers")]["n"] == 0  # text: compared, not averaged
    # a row missing from one repeat is never identical
    assert rows[("b", "servers")]["identical"] == 0
    text = format_spread(list(rows.values()), 2)
    assert "2/4 seed-stable figures identical" in text and "differs: b hops: 4|3" in text


def test_payload_by_class_follows_plan_paths():
    plan = metro()
    v1, oca = plan.primary_ip("i1v1"), plan.primary_ip("i1oca1")
    access = [{"server": "origin", "client": v1, "bytes": 1000},      # origin -> viewer: transit into isp1
              {"server": "i1oca1", "client": v1, "bytes": 10},        # embedded: stays inside the ISP
              {"server": "origin", "client": oca, "bytes": 100},      # pull-through to the OCA
              {"server": "nfxoca1", "client": v1, "bytes": 5000},     # IXP site: peering
              {"server": "i1oca1", "client": v1, "bytes": 0}]
    by = payload_by_class(access, plan, "origin")
    assert by["transit"] == 1100 and by["peering"] == 5000
    assert by["access"] == 1000 + 10 + 5000  # every viewer download crosses its access link once
    assert "transit" not in payload_by_class(access[1:2], plan, "origin")
    with pytest.raises(ValueError, match="no address of the plan"):
        payload_by_class([{"server": "origin", "client": "192.0.2.9", "bytes": 1}], plan, "origin")


def test_attach_cache_joins_the_nearest_access_row_of_the_same_server_and_path():
    chunks = [{"server": "i1oca1", "title": "t0001", "kbps": "750", "index": "0", "time": "100.0"},
              {"server": "i1oca1", "title": "t0001", "kbps": "750", "index": "1", "time": "104.0"},
              {"server": "origin", "title": "t0002", "kbps": "750", "index": "0", "time": "105.0"}]
    access = [{"server": "i1oca1", "client": "198.18.1.10", "path": "/v/t0001/750/0", "ts": "100.2", "status": "200",
               "cache": "miss"},
              {"server": "i1oca1", "client": "198.18.1.10", "path": "/v/t0001/750/1", "ts": "104.1", "status": "200",
               "cache": "hit"},
              {"server": "i1oca1", "client": "198.18.1.11", "path": "/v/t0001/750/1", "ts": "104.0", "status": "200",
               "cache": "miss"}]
    out = attach_cache(chunks, access, "198.18.1.10")
    assert [c["cache"] for c in out] == ["miss", "hit", "unmatched"]


def test_series_summary_is_rebuilt_from_the_repeats(tmp_path):
    for k, ttfb in ((1, 10), (2, 20)):
        d = tmp_path / f"rep{k}"
        d.mkdir()
        write_csv(d / "summary.csv", [{"arm": "a", "hops": 1, "ttfb_ms": ttfb}])
    (tmp_path / "rep10").mkdir()
    write_csv(tmp_path / "rep10" / "summary.csv", [{"arm": "a", "hops": 2, "ttfb_ms": 30}])
    (tmp_path / "repx").mkdir()  # not a repeat
    assert [d.name for d in children(tmp_path)] == ["rep1", "rep2", "rep10"]
    sc = Scenario(name="t", settings=dict, tables=(), body=None, summarize=None, format_table=None, stable=("hops",))
    text = summarize_series(tmp_path, sc)
    assert "0/1 seed-stable figures identical" in text
    lines = (tmp_path / "spread.csv").read_text().splitlines()
    assert lines[0].startswith("arm,metric,n,mean,sd,min,max,stable,identical,values")
    assert any(line.startswith("a,ttfb_ms,3,20.0,10.0,10.0,30.0,0,0") for line in lines)
    # summary.csv reads like one run's: per arm, each figure the median over the repeats
    assert (tmp_path / "summary.csv").read_text().splitlines() == ["arm,hops,ttfb_ms", "a,1.0,20.0"]


def test_medians_keep_one_runs_columns_and_join_texts_that_differ():
    from harness.repeats import medians
    reps = [[{"arm": "a", "hops": 2, "servers": "x", "note": "p"}, {"arm": "b", "hops": 5, "servers": "y", "note": ""}],
            [{"arm": "a", "hops": 4, "servers": "x", "note": "q"}, {"arm": "b", "hops": "", "servers": "y", "note": ""}],
            [{"arm": "a", "hops": 9, "servers": "x", "note": "p"}]]
    rows = {r["arm"]: r for r in medians(reps, ("arm",))}
    assert rows["a"] == {"arm": "a", "hops": 4.0, "servers": "x", "note": "p|q|p"}
    # b: one repeat lacks the row, one left the figure empty: the median of the numbers there are
    assert rows["b"]["hops"] == 5.0 and rows["b"]["servers"] == "y|y|" and rows["b"]["note"] == ""


def test_run_rejects_a_repeat_below_one(tmp_path, capsys):
    from ocalab.cli import main
    for bad in ("0", "-2", "two"):
        with pytest.raises(SystemExit):
            main(["run", "placement", "--repeat", bad, "--out", str(tmp_path)])
        assert "--repeat" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # rejected before any run folder or namespace


def test_a_failed_run_leaves_a_manifest_that_says_why_and_report_refuses_it(tmp_path, monkeypatch, capsys):
    """The runner's failure path on a network whose fidelity gate failed (the build is replaced:
    this checks the provenance written around it, not the emulation)."""
    import argparse
    import json

    import emulation.build as build
    from harness import runner
    from ocalab.report import report
    from emulation.fidelity import Measurement, Pair
    from emulation.linkemu import EmulationError

    class GateFails:
        def __init__(self, plan, opts):
            self.plan, self.opts = plan, opts
            self.fidelity = [Measurement(Pair("a", "b", "198.18.1.1", ("l",), ("access",), 8.0, 0.0),
                                         12.0, 11.5, 19, 11.8, 0.5, False)]

        def __enter__(self):
            raise EmulationError("fidelity gate failed: measured RTT is off the plan on 1 of 1 pairs")

        def __exit__(self, *exc):
            return False

        def summary(self):
            return {"calibration_rounds": 3}
    monkeypatch.setattr(build, "Network", GateFails)
    monkeypatch.setattr("emulation.ledger.install_signal_handlers", lambda: None)
    # provenance is taken when the run starts: the git state at the end would differ
    states = iter([{"commit": "c0de", "dirty": False}, {"commit": "c0de", "dirty": True}])
    monkeypatch.setattr(runner, "git_info", lambda: next(states))
    monkeypatch.setattr("harness.rundir.git_info", lambda: next(states))
    sc = Scenario("demo", lambda quick: {"n": 1}, ("t",), body=None, summarize=None, format_table=None)
    built = []
    monkeypatch.setattr(build, "Network", lambda plan, opts: built.append(opts) or GateFails(plan, opts))
    a = argparse.Namespace(repeat=1, quick=True, abr=None, name="metro", set=[], out=tmp_path,
                           no_verify=False, link_backend="auto", datapath="auto", seed=7, routing="bgp")
    with pytest.raises(EmulationError):
        runner.run(a, sc)
    (run_dir,) = tmp_path.glob("demo-*")
    m = json.loads((run_dir / "manifest.json").read_text())
    assert m["status"] == "failed" and "fidelity gate failed" in m["error"] and m["seed"] == 7
    assert built[0].routing == "bgp" and m["settings"]["routing"] == "bgp"  # `ocalab run --routing bgp`
    assert m["git"] == {"commit": "c0de", "dirty": False}
    assert "12.0" in (run_dir / "fidelity.csv").read_text()  # the measurements that failed it
    assert report([run_dir]) == 1 and "this run failed" in capsys.readouterr().out


def test_host_cpu_summary_and_saturation_warning():
    from harness.hostload import CpuSampler, cpu_summary, warning
    rows = [{"unix_s": i, "busy_frac": b} for i, b in enumerate([0.2, 0.5, 0.97, 1.0] + [0.1] * 6)]
    s = cpu_summary(rows)
    assert s == {"seconds": 10, "mean": 0.327, "p95": 1.0, "max": 1.0, "saturated_share": 0.2}
    assert "20% of the run" in warning(s)
    assert warning(cpu_summary(rows[4:])) is None and cpu_summary([]) == {"seconds": 0}
    from harness.hostload import saturated
    assert saturated(s) and saturated({"saturated_share": 0.06})
    assert not saturated({"saturated_share": 0.05}) and not saturated({})
    stolen = cpu_summary([{**r, "steal_frac": 0.1 if i == 2 else 0.0} for i, r in enumerate(rows)])
    assert stolen["steal_mean"] == 0.01 and stolen["steal_max"] == 0.1
    with CpuSampler(interval_s=0.05) as cpu:  # the real /proc/stat
        import time
        time.sleep(0.3)
    assert len(cpu.rows) >= 2 and all(0.0 <= r["steal_frac"] <= r["busy_frac"] <= 1.0 for r in cpu.rows)


def test_a_summary_bug_keeps_the_saved_data_ok_and_report_rebuilds_it(tmp_path, monkeypatch, capsys):
    """The body's data is complete when the pure summary raises: the manifest stays "ok" (with
    its host load), the exit code is 1, and `ocalab report` builds the summary once fixed (the
    network is replaced: this checks the runner around it)."""
    import argparse
    import json

    import emulation.build as build
    from harness import runner
    from ocalab.report import report

    class Builds:
        fidelity: list = []

        def __init__(self, plan, opts):
            self.plan = plan

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def summary(self):
            return {"calibration_rounds": 1}
    monkeypatch.setattr(build, "Network", Builds)
    monkeypatch.setattr("emulation.ledger.install_signal_handlers", lambda: None)

    class NoPings:  # no hosts to ping from
        samples: list = []

        def __init__(self, net, log_dir):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False
    monkeypatch.setattr("harness.loadedrtt.Pinger", NoPings)
    fixed = []

    def summarize(run_dir):
        if not fixed:
            raise ValueError("could not convert string to float: ''")
        return [{"arm": "a", "n": 1}]

    def body(net, run_dir, cfg, seed, tables):
        tables["t"].append({"arm": "a", "x": 1})
    sc = Scenario("demo", lambda quick: {"n": 1}, ("t",), body=body, summarize=summarize,
                  format_table=lambda rows: f"{len(rows)} rows")
    monkeypatch.setattr("ocalab.registry.scenario_module",
                        lambda name: argparse.Namespace(SCENARIO=sc, summarize=summarize,
                                                        format_table=sc.format_table))
    a = argparse.Namespace(repeat=1, quick=True, abr=None, name="metro", set=[], out=tmp_path,
                           no_verify=False, link_backend="auto", datapath="auto", seed=7)
    assert runner.run(a, sc) == 1
    (run_dir,) = tmp_path.glob("demo-*")
    m = json.loads((run_dir / "manifest.json").read_text())
    assert m["status"] == "ok" and "host_cpu" in m and (run_dir / "t.csv").read_text().startswith("arm,x")
    assert "ocalab report" in capsys.readouterr().err
    fixed.append(True)
    assert report([run_dir]) == 0 and "1 rows" in capsys.readouterr().out


def test_report_says_when_a_run_had_a_saturated_host(tmp_path, capsys):
    """`ocalab report` judges the serve phase from host_cpu.csv and the sessions (more than 5% of
    its seconds saturated: a warning, and cpu_saturated_pct per arm in summary.csv); a folder
    without host_cpu.csv falls back on the manifest's summary."""
    import csv
    import shutil
    from ocalab.report import report
    run_dir = tmp_path / "fill"
    shutil.copytree(Path(__file__).resolve().parents[1] / "results" / "fill", run_dir)
    assert report([run_dir]) == 0 and "saturated" not in capsys.readouterr().out  # 3.5% of the serve phase
    assert "cpu_saturated_pct" in (run_dir / "summary.csv").read_text()
    with (run_dir / "host_cpu.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows[len(rows) // 2:]:  # the second half of the run (the serve day) saturated
        r["busy_frac"] = "0.99"
    with (run_dir / "host_cpu.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    assert report([run_dir]) == 0
    assert "WARNING: the host CPUs were saturated (>= 95% busy) for" in (out := capsys.readouterr().out)
    assert "of the serve phase" in out
    (run_dir / "host_cpu.csv").unlink()
    m = json.loads((run_dir / "manifest.json").read_text())
    m["host_cpu"] = {"seconds": 100, "saturated_share": 0.12}  # a run from before serve phases
    (run_dir / "manifest.json").write_text(json.dumps(m))
    assert report([run_dir]) == 0 and "for 12% of the run" in capsys.readouterr().out