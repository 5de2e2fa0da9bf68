"""The live progress line: its text, the duration history behind its estimate, and that it draws
nothing and writes nothing when not on a terminal."""
import io
import json

from harness import progress


def test_status_line_says_phase_elapsed_and_what_is_left():
    assert progress.clock(83) == "1:23" and progress.clock(3723) == "1:02:03" and progress.clock(-5) == "0:00"
    line = progress.status_line("placement --quick", "arm ixp", 83, 213)
    assert line == "placement --quick · arm ixp · 1:23 elapsed · about 2:10 left"
    assert progress.status_line("fill", "", 10, None).endswith("elapsed · no estimate yet")
    assert progress.status_line("fill", "", 100, 90).endswith("0:10 longer than last time")


def test_durations_round_trip_and_bad_files_give_no_estimate(tmp_path):
    path = tmp_path / "ocalab" / "durations.json"
    assert progress.last_duration_s("placement:quick:1", path) is None
    progress.record_duration("placement:quick:1", 131.26, path)
    progress.record_duration("fill:full:1", 800, path)
    assert progress.last_duration_s("placement:quick:1", path) == 131.3
    assert json.loads(path.read_text()) == {"fill:full:1": 800, "placement:quick:1": 131.3}
    path.write_text("[1, 2]")
    assert progress.last_duration_s("fill:full:1", path) is None
    progress.record_duration("fill:full:1", 5, path)  # a file it cannot read is replaced
    assert progress.last_duration_s("fill:full:1", path) == 5


def test_not_on_a_terminal_nothing_is_drawn_or_recorded(tmp_path, monkeypatch, capsys):
    path = tmp_path / "durations.json"
    monkeypatch.setattr(progress, "DURATIONS", path)
    monkeypatch.setattr("sys.stderr", io.StringIO())
    with progress.tracking("placement", "placement:quick:1"):
        progress.phase("arm ixp")
        print("placement: arm ixp ...")
    assert capsys.readouterr().out == "placement: arm ixp ...\n"
    assert not path.exists()


def test_on_a_terminal_the_duration_is_recorded(tmp_path, monkeypatch):
    path = tmp_path / "durations.json"
    monkeypatch.setattr(progress, "DURATIONS", path)
    with progress.tracking("steering", "steering:quick:1", enabled=True):
        progress.phase("policy nearest")
    assert progress.last_duration_s("steering:quick:1", path) is not None


def test_a_bench_runs_under_the_live_line_and_writes_its_json(tmp_path, monkeypatch):
    """`ocalab bench` tracks its work like `ocalab run`: titled by bench and size."""
    import argparse
    from bench import run as bench_run
    seen = {}

    def fake(out_dir, quick):
        seen.update(title=progress._state["title"], quick=quick)
        return {"fake": {"ok": True}}

    monkeypatch.setitem(bench_run.BENCHES, "cache", fake)
    monkeypatch.setattr("sys.stderr", io.StringIO())
    code = bench_run.run_bench(argparse.Namespace(what="cache", quick=True, out=tmp_path))
    assert code == 0 and seen == {"title": "bench cache --quick", "quick": True}
    [written] = tmp_path.glob("cache-*.json")
    assert json.loads(written.read_text())["fake"] == {"ok": True}
