"""`ocalab bench links|oca|reliability|cache|scale|players` (oca --tls: bench.oca_tls): dispatch to one benchmark and save what it returns.

Figures go to results/bench/<what>-<timestamp>.json (never overwritten) with the git commit
and versions; nothing here asserts a speed. The exit status is 1 iff a returned section says
`ok: False` (the reliability and cache benches have pass/fail checks).
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

from harness.rundir import REPO, git_info, versions


def _links(out_dir: Path, quick: bool) -> dict:
    from bench.links import run_bench_links
    return run_bench_links(out_dir, quick=quick)


def _oca(out_dir: Path, quick: bool) -> dict:
    from bench.oca import run_bench_oca
    return {"oca": run_bench_oca(out_dir, quick=quick)}


def _oca_tls(out_dir: Path, quick: bool) -> dict:
    from bench.oca_tls import run_bench_oca_tls
    return {"oca_tls": run_bench_oca_tls(out_dir, quick=quick)}


def _reliability(out_dir: Path, quick: bool) -> dict:
    from bench.reliability import run_reliability
    return {"reliability": run_reliability(out_dir, quick=quick)}


def _cache(out_dir: Path, quick: bool) -> dict:
    from bench.cache import run_bench_cache
    return {"cache": run_bench_cache(out_dir, quick=quick)}


def _players(out_dir: Path, quick: bool) -> dict:
    from bench.players import run_bench_players
    return run_bench_players(out_dir, quick=quick)


def _scale(out_dir: Path, quick: bool) -> dict:
    from bench.scale import run_bench_scale
    return run_bench_scale(out_dir, quick=quick)


BENCHES: dict[str, Callable[[Path, bool], dict]] = {
    "links": _links, "oca": _oca, "reliability": _reliability, "cache": _cache,
    "scale": _scale, "players": _players}  # the CLI's choices


def run_bench(a) -> int:
    """Run benchmark a.what, write its JSON into a.out (default results/bench); exit status."""
    tls = getattr(a, "tls", False)
    if tls and a.what != "oca":
        raise SystemExit(f"ocalab bench: --tls applies to oca only, not {a.what}")
    name = f"{a.what}-tls" if tls else a.what
    out_dir = Path(a.out or REPO / "results" / "bench")
    out_dir.mkdir(parents=True, exist_ok=True)
    result: dict = {"bench": name, "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
                    "git": git_info(), "versions": versions(), "quick": a.quick}
    from harness import progress
    size = "quick" if a.quick else "full"
    with progress.tracking(f"bench {name}{' --quick' if a.quick else ''}", f"bench-{name}:{size}:1"):
        result.update((_oca_tls if tls else BENCHES[a.what])(out_dir, a.quick))
    path = out_dir / f"{name}-{time.strftime('%Y%m%dT%H%M%S')}.json"
    path.write_text(json.dumps(result, indent=1, default=str))
    print(f"wrote {path}")
    failed = any(isinstance(v, dict) and v.get("ok") is False for v in result.values())
    if failed:
        print(f"ocalab bench {a.what}: some pass/fail checks FAILED; see the report")
    return 1 if failed else 0
