"""Labs for a class (labs/*.md) and `ocalab lab check`: pure, no root, on the reference results."""
from __future__ import annotations

import csv
import gzip
import io
import json
import shutil
from pathlib import Path

import pytest

from ocalab import labs
from ocalab.cli import main
from scenarios.logs import read_rows

NAMES = ["placement", "fill", "failover", "steering"]


def _copy(tmp_path: Path, scenario: str) -> Path:
    return Path(shutil.copytree(labs.RESULTS_DIR / scenario, tmp_path / scenario))


def _refusals(findings) -> list[str]:
    return [f.text for f in findings if f.ok is False]


def _rewrite(path: Path, rows: list[dict]) -> None:
    """Replace a table (plain or .csv.gz) with `rows`, as a hand edit would."""
    text = io.StringIO()
    w = csv.DictWriter(text, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
    if path.suffix == ".gz":
        with gzip.open(path, "wt", newline="") as f:
            f.write(text.getvalue())
    else:
        path.write_text(text.getvalue())


def _edit_manifest(d: Path, **fields) -> None:
    m = json.loads((d / "manifest.json").read_text())
    m.update(fields)
    (d / "manifest.json").write_text(json.dumps(m))


def test_the_four_labs_in_course_order_each_name_their_scenario_and_command():
    found = labs.all_labs()
    guide = (labs.LABS_DIR / "README.md").read_text()
    assert [lab.name for lab in found] == NAMES
    for lab in found:
        assert lab.scenario == lab.name and f"ocalab run {lab.scenario}" in lab.command
        text = lab.path.read_text()
        for section in ("## Goal", "## Commands", "## Questions for the student",
                        "## What the instructor should see", "## Check"):
            assert section in text, (lab.name, section)
        assert f"ocalab lab check {lab.name} " in text
        assert lab.command in text.split("## Commands")[1].split("\n## ")[0]  # the toml's command is the one shown
        assert f"[{lab.path.name}]({lab.path.name})" in guide and f"`{lab.command}`" in guide


@pytest.mark.parametrize("name", NAMES)
def test_every_lab_passes_on_its_reference_results(name):
    lab = labs.by_name(name)
    findings = labs.check_run(lab, labs.RESULTS_DIR / lab.scenario)
    assert not _refusals(findings), findings
    assert any("rebuilt from the tables gives the same figures" in f.text for f in findings)


@pytest.mark.parametrize("name", NAMES)
def test_the_reference_figures_in_each_lab_are_those_of_results(name):
    """The numbers the instructor reads are rendered from results/; after new reference runs,
    `ocalab lab render` rewrites them."""
    lab = labs.by_name(name)
    text = lab.path.read_text()
    assert labs.render(text, labs.reference_block(lab)) == text, "run `ocalab lab render`"
    block = labs.reference_block(lab)
    ref = read_rows(labs.RESULTS_DIR / lab.scenario / "summary.csv")
    assert all(str(ref[0][fig]) in block for fig in lab.figures)


def test_a_placement_run_given_to_the_fill_check_is_refused_by_name():
    findings = labs.check_run(labs.by_name("fill"), labs.RESULTS_DIR / "placement")
    assert _refusals(findings) == [f"{labs.RESULTS_DIR / 'placement'} is a run of 'placement', not 'fill': "
                                   "lab fill needs `sudo .venv/bin/ocalab run fill --quick`"]


def test_a_run_missing_a_table_is_refused_naming_it(tmp_path):
    d = _copy(tmp_path, "steering")
    (d / "chunks.csv.gz").unlink()
    assert _refusals(labs.check_run(labs.by_name("steering"), d)) == [
        "lacks chunks.csv: the run folder is incomplete (copy the whole folder)"]


def test_a_series_missing_a_table_in_one_repeat_is_refused_naming_the_repeat(tmp_path):
    d = _copy(tmp_path, "placement")
    (d / "rep2" / "paths.csv.gz").unlink()
    (d / "rep3" / "access.csv.gz").unlink()
    (d / "rep3" / "access.csv").write_text("")
    assert _refusals(labs.check_run(labs.by_name("placement"), d)) == [
        "rep2: lacks paths.csv: the run folder is incomplete (copy the whole folder)",
        "rep3: access.csv has no rows"]


def test_a_run_without_its_plan_is_refused_and_not_rebuilt(tmp_path):
    d = _copy(tmp_path, "failover")
    (d / "plan.json").unlink()
    assert _refusals(labs.check_run(labs.by_name("failover"), d)) == ["lacks plan.json: the run folder is incomplete"]


def test_tables_the_summary_cannot_read_are_refused_with_the_reason(tmp_path):
    d = _copy(tmp_path, "failover")
    with gzip.open(d / "events.csv.gz", "wt") as f:
        f.write("arm,what\nmanifest,x\n")
    [text] = _refusals(labs.check_run(labs.by_name("failover"), d))
    assert text.startswith("the summary cannot be rebuilt from the tables: ")


def test_a_tampered_summary_is_refused_naming_the_figure(tmp_path):
    d = _copy(tmp_path, "failover")
    rows = read_rows(d / "summary.csv")
    rows[1]["recover_s_median"] = "1.5"  # a nicer recovery than the run had
    _rewrite(d / "summary.csv", rows)
    [text] = _refusals(labs.check_run(labs.by_name("failover"), d))
    assert "does not match the run's own tables" in text
    assert "manifest ixp_kill recover_s_median = 1.5 (the tables give 2.29)" in text


def test_a_tampered_table_of_a_series_shows_in_the_medians(tmp_path):
    d = _copy(tmp_path, "placement")
    for rep in ("rep1", "rep2"):  # two of three repeats: the median moves
        path = d / rep / "sessions.csv.gz"
        sessions = read_rows(path)
        sessions = [s for s in sessions if not (s["arm"] == "origin" and s["host"] == "i1v1")]
        _rewrite(path, sessions)
    [text] = _refusals(labs.check_run(labs.by_name("placement"), d))
    assert "origin sessions = 102.0 (the tables give 85.0)" in text


@pytest.mark.parametrize("edit, fragment", [
    (dict(fidelity_verified=False), "the fidelity gate was skipped (--no-verify)"),
    (dict(status="failed", error="EmulationError: fidelity gate failed: 1 of 28 links (or groups) off the plan:\n  i1v1-0"),
     "the run did not finish: status 'failed', EmulationError: fidelity gate failed: 1 of 28 links (or groups) off the plan:"),
])
def test_an_unverified_or_failed_run_is_refused(tmp_path, edit, fragment):
    d = _copy(tmp_path, "steering")
    _edit_manifest(d, **edit)
    refused = _refusals(labs.check_run(labs.by_name("steering"), d))
    assert any(t.startswith(fragment) for t in refused), refused
    assert not any("i1v1-0" in t for t in refused)  # one line of the error, not the whole list


def test_an_unverified_run_passes_only_with_allow_unverified_and_a_note(tmp_path):
    d = _copy(tmp_path, "steering")
    _edit_manifest(d, fidelity_verified=False)
    findings = labs.check_run(labs.by_name("steering"), d, allow_unverified=True)
    assert not _refusals(findings)
    assert any(f.ok is None and "accepted with --allow-unverified" in f.text for f in findings)


def test_a_failed_segment_hash_or_a_missing_arm_is_refused(tmp_path):
    d = _copy(tmp_path, "steering")
    path = d / "sessions.csv.gz"
    sessions = read_rows(path)
    sessions[0]["hash_failures"] = "2"
    sessions = [s for s in sessions if s["arm"] != "load_aware" or s is sessions[0]]
    _rewrite(path, sessions)
    refused = _refusals(labs.check_run(labs.by_name("steering"), d))
    assert "sessions.csv has no session of arm 'load_aware'" in refused
    assert any("2 segments failed their SHA-256 check" in t for t in refused)


def test_a_folder_of_runs_is_refused_pointing_at_the_newest_run(tmp_path):
    shutil.copytree(labs.RESULTS_DIR / "steering", tmp_path / "steering-20261203T120000")
    shutil.copytree(labs.RESULTS_DIR / "failover", tmp_path / "failover-20261203T130000")
    [text] = _refusals(labs.check_run(labs.by_name("steering"), tmp_path))
    assert text.startswith(f"{tmp_path} is not a run folder (no manifest.json)")
    assert text.endswith(f"the newest steering run in it is {tmp_path / 'steering-20261203T120000'}")


def test_check_exit_codes_and_output(tmp_path, capsys):
    assert main(["lab", "check", "steering", str(labs.RESULTS_DIR / "steering")]) == 0
    out = capsys.readouterr().out
    assert "lab steering: PASSED" in out and "| health_misses | 238 (= ref) | 195 (= ref) |" in out
    assert main(["lab", "check", "steering", str(labs.RESULTS_DIR / "failover")]) == 1
    assert "FAIL" in capsys.readouterr().out
    assert main(["lab", "check", "bgp", str(tmp_path)]) == 2
    assert "no lab 'bgp'; labs: placement, fill, failover, steering" in capsys.readouterr().out
    assert main(["lab", "show", "fill"]) == 0 and "# Lab 2" in capsys.readouterr().out


@pytest.mark.parametrize("text, fragment", [
    ("# x\n", "exactly one ```toml block"),
    ("```toml\nscenario = 'fill'\n```\n```toml\n```\n", "exactly one ```toml block"),
    ("```toml\nscenario = 'fill'\ncomand = 'x'\n```\n", "unknown keys ['comand']"),
    ("```toml\nscenario = [\n```\n", "does not parse"),
])
def test_a_lab_file_without_clean_data_is_refused(text, fragment):
    with pytest.raises(labs.LabError, match=fragment.replace("[", r"\[").replace("]", r"\]")):
        labs.parse_lab(Path("labs/09-x.md"), text)


def test_compare_summaries_is_numeric_and_names_missing_rows():
    saved = [{"arm": "a", "x": "1.0", "y": "nan", "s": "i1v1=o"}, {"arm": "b", "x": "2"}]
    rebuilt = [{"arm": "a", "x": "1", "y": "nan", "s": "i1v1=o"}]
    assert labs.compare_summaries(saved, rebuilt, ("arm",)) == ["row b is not in the tables"]
    assert labs.compare_summaries([{"arm": "a", "s": "x"}], [{"arm": "a", "s": "y"}], ("arm",)) == [
        "a s = x (the tables give y)"]


def test_a_summary_without_the_labs_columns_or_arms_is_refused_naming_them(tmp_path):
    d = _copy(tmp_path, "steering")
    rows = [{k: v for k, v in r.items() if k != "health_misses"} for r in read_rows(d / "summary.csv")]
    _rewrite(d / "summary.csv", rows[:1])
    assert _refusals(labs.check_run(labs.by_name("steering"), d)) == [
        "summary.csv lacks the columns health_misses and the arms load_aware"]


def test_a_stale_reference_block_is_rewritten_and_a_lab_without_one_refused():
    lab = labs.by_name("steering")
    text = lab.path.read_text()
    stale = text.replace("| health_misses | 238 | 195 |", "| health_misses | 7 | 3 |")
    assert stale != text and labs.render(stale, labs.reference_block(lab)) == text
    with pytest.raises(labs.LabError, match="no reference block"):
        labs.render("# a lab\n", labs.reference_block(lab))


def test_a_run_with_the_runners_per_arm_columns_passes_and_a_tampered_one_is_refused(tmp_path):
    """summary.csv as the runner leaves it (loaded RTT and host load per arm added after the
    scenario's summary) rebuilds the same; an edited cpu_saturated_pct does not."""
    from harness.annotations import annotate
    d = _copy(tmp_path, "fill")
    annotate(d)
    rows = read_rows(d / "summary.csv")
    assert "cpu_saturated_pct" in rows[0]
    assert not _refusals(labs.check_run(labs.by_name("fill"), d))
    rows[0]["cpu_saturated_pct"] = "0.0" if rows[0]["cpu_saturated_pct"] != "0.0" else "50.0"
    _rewrite(d / "summary.csv", rows)
    [text] = _refusals(labs.check_run(labs.by_name("fill"), d))
    assert "cpu_saturated_pct" in text
