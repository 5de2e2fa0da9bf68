"""The host-load verdict judges the serve phase (the viewing sessions' seconds), per arm too."""
import csv

from harness import hostload


def _rows(busy: list[float], t0: float = 100.0) -> list[dict]:
    return [{"unix_s": t0 + i, "busy_frac": b, "steal_frac": 0.0} for i, b in enumerate(busy)]


def _write(path, rows):
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def test_a_busy_fill_outside_the_sessions_is_not_a_saturated_serve_phase():
    rows = _rows([1.0] * 20 + [0.3] * 20)  # seconds 100..119 saturated (fill), 120..139 quiet
    windows = {"embedded": [(120.0, 139.0)]}
    s = hostload.run_summary(rows, windows)
    assert s["saturated_share"] == 0.5 and s["serve"]["saturated_share"] == 0.0
    assert not s["saturated"] and hostload.warning(s) is None


def test_a_saturated_serve_phase_is_flagged_and_named():
    rows = _rows([0.3] * 20 + [0.99] * 2 + [0.3] * 18)
    s = hostload.run_summary(rows, {"ixp": [(118.0, 139.0)]})
    assert s["serve"]["seconds"] == 22 and s["serve"]["saturated_share"] == 0.091
    assert s["saturated"] and "9% of the serve phase" in hostload.warning(s)


def test_a_run_without_sessions_is_judged_on_the_whole_run():
    s = hostload.run_summary(_rows([1.0] * 2 + [0.1] * 8), {})
    assert "serve" not in s and s["saturated"] and "20% of the run" in hostload.warning(s)


def test_per_arm_shares_and_summary_columns(tmp_path):
    rows = _rows([1.0] * 10 + [0.2] * 10)
    _write(tmp_path / "host_cpu.csv", rows)
    _write(tmp_path / "sessions.csv", [
        {"arm": "origin", "started_unix": 100.0, "ended_unix": 109.0},
        {"arm": "ixp", "started_unix": 105.0, "ended_unix": 119.0},
        {"arm": "never", "started_unix": "", "ended_unix": ""}])
    _write(tmp_path / "summary.csv", [{"arm": "origin", "startup_s": "1.25"},
                                      {"arm": "ixp", "startup_s": "0.80"},
                                      {"arm": "embedded", "startup_s": "0.50"}])
    for _ in range(2):  # idempotent: the columns are replaced, never added twice
        s = hostload.annotate(tmp_path)
    with (tmp_path / "summary.csv").open(newline="") as f:
        out = {r["arm"]: r for r in csv.DictReader(f)}
    assert list(out["origin"]) == ["arm", "startup_s", "cpu_saturated_pct", "cpu_saturated"]
    assert out["origin"]["cpu_saturated_pct"] == "100.0" and out["origin"]["cpu_saturated"] == "True"
    assert out["ixp"]["cpu_saturated_pct"] == "33.3" and out["ixp"]["startup_s"] == "0.80"
    assert out["embedded"]["cpu_saturated_pct"] == ""  # an arm without sessions: blank, not 0
    assert s["serve"]["seconds"] == 20 and s["saturated"]


def test_annotate_without_samples_is_none(tmp_path):
    assert hostload.annotate(tmp_path) is None
