"""bench/ as one package: the dispatcher, its choices, the shared statistics, module sizes,
no import cycle and no pytest run from product code. Pure; no server, no namespace."""
import ast
import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from bench import links, run
from bench.reliability import COVERED_BY_TESTS
from ocalab.cli import build_parser

BENCH = Path(run.__file__).resolve().parent
REPO = BENCH.parent


def test_bench_choices_are_the_dispatch_table(capsys):
    assert build_parser().parse_args(["bench", "scale", "--quick"]).what == "scale"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["bench", "scales"])
    assert "invalid choice: 'scales' (choose from 'links', 'oca', 'reliability', 'cache', " \
        "'scale', 'players')" in capsys.readouterr().err
    assert list(run.BENCHES) == ["links", "oca", "reliability", "cache", "scale", "players"]


@pytest.mark.parametrize("section, status", [({"x": 1}, 0), ({"ok": True}, 0),
                                             ({"ok": False}, 1)])
def test_run_bench_saves_sections_and_fails_only_on_ok_false(tmp_path, monkeypatch, section,
                                                             status):
    monkeypatch.setitem(run.BENCHES, "oca", lambda out_dir, quick: {"oca": section})
    assert run.run_bench(SimpleNamespace(what="oca", out=tmp_path, quick=True)) == status
    saved = json.loads(next(tmp_path.glob("oca-*.json")).read_text())
    assert saved["oca"] == section and saved["bench"] == "oca" and saved["quick"] is True
    assert {"git", "versions", "started"} <= set(saved)


def test_rtt_summary_uses_the_linear_percentile():
    s = links._rtt_summary([20.0, 21.0, 22.0, 23.0], 20.0, 5)
    assert (s["rtt_p50_ms"], s["err_p50_ms"], s["err_p99_ms"]) == (21.5, 1.5, 2.97)
    assert (s["pings_sent"], s["pings_received"], s["rtt_min_ms"]) == (5, 4, 20.0)


def _bench_imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            mods = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            mods = [a.name for a in node.names]
        else:
            continue
        names |= {m.split(".")[1] for m in mods if m.startswith("bench.") and m.count(".") == 1}
    return names


def test_bench_modules_import_no_cycle():
    graph = {p.stem: _bench_imports(p) for p in BENCH.glob("*.py")}
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        if state.get(node) == 1:
            raise AssertionError(f"import cycle: {' -> '.join(trail + [node])}")
        if state.get(node) is None:
            state[node] = 1
            for dep in graph.get(node, ()):
                visit(dep, trail + [node])
            state[node] = 2
    for node in graph:
        visit(node, [])
    assert "reliability" not in graph["reliability_fuzz"]


def test_bench_modules_are_short_and_run_no_pytest():
    for path in BENCH.glob("*.py"):
        text = path.read_text()
        assert len(text.splitlines()) < 500, path.name
        assert not re.search(r"[\"']pytest[\"']|import pytest", text), f"{path.name} runs pytest"


def test_checks_left_to_the_test_suite_name_real_tests():
    for test in COVERED_BY_TESTS.values():
        file, _, name = test.partition("::")
        text = (REPO / file).read_text()
        assert not name or f"def {name}(" in text, test


def test_burst_excess_is_the_median_of_each_rounds_slowest_flow():
    from bench.newflows import burst_excess_ms
    rounds = [[7.1, 7.4, 7.2], [7.0, 9.9, 7.1], [7.2, 7.3, 7.6]]  # one round hit by noise
    assert burst_excess_ms(rounds, 7.0) == 0.6
    assert burst_excess_ms([[8.5, 8.6]] * 3, 7.0) == 1.6  # every round slow: a real cost


WRK_OUT = """Running 2s test @ https://127.0.0.1:41234/v/t0000/5800/0
  2 threads and 8 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    40.12ms    5.10ms  60.00ms   70.00%
  393 requests in 2.00s, 1.05GB read
  Socket errors: connect 0, read 1, write 0, timeout 2
Requests/sec:    196.50
Transfer/sec:    537.60MB
"""


def test_parse_wrk_reads_requests_bytes_and_errors():
    from bench.oca_tls import parse_wrk
    assert parse_wrk(WRK_OUT) == {"requests": 393, "elapsed_s": 2.0,
                                  "bytes": int(1.05 * (1 << 30)), "n_errors": 3}
    with pytest.raises(ValueError, match="no summary"):
        parse_wrk("unable to connect to 127.0.0.1:1 Connection refused")


def test_bench_tls_is_for_oca_only(tmp_path):
    with pytest.raises(SystemExit, match="oca only"):
        run.run_bench(SimpleNamespace(what="cache", tls=True, quick=True, out=tmp_path))
