"""The columns every run's summary.csv gets after its scenario's own summary, in one place for the
runner, `ocalab report` and `ocalab lab check`: loaded RTT (harness.loadedrtt) and host load
of the serve phase (harness.hostload), per arm. Both are judged again from the folder's saved
samples, so re-running gives the same figures and never adds a column twice."""
from __future__ import annotations

from pathlib import Path

from harness import hostload, loadedrtt


def annotate(run_dir: Path) -> tuple[dict | None, dict | None]:
    """(loaded-RTT verdict, host_cpu summary) of the folder, each None when it has no samples."""
    return loadedrtt.annotate(run_dir), hostload.annotate(run_dir)
