"""`ocalab report` on folders that lack something: one line naming what, exit code 1, no
traceback, and the saved summary and figures untouched. Also `--pack` (tables as .csv.gz) and
reading packed tables. No root: these build folders by hand."""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness.rundir import pack_tables, table_path, write_csv
from harness.runner import Scenario
from ocalab.registry import MODULES, scenario_module
from ocalab.report import report

REPO = Path(__file__).resolve().parent.parent


def ocalab(*args: str) -> subprocess.CompletedProcess:
    """This tree's `ocalab` as a real process (cwd first on sys.path: this tree's code)."""
    return subprocess.run([sys.executable, "-m", "ocalab.cli", *args], capture_output=True, text=True,
                          timeout=120, cwd=REPO)


def reference_folder(d: Path, scenario: str) -> Path:
    """A folder shaped like results/<scenario>: summary, manifest, figure, fidelity table."""
    d.mkdir(parents=True)
    (d / "manifest.json").write_text(json.dumps({"scenario": scenario, "status": "ok", "settings": {}}))
    write_csv(d / "summary.csv", [{"arm": "a", "x": 1}])
    write_csv(d / "fidelity.csv", [{"src": "a", "ok": True}])
    (d / f"{scenario}.png").write_bytes(b"\x89PNG saved")
    return d


@pytest.mark.parametrize("scenario", sorted(set(MODULES) - {"fidelity"}))  # fidelity: summary only
def test_a_folder_of_summaries_only_gets_one_line_naming_what_it_lacks(tmp_path, scenario):
    d = reference_folder(tmp_path / scenario, scenario)
    before = {p.name: p.read_bytes() for p in d.iterdir()}
    r = ocalab("report", str(d))
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    (line,) = r.stderr.splitlines()
    tables = scenario_module(scenario).SCENARIO.tables
    assert line == (f"ocalab report: {d} lacks plan.json, {', '.join(t + '.csv' for t in tables)}: "
                    "it cannot be rebuilt (a run folder holds them)")
    assert {p.name: p.read_bytes() for p in d.iterdir()} == before


@pytest.mark.parametrize("name", ["placement", "fill", "failover", "flashcrowd", "steering", "fidelity", "bgp",
                                  "placement-bgp"])
def test_every_committed_reference_folder_reports_or_says_what_it_lacks(tmp_path, name):
    """On a copy: a rebuildable folder would rewrite its summary and figure."""
    import shutil
    src = REPO / "results" / name
    if not src.is_dir():
        pytest.skip(f"no results/{name}")
    d = shutil.copytree(src, tmp_path / name)
    r = ocalab("report", str(d))
    assert "Traceback" not in r.stderr, r.stderr
    assert r.returncode == 0 or (r.returncode == 1 and " lacks " in r.stderr and len(r.stderr.splitlines()) == 1)


@pytest.mark.parametrize("setup,fragment", [
    (lambda d: None, "is not a folder"),
    (lambda d: d.mkdir(), "is not a run folder (no manifest.json)"),
    (lambda d: (d.mkdir(), (d / "manifest.json").write_text("{not json")), "manifest.json cannot be read"),
    (lambda d: (d.mkdir(), (d / "manifest.json").write_text("{}")), "names no scenario"),
    (lambda d: (d.mkdir(), (d / "manifest.json").write_text('{"scenario": "nope"}')), "unknown scenario 'nope'"),
    (lambda d: (d.mkdir(), (d / "manifest.json").write_text('{"scenario": "fidelity"}')), "lacks summary.csv"),
    (lambda d: (d.mkdir(), (d / "manifest.json").write_text('{"scenario": "placement", "series": ["rep1"]}')),
     "a series without rep1..repN"),
])
def test_what_is_not_a_run_folder_gets_one_line(tmp_path, setup, fragment):
    d = tmp_path / "f"
    setup(d)
    r = ocalab("report", str(d))
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert len(r.stderr.splitlines()) == 1 and fragment in r.stderr, r.stderr


def test_a_series_reports_every_folder_lacking_something_before_writing(tmp_path):
    d = tmp_path / "s"
    d.mkdir()
    (d / "manifest.json").write_text(json.dumps({"scenario": "failover", "series": ["rep1"], "status": "ok"}))
    reference_folder(d / "rep1", "failover")
    r = ocalab("report", str(d))
    assert r.returncode == 1 and f"{d / 'rep1'} lacks plan.json" in r.stderr and "Traceback" not in r.stderr


# ---- in-process, with a stand-in scenario -----------------------------------------------------

def _reads_tables(run_dir: Path) -> list[dict]:
    """A summary as the scenarios' readers must read: through table_path, with pandas."""
    import pandas as pd
    t = pd.read_csv(table_path(run_dir, "t"))
    opt = table_path(run_dir, "opt")
    extra = len(pd.read_csv(opt)) if opt.exists() and opt.stat().st_size else 0
    rows = [{"arm": a, "n": len(g), "x_sum": int(g["x"].sum()), "opt": extra} for a, g in t.groupby("arm")]
    write_csv(run_dir / "summary.csv", rows)
    (run_dir / "demo.png").write_bytes(b"figure of %d rows" % len(rows))
    return rows


def stand_in(monkeypatch, summarize=_reads_tables, tables=("t", "opt")) -> Scenario:
    sc = Scenario("demo", lambda quick: {}, tables, body=None, summarize=summarize,
                  format_table=lambda rows: f"{len(rows)} rows")
    monkeypatch.setattr("ocalab.registry.scenario_module",
                        lambda name: argparse.Namespace(SCENARIO=sc, summarize=summarize, format_table=sc.format_table))
    return sc


def run_folder(d: Path, n_rows: int = 3000) -> Path:
    d.mkdir(parents=True)
    (d / "manifest.json").write_text(json.dumps({"scenario": "demo", "status": "ok"}))
    (d / "plan.json").write_text("{}")
    write_csv(d / "t.csv", [{"arm": "ab"[i % 2], "x": i, "note": "same text every row"} for i in range(n_rows)])
    write_csv(d / "opt.csv", [])  # an empty table: a 0-byte file
    return d


def test_pack_replaces_tables_with_gzip_that_rebuilds_the_same_summary(tmp_path, monkeypatch, capsys):
    stand_in(monkeypatch)
    d = run_folder(tmp_path / "run")
    assert report([d]) == 0
    plain = (d / "summary.csv").read_bytes()
    csv_bytes = (d / "t.csv").read_bytes()
    assert report([d], pack=True) == 0
    assert "packed 1 tables into .csv.gz" in capsys.readouterr().out
    assert not (d / "t.csv").exists() and (d / "opt.csv").stat().st_size == 0  # empty stays plain
    assert table_path(d, "t") == d / "t.csv.gz" and table_path(d, "opt") == d / "opt.csv"
    import gzip
    assert gzip.decompress((d / "t.csv.gz").read_bytes()) == csv_bytes
    assert (d / "t.csv.gz").stat().st_size < len(csv_bytes) / 5
    assert (d / "summary.csv").read_bytes() == plain
    # the same table packs to the same bytes (no name, no time inside): a clean git diff
    e = run_folder(tmp_path / "again")
    pack_tables(e, ("t", "opt"))
    assert (e / "t.csv.gz").read_bytes() == (d / "t.csv.gz").read_bytes()


def test_table_path_prefers_the_plain_table_and_names_an_absent_one(tmp_path):
    assert table_path(tmp_path, "x") == tmp_path / "x.csv" and not table_path(tmp_path, "x").exists()
    (tmp_path / "x.csv.gz").write_bytes(b"")
    assert table_path(tmp_path, "x") == tmp_path / "x.csv.gz"
    (tmp_path / "x.csv").write_text("")
    assert table_path(tmp_path, "x") == tmp_path / "x.csv"


def test_a_missing_optional_table_is_noted_and_the_summary_built(tmp_path, monkeypatch, capsys):
    stand_in(monkeypatch)
    d = run_folder(tmp_path / "old")
    (d / "opt.csv").unlink()  # a run from before this table existed
    assert report([d]) == 0
    err = capsys.readouterr().err
    assert f"note: {d} lacks opt.csv; the summary is built without them" in err


def test_a_missing_table_the_summary_needs_is_named_and_the_saved_files_kept(tmp_path, monkeypatch, capsys):
    d = run_folder(tmp_path / "run")
    write_csv(d / "summary.csv", [{"arm": "saved"}])
    saved = (d / "summary.csv").read_bytes()

    def needs(run_dir):
        (run_dir / "demo.png").write_bytes(b"half drawn")
        (run_dir / "new_output.csv").write_text("x")
        return (run_dir / "needed.csv").read_text()
    stand_in(monkeypatch, summarize=needs, tables=("t", "opt", "needed"))
    (d / "demo.png").write_bytes(b"saved figure")
    assert report([d]) == 1
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == f"ocalab report: {d} lacks needed.csv: it cannot be rebuilt (a run folder holds them)"
    assert (d / "summary.csv").read_bytes() == saved and (d / "demo.png").read_bytes() == b"saved figure"
    assert not (d / "new_output.csv").exists()


def test_a_failing_summary_is_one_line_unless_traceback_is_asked(tmp_path, monkeypatch, capsys):
    def broken(run_dir):
        write_csv(run_dir / "summary.csv", [])
        raise KeyError("arm")
    stand_in(monkeypatch, summarize=broken)
    d = run_folder(tmp_path / "run")
    write_csv(d / "summary.csv", [{"arm": "saved"}])
    assert report([d]) == 1
    assert capsys.readouterr().err.strip() == (f"ocalab report: {d}: its summary failed: KeyError: 'arm' "
                                               "(`ocalab report --traceback` shows where)")
    assert "saved" in (d / "summary.csv").read_text()
    with pytest.raises(KeyError):
        report([d], show_traceback=True)
    assert "saved" in (d / "summary.csv").read_text()


def test_an_empty_rebuild_never_replaces_a_saved_summary(tmp_path, monkeypatch, capsys):
    """E.g. tables a reader cannot see: the saved summary and figure are what stays."""
    def empty(run_dir):
        write_csv(run_dir / "summary.csv", [])
        (run_dir / "demo.png").write_bytes(b"no bars")
        return []
    stand_in(monkeypatch, summarize=empty)
    d = run_folder(tmp_path / "run")
    write_csv(d / "summary.csv", [{"arm": "saved"}])
    (d / "demo.png").write_bytes(b"saved figure")
    assert report([d]) == 1
    assert "the tables gave an empty summary" in capsys.readouterr().err
    assert "saved" in (d / "summary.csv").read_text() and (d / "demo.png").read_bytes() == b"saved figure"


def test_report_goes_on_to_the_next_folder_after_one_that_lacks_something(tmp_path, monkeypatch, capsys):
    stand_in(monkeypatch)
    good = run_folder(tmp_path / "good")
    assert report([tmp_path / "missing", good]) == 1
    out = capsys.readouterr()
    assert "is not a folder" in out.err and "2 rows" in out.out
