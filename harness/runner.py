"""One way to run a scenario: plan, a new run folder, one verified network, the scenario's arms,
tidy tables, manifest.json and the summary. Scenario modules supply only what differs (a
`Scenario`); this module owns the set-up, `--repeat N` and the provenance.

Layout: with `--repeat 1` the run folder holds the tables itself. With `--repeat N` it is a
series: one network build and one fidelity gate, then `rep1/ ... repN/`, each a complete run
folder (rebuilt alone by `ocalab report`), and at the top summary.csv with every summary figure's
spread over the repeats and whether each seed-stable figure was identical (harness.repeats).

A run folder holds what the analysis reads: manifest.json, plan.json, fidelity.csv, host_cpu.csv,
loaded_rtt.csv.gz and loaded_rtt_summary.csv (every link class's RTT while the arms play,
harness.loadedrtt), the scenario's tables (<name>.csv, or <name>.csv.gz after `ocalab report --pack`; read them via
harness.rundir.table_path), summary.csv, figures, logs/ (network) and arms/<arm>/ (deployment.json,
logs/: access, fill, session, chunk and steering logs). The OCAs' stored objects and the token
key are not in it: harness.services keeps them in a scratch folder removed when the arm stops.
"""
from __future__ import annotations

import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from harness import hostload, loadedrtt, progress
from harness.annotations import annotate
from harness.hostload import CpuSampler, warning
from harness.overrides import parse_overrides
from harness.rundir import git_info, new_run_dir, write_csv, write_manifest


@dataclass(frozen=True)
class Scenario:
    """What a scenario module supplies. `body(net, run_dir, cfg, seed, tables)` runs every arm on
    the built network and appends rows to `tables` (a dict of the names in `tables`), and may
    return a dict of further manifest.json entries (e.g. a seeded schedule);
    `summarize(run_dir)` rebuilds summary.csv and figures from saved tables (no root);
    `key` names the summary columns that identify a row; `stable` the summary columns that
    must be identical across runs with one seed (non-timing figures)."""
    name: str
    settings: Callable[[bool], dict]
    tables: tuple[str, ...]
    body: Callable
    summarize: Callable[[Path], list[dict]]
    format_table: Callable[[list[dict]], str]
    key: tuple[str, ...] = ("arm",)
    stable: tuple[str, ...] = ()
    manifest: Callable[[dict], dict] = field(default=lambda cfg: {})
    check_plan: Callable | None = None
    default_abr: str = "bba"  # the players' ABR unless `ocalab run --abr` says otherwise
    tls: bool = False  # the scenario passes cfg["tls"] to its services: it runs https by default
    # (`ocalab run --tls off`: plain HTTP, the ablation); False: plain HTTP only, --tls on refused


def run(a, sc: Scenario) -> int:
    """`ocalab run <scenario>`: returns the exit code."""
    from emulation.build import Network, Options
    from topologies.catalog import by_name
    from emulation.fidelity import as_rows
    from emulation.ledger import install_signal_handlers
    repeat = getattr(a, "repeat", 1)
    if repeat < 1:
        raise SystemExit(f"ocalab run: --repeat must be at least 1, got {repeat}")
    tls = tls_choice(getattr(a, "tls", None), sc)
    install_signal_handlers()
    overrides = parse_overrides(a.set)
    cfg = {**sc.settings(a.quick), "abr": getattr(a, "abr", None) or sc.default_abr,
           "miss": getattr(a, "miss", None) or "content_miss", "capacity": _capacity(overrides),
           "tls": tls, "routing": getattr(a, "routing", "static")}
    plan = by_name(a.name, scaled_overrides(cfg, overrides))
    if sc.check_plan is not None:
        sc.check_plan(plan)  # a clear PlanError before any namespace exists
    top = new_run_dir(sc.name, a.out)
    (top / "plan.json").write_text(plan.to_json())
    if a.no_verify:
        print("WARNING: fidelity gate skipped (--no-verify); results are marked unverified")
    net = Network(plan, Options(link_backend=a.link_backend, datapath=a.datapath, verify=not a.no_verify,
                                work_dir=top / "logs" / "net", label=sc.name,
                                routing=getattr(a, "routing", "static"), initcwnd=scaled_initcwnd(cfg)))
    # the code that runs is the code at the start: a file edited mid-run must not mark it dirty
    common = dict(git=git_info(), scenario=sc.name, seed=a.seed, quick=a.quick, settings=cfg, plan=plan.name,
                  plan_hash=plan.plan_hash(), fidelity_verified=not a.no_verify,
                  model_scale=cfg.get("model_scale") or {"bitrate_divisor": 1, "viewer_factor": 1},
                  **sc.manifest(cfg))
    children: list[Path] = []
    failed_summaries: list[Path] = []
    started = time.time()
    title = f"{sc.name}{' --quick' if a.quick else ''}{f' x{repeat}' if repeat > 1 else ''}"
    try:
        with progress.tracking(title, f"{sc.name}:{'quick' if a.quick else 'full'}:{repeat}"):
            _run_repeats(net, top, sc, cfg, a.seed, repeat, common, children, failed_summaries,
                         getattr(a, "on_network", None))
    except BaseException as exc:  # the failure's provenance, then the error goes on
        if net.fidelity:
            write_csv(top / "fidelity.csv", as_rows(net.fidelity))
        write_manifest(top, **common, network=net.summary(), status="failed",
                       error=f"{type(exc).__name__}: {exc}"[:4000], started=started, ended=time.time())
        raise
    if repeat > 1:
        write_manifest(top, **common, network=net.summary(), repeats=repeat, series=[c.name for c in children],
                       started=started, ended=time.time(), status="ok")
        if not failed_summaries:
            from harness.repeats import summarize_series
            print(summarize_series(top, sc))
    print(f"run folder: {top}")
    return 1 if failed_summaries else 0


def _run_repeats(net, top: Path, sc: Scenario, cfg: dict, seed: int, repeat: int, common: dict,
                 children: list[Path], failed_summaries: list[Path], on_network=None) -> None:
    """Build and verify the network, then every repeat on it. `on_network(net, top)`, if given,
    returns a context manager held while the network is up (the CLI's `--web` view)."""
    from contextlib import nullcontext
    from emulation.fidelity import as_rows
    progress.phase("building the network, fidelity gate")
    with net, (on_network(net, top) if on_network else nullcontext()):
        fidelity = as_rows(net.fidelity)
        write_csv(top / "fidelity.csv", fidelity)
        for k in range(1, repeat + 1):
            progress.phase(f"repeat {k}/{repeat}" if repeat > 1 else "")
            children.append(_repeat(net, top, sc, cfg, seed, k, repeat, common, fidelity, failed_summaries))


def scaled_overrides(cfg: dict, overrides: dict[str, str]) -> dict[str, str]:
    """The plan's `--set` overrides with the scenario's model scale applied to the shared link
    rates the user did not set (harness.modelscale); recorded in cfg["model_scale"]."""
    import dataclasses
    from harness.modelscale import QUEUE_FIELD, SHARED_LINK_FIELDS, from_settings
    from topologies.catalog import MetroParams
    scale = from_settings(cfg)
    out = scale.plan_overrides(dataclasses.asdict(MetroParams()), overrides)
    if "model_scale" in cfg:
        cfg["model_scale"]["derived"].update(
            {k: {"reference": getattr(MetroParams(), k), "scaled": float(out[k]),
                 **({"explicit": True} if k in overrides else {})}
             for k in (*SHARED_LINK_FIELDS, QUEUE_FIELD) if k in out})
    return out


def scaled_initcwnd(cfg: dict) -> int | None:
    """TCP's initial window for the hosts under the scenario's model scale (None: the kernel's),
    recorded in cfg["model_scale"]."""
    from harness.modelscale import KERNEL_INITCWND, from_settings
    iw = from_settings(cfg).initcwnd()
    if iw is not None and "model_scale" in cfg:
        cfg["model_scale"]["derived"]["initcwnd"] = {"reference": KERNEL_INITCWND, "scaled": iw}
    return iw


def tls_choice(arg: str | None, sc: Scenario) -> bool:
    """`--tls on|off` or None (not given: https in the scenarios that honour it, else plain HTTP);
    on for a scenario that does not honour it is refused before any namespace exists."""
    tls = {"on": True, "off": False, None: sc.tls}[arg]
    if tls and not sc.tls:
        raise SystemExit(f"ocalab run: scenario {sc.name} does not support --tls on yet")
    return tls


def _capacity(overrides: dict[str, str]) -> dict[str, str]:
    """tier -> capacity rule (harness.sizing), taking the capacity keys out of `overrides` (the
    rest are plan overrides); SystemExit names a bad rule before any namespace exists."""
    from harness.sizing import CAPACITY_KEYS, tier_rules
    mine = {k: overrides.pop(k) for k in list(overrides) if k in CAPACITY_KEYS}
    try:
        return {tier: str(rule) for tier, rule in tier_rules(mine).items()}
    except ValueError as exc:
        raise SystemExit(f"ocalab run: --set {exc}") from None


def _repeat(net, top: Path, sc: Scenario, cfg: dict, seed: int, k: int, repeat: int, common: dict,
            fidelity: list[dict], failed_summaries: list[Path]) -> Path:
    """Repeat k of the arms on the built network: tables, manifest and summary in its folder."""
    run_dir = top if repeat == 1 else _child(top, k, net.plan, fidelity)
    if repeat > 1:
        print(f"{sc.name}: repeat {k}/{repeat}", flush=True)
    t0 = time.time()
    tables: dict[str, list] = {t: [] for t in sc.tables}
    with CpuSampler() as cpu, loadedrtt.Pinger(net, run_dir / "logs" / "loaded-rtt") as pings:
        extra = sc.body(net, run_dir, cfg, seed, tables) or {}
    for name, rows in tables.items():
        write_csv(run_dir / f"{name}.csv", rows)
    write_csv(run_dir / "host_cpu.csv", cpu.rows)
    loadedrtt.write_samples(run_dir, pings.samples)
    loaded = loadedrtt.verdict(loadedrtt.judge(pings.samples, tables.get("sessions", [])))
    load = hostload.run_summary(cpu.rows, loadedrtt.serve_windows(tables.get("sessions", [])))
    write_manifest(run_dir, **common, **extra, network=net.summary(), repeat_index=k, repeats=repeat,
                   started=t0, ended=time.time(), status="ok", host_cpu=load, loaded_rtt=loaded)
    try:
        print(sc.format_table(sc.summarize(run_dir)), flush=True)
    except Exception:  # a bug in the pure summary must not cost the saved data its status
        traceback.print_exc()
        print(f"ocalab: {run_dir}: the data is saved, but its summary failed (above); "
              f"`ocalab report {run_dir}` builds it again", file=sys.stderr, flush=True)
        failed_summaries.append(run_dir)
    print(loadedrtt.line(annotate(run_dir)[0] or loaded), flush=True)
    if (w := warning(load)) is not None:
        print(w, flush=True)
    return run_dir


def _child(top: Path, k: int, plan, fidelity: list[dict]) -> Path:
    d = top / f"rep{k}"
    d.mkdir()
    (d / "logs").mkdir()
    (d / "plan.json").write_text(plan.to_json())
    write_csv(d / "fidelity.csv", fidelity)
    return d
