"""Lab exercises for a class (labs/*.md) and `ocalab lab check`: did the student run it?

Each lab is one markdown file, `labs/NN-<name>.md`. Its one ```toml block is the lab's data,
read here and shown to the reader as written: `scenario`, `command`, `arms` (rows the summary
must hold, in the scenario's first key column), `tables` (tidy tables that must have rows, in
every repeat) and `figures` (summary columns shown beside the reference run's). The block of
reference figures between REF_BEGIN and REF_END is rendered from results/<scenario> by
`reference_block` (`ocalab lab render` rewrites it; a test keeps it current).

`check_run` reads a run folder and returns findings; it writes nothing there. A tampered
summary is caught by rebuilding it from the folder's own tables with the scenario's
`summarize` (in a temporary copy) and comparing every saved figure.
"""
from __future__ import annotations

import contextlib
import io
import json
import math
import re
import shutil
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path

from harness.rundir import REPO, table_path
from scenarios.logs import LogError, read_rows

LABS_DIR = REPO / "labs"
RESULTS_DIR = REPO / "results"
REF_BEGIN = "<!-- reference figures: rendered from results/ by `ocalab lab render`; do not edit -->"
REF_END = "<!-- end of reference figures -->"
_TOML = re.compile(r"^```toml\n(.*?)^```", re.S | re.M)
_FIELDS = {"scenario": str, "command": str, "arms": list, "tables": list, "figures": list}


class LabError(Exception):
    """A lab file or a lab name that cannot be used, in one line."""


@dataclass(frozen=True)
class Lab:
    name: str
    title: str
    path: Path
    scenario: str
    command: str
    arms: tuple[str, ...]
    tables: tuple[str, ...]
    figures: tuple[str, ...]


@dataclass(frozen=True)
class Finding:
    """One line of a check: ok True (passed), False (refused) or None (a note, not judged)."""
    ok: bool | None
    text: str


def parse_lab(path: Path, text: str) -> Lab:
    """The lab in markdown `text` (its file `path` names it: NN-<name>.md). Pure."""
    name = path.stem.split("-", 1)[-1]
    blocks = _TOML.findall(text)
    if len(blocks) != 1:
        raise LabError(f"{path}: needs exactly one ```toml block (the lab's data), found {len(blocks)}")
    try:
        data = tomllib.loads(blocks[0])
    except tomllib.TOMLDecodeError as e:
        raise LabError(f"{path}: its toml block does not parse: {e}") from None
    unknown = set(data) - set(_FIELDS)
    wrong = [k for k, t in _FIELDS.items() if not isinstance(data.get(k), t)]
    if unknown or wrong:
        raise LabError(f"{path}: toml block: unknown keys {sorted(unknown)}, missing or mistyped {wrong}")
    title = next((line[2:].strip() for line in text.splitlines() if line.startswith("# ")), name)
    return Lab(name, title, path, data["scenario"], data["command"], tuple(data["arms"]),
               tuple(data["tables"]), tuple(data["figures"]))


def all_labs(labs_dir: Path = LABS_DIR) -> list[Lab]:
    """Every lab, in course order (the NN of its file name)."""
    if not labs_dir.is_dir():
        raise LabError(f"no labs folder at {labs_dir} (the labs come with a clone of the repository)")
    return [parse_lab(p, p.read_text()) for p in sorted(labs_dir.glob("[0-9][0-9]-*.md"))]


def by_name(name: str, labs_dir: Path = LABS_DIR) -> Lab:
    labs = all_labs(labs_dir)
    for lab in labs:
        if lab.name == name:
            return lab
    raise LabError(f"no lab {name!r}; labs: {', '.join(x.name for x in labs)}")


# -- reading a run folder ------------------------------------------------------------------------

class _Refused(Exception):
    """A check that makes the rest meaningless (not a run folder, another scenario)."""


def _manifest(d: Path, scenario: str) -> dict:
    path = d / "manifest.json"
    if not path.is_file():
        raise _Refused(f"{d} is not a run folder (no manifest.json); give the folder `ocalab run` "
                       f"printed, e.g. runs/<scenario>-<time>{_newest_hint(d, scenario)}")
    try:
        m = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _Refused(f"{path} cannot be read: {e}") from None
    if not isinstance(m, dict):
        raise _Refused(f"{path} is not a run manifest")
    return m


def _newest_hint(d: Path, scenario: str) -> str:
    """'; the newest <scenario> run in it is X' when `d` is a folder of such run folders."""
    runs = [p.parent for p in d.glob(f"{scenario}-*/manifest.json")] if d.is_dir() else []
    newest = max(runs, key=lambda p: p.stat().st_mtime, default=None)
    return f"; the newest {scenario} run in it is {newest}" if newest else ""


def _folders(d: Path, m: dict) -> list[Path]:
    """The run folders holding tables: rep1..repN of a series, else the run itself."""
    if "series" not in m:
        return [d]
    from harness.repeats import children
    reps = children(d)
    if not reps:
        raise _Refused(f"{d} is a series (--repeat) without its rep1..repN folders")
    return reps


# -- the checks ---------------------------------------------------------------------------------

def check_run(lab: Lab, run_dir: Path, allow_unverified: bool = False) -> list[Finding]:
    """Every finding about `run_dir` as a run of `lab`; it passes when none has ok False."""
    out: list[Finding] = []
    try:
        m = _manifest(run_dir, lab.scenario)
        if m.get("scenario") != lab.scenario:
            raise _Refused(f"{run_dir} is a run of {m.get('scenario')!r}, not {lab.scenario!r}: lab "
                           f"{lab.name} needs `{lab.command}`")
        out.append(Finding(True, f"a {lab.scenario} run ({_size(m)}, seed {m.get('seed')})"))
        out += _provenance(m, allow_unverified)
        if m.get("status") != "ok":
            return out
        folders = _folders(run_dir, m)
    except _Refused as e:
        return out + [Finding(False, str(e))]
    for f in folders:
        where = f"{f.name}: " if f != run_dir else ""
        out += [Finding(x.ok, where + x.text) for x in _tables(lab, f)]
    if all(x.ok is not False for x in out):
        out += _summary(lab, run_dir, m, folders)
    return out


def _size(m: dict) -> str:
    size = "quick" if m.get("quick") else "full size"
    return size + (f", {len(m['series'])} repeats" if "series" in m else "")


def _provenance(m: dict, allow_unverified: bool) -> list[Finding]:
    out = []
    if m.get("status") != "ok":
        out.append(Finding(False, f"the run did not finish: status {m.get('status')!r}"
                                  + (f", {str(m['error']).splitlines()[0]}" if m.get("error") else "")))
    if m.get("fidelity_verified") is True:
        out.append(Finding(True, "the fidelity gate passed: every link measured within its tolerance"))
    elif allow_unverified:
        out.append(Finding(None, "the fidelity gate was skipped (--no-verify); accepted with "
                                 "--allow-unverified: its figures include the emulator's own error"))
    else:
        out.append(Finding(False, "the fidelity gate was skipped (--no-verify): run it again without "
                                  "--no-verify (labs/README.md, 'When the fidelity gate refuses'), or "
                                  "the instructor accepts it with --allow-unverified"))
    cpu = m.get("host_cpu") or {}
    if cpu.get("saturated"):
        out.append(Finding(None, f"the CPUs were saturated {cpu.get('saturated_share', 0):.0%} of the "
                                 "time: latency and startup figures include emulator contention"))
    if (m.get("loaded_rtt") or {}).get("ok") is False:
        out.append(Finding(None, "loaded RTT left the plan during the arms (loaded_rtt_summary.csv)"))
    return out


def _tables(lab: Lab, d: Path) -> list[Finding]:
    """Each required table present with rows; every arm has sessions; no segment failed its hash."""
    out = [] if (d / "plan.json").is_file() else [Finding(False, "lacks plan.json: the run folder is incomplete")]
    rows: dict[str, list[dict]] = {}
    for t in lab.tables:
        path = table_path(d, t)
        if not path.exists():
            out.append(Finding(False, f"lacks {t}.csv: the run folder is incomplete (copy the whole folder)"))
            continue
        try:
            rows[t] = read_rows(path)
        except LogError as e:
            out.append(Finding(False, f"{path.name} cannot be read: {e}"))
            continue
        if not rows[t]:
            out.append(Finding(False, f"{path.name} has no rows"))
    sessions = rows.get("sessions") or []
    for arm in lab.arms:
        mine = [s for s in sessions if s.get("arm") == arm]
        if sessions and not mine:
            out.append(Finding(False, f"sessions.csv has no session of arm {arm!r}"))
        elif mine and not any(s.get("status") == "ok" for s in mine):
            out.append(Finding(False, f"no session of arm {arm!r} played to its end (status ok)"))
    if sessions:
        try:
            bad = sum(int(float(s.get("hash_failures") or 0)) for s in sessions)
        except ValueError as e:
            return out + [Finding(False, f"sessions.csv: hash_failures is not a count: {e}")]
        ok = sum(s.get("status") == "ok" for s in sessions)
        out.append(Finding(bad == 0, f"{len(sessions)} sessions, {ok} played to the end, "
                                     f"{bad} segments failed their SHA-256 check"))
    if not out:
        out.append(Finding(True, f"tables {', '.join(lab.tables)} present with rows"))
    return out


def _summary(lab: Lab, run_dir: Path, m: dict, folders: list[Path]) -> list[Finding]:
    from ocalab.registry import scenario_module
    sc = scenario_module(lab.scenario).SCENARIO
    saved = read_rows(run_dir / "summary.csv")
    if not saved:
        return [Finding(False, "summary.csv is missing or empty: run `ocalab report` on the folder")]
    missing_cols = [c for c in (*sc.key, *lab.figures) if c not in saved[0]]
    missing_arms = [a for a in lab.arms if a not in {r.get(sc.key[0]) for r in saved}]
    if missing_cols or missing_arms:
        lacks = [f"the columns {', '.join(missing_cols)}"] * bool(missing_cols) + \
                [f"the arms {', '.join(missing_arms)}"] * bool(missing_arms)
        return [Finding(False, f"summary.csv lacks {' and '.join(lacks)}")]
    try:
        rebuilt = rebuild_summary(run_dir, folders, sc)
    except Exception as e:  # the scenario's summary of these tables failed: say why, refuse
        return [Finding(False, f"the summary cannot be rebuilt from the tables: {type(e).__name__}: {e} "
                               "(`ocalab report --traceback RUN_DIR` shows where)")]
    diffs = compare_summaries(saved, rebuilt, sc.key)
    if diffs:
        return [Finding(False, "summary.csv does not match the run's own tables (edited by hand?): "
                               + "; ".join(diffs[:5]) + (f"; and {len(diffs) - 5} more" if len(diffs) > 5 else ""))]
    return [Finding(True, f"summary.csv ({len(saved)} rows, arms {', '.join(lab.arms)}) "
                          "rebuilt from the tables gives the same figures")]


def rebuild_summary(run_dir: Path, folders: list[Path], sc) -> list[dict]:
    """summary.csv as `ocalab report` would rebuild it from the tables, computed in a temporary
    copy of the folders' files (figures included); for a series, the medians over the repeats."""
    from harness import loadedrtt
    from harness.repeats import medians
    summaries = []
    with tempfile.TemporaryDirectory(prefix="ocalab-lab-") as tmp:
        for f in folders:
            copy = Path(tmp) / f.name
            copy.mkdir()
            for p in f.iterdir():
                if p.is_file():
                    shutil.copy2(p, copy / p.name)
            with contextlib.redirect_stdout(io.StringIO()):
                sc.summarize(copy)
                loadedrtt.annotate(copy)
            summaries.append(read_rows(copy / "summary.csv"))
    return summaries[0] if folders == [run_dir] else medians(summaries, sc.key)


def compare_summaries(saved: list[dict], rebuilt: list[dict], key: tuple[str, ...]) -> list[str]:
    """Every saved figure that differs from the rebuilt one (numbers within 1e-9). Pure."""
    new = {tuple(str(r.get(k)) for k in key): r for r in rebuilt}
    diffs = []
    for row in saved:
        k = tuple(str(row.get(c)) for c in key)
        other = new.get(k)
        if other is None:
            diffs.append(f"row {' '.join(k)} is not in the tables")
            continue
        for col, value in row.items():
            if col not in key and not same_value(value, other.get(col)):
                diffs.append(f"{' '.join(k)} {col} = {value} (the tables give {other.get(col)})")
    return diffs


def same_value(a, b) -> bool:
    if a == b:
        return True
    try:
        x, y = float(a), float(b)
    except (TypeError, ValueError):
        return False
    return (math.isnan(x) and math.isnan(y)) or math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-9)


# -- figures beside the reference -----------------------------------------------------------------

def figure_table(lab: Lab, rows: list[dict], key: tuple[str, ...], ref: list[dict] | None = None) -> list[str]:
    """A markdown table: one line per figure, one column per summary row (key values joined);
    with `ref`, each cell reads 'value (ref x)'. Pure."""
    def k(r: dict) -> str:
        return " ".join(str(r.get(c)) for c in key)
    refs = {k(r): r for r in ref or []}
    lines = ["| figure | " + " | ".join(k(r) for r in rows) + " |", "|---" * (len(rows) + 1) + "|"]
    for fig in lab.figures:
        cells = []
        for r in rows:
            cell = _fmt(r.get(fig))
            if ref is not None:
                theirs = refs[k(r)].get(fig) if k(r) in refs else None
                cell += " (= ref)" if same_value(r.get(fig), theirs) else f" (ref {_fmt(theirs) or '-'})"
            cells.append(cell)
        lines.append(f"| {fig} | " + " | ".join(cells) + " |")
    return lines


def _fmt(x) -> str:
    return "" if x is None else str(x)


def reference_rows(lab: Lab, results_dir: Path = RESULTS_DIR) -> tuple[dict, list[dict]]:
    d = results_dir / lab.scenario
    return json.loads((d / "manifest.json").read_text()), read_rows(d / "summary.csv")


def reference_block(lab: Lab, results_dir: Path = RESULTS_DIR) -> str:
    """The lab's reference figures as markdown, between REF_BEGIN and REF_END."""
    from ocalab.registry import scenario_module
    m, rows = reference_rows(lab, results_dir)
    key = scenario_module(lab.scenario).SCENARIO.key
    argv = m["argv"][m["argv"].index("run"):]
    if "--out" in argv:  # where the reference was written says nothing about how it was made
        del argv[argv.index("--out"):argv.index("--out") + 2]
    what = "medians over its repeats" if "series" in m else "one run"
    lines = [REF_BEGIN, f"From `results/{lab.scenario}/summary.csv` (`ocalab {' '.join(argv)}`, {_size(m)}, "
             f"commit {str(m['git']['commit'])[:7]}; {what}):", "", *figure_table(lab, rows, key), REF_END]
    return "\n".join(lines)


def render(text: str, block: str) -> str:
    """`text` with its reference block replaced by `block`. Pure."""
    start, end = text.find(REF_BEGIN), text.find(REF_END)
    if start < 0 or end < start:
        raise LabError("the lab has no reference block (REF_BEGIN ... REF_END)")
    return text[:start] + block + text[end + len(REF_END):]


# -- `ocalab lab ...` -----------------------------------------------------------------------------

def command(a) -> int:
    """`ocalab lab list|show|check|render`: exit 0, 1 when a check refuses, 2 on a bad lab name."""
    try:
        if a.lab_cmd == "list":
            for lab in all_labs():
                print(f"{lab.name:10} {lab.title}\n{'':10} {lab.command}")
            return 0
        if a.lab_cmd == "render":
            for lab in all_labs():
                lab.path.write_text(render(lab.path.read_text(), reference_block(lab)))
                print(f"rendered the reference figures of {lab.path}")
            return 0
        lab = by_name(a.lab)
    except LabError as e:
        print(f"ocalab lab: {e}")
        return 2
    if a.lab_cmd == "show":
        print(lab.path.read_text())
        return 0
    return _check_command(lab, Path(a.run_dir), a.allow_unverified)


def _check_command(lab: Lab, run_dir: Path, allow_unverified: bool) -> int:
    findings = check_run(lab, run_dir, allow_unverified)
    mark = {True: "ok  ", False: "FAIL", None: "note"}
    print(f"lab {lab.name}: checking {run_dir}")
    for f in findings:
        print(f"  {mark[f.ok]} {f.text}")
    passed = all(f.ok is not False for f in findings)
    if passed:
        from ocalab.registry import scenario_module
        key = scenario_module(lab.scenario).SCENARIO.key
        print(f"figures of this run beside the reference (results/{lab.scenario}, full size):")
        print("\n".join(figure_table(lab, read_rows(run_dir / "summary.csv"), key, reference_rows(lab)[1])))
    print(f"lab {lab.name}: {'PASSED' if passed else 'NOT PASSED'}")
    return 0 if passed else 1
