"""`ocalab bench scale`: how many concurrent viewers this machine emulates while QoE is still
decided by the network and not by the CPU.

One verified `metro` network (relay backend here) with steady-state embedded OCAs; then steps of
N concurrent viewers (STEPS, or QUICK_STEPS), spread over the viewer hosts, each step with fresh
players on the same services. Per step it records (bench.scale_verdict judges):
- QoE of the step's sessions against the smallest step;
- loaded RTT error per link class: every fidelity pair pings at PING_INTERVAL_S while the step
  plays (median RTT against the plan);
- CPU seconds per component (relays, OVS, OCAs, origin, players, controller, control plane) from
  /proc of the processes this run started (players: their rusage when reaped), and the host's;
- relay CPU per Gbit/s forwarded (kernel byte counters of every relayed link).

Scaling, stated in the result: the bitrate ladder is the catalog's divided by SCALE's bitrate divisor so
that the step's aggregate demand fits what 2 cores can switch; access links get
ACCESS_HEADROOM x the top rung per viewer, so the network has room and only the emulator's
CPU can degrade QoE. Writes scale-<timestamp>.json (via bench.run), scale-<start>.png and the
run's logs in scale-logs-<start>/ (git ignores them).
"""
from __future__ import annotations

import math
import os
import resource
import time
from pathlib import Path

from bench.scale_verdict import (COMPONENTS, component_of, headline, qoe, relay_cpu_per_gbit,
                                 step_verdict)
from emulation.loaded import pair_rows_in, rtt_by_class
from harness import progress
from harness.loadedrtt import Pinger
from bench.links import proc_cpu_s
from contracts.catalog import LADDER_KBPS
from harness.modelscale import ModelScale
from emulation.fidelity import cpu_times

STEPS = (25, 50, 100, 200, 300, 400)
QUICK_STEPS = (6, 24)
SCALE = ModelScale(bitrate_divisor=10)  # the ladder / 10 (harness.modelscale); viewers are the steps
ACCESS_HEADROOM = 2.0
# a session plays SEGMENTS x 4 s with at most MAX_BUFFER_S buffered, so it fetches at the media
# rate and the step's viewers overlap for most of it; starts spread over RAMP_S
SEGMENTS, RAMP_S, MAX_BUFFER_S = 12, 8.0, 8.0
ABR = "tput"  # BBA would never leave its reservoir with an 8 s buffer; throughput ABR reads the network
CATALOG = {"seed": 1, "n_titles": 40, "duration_s": 48}
PING_INTERVAL_S = 0.2
CLK_TCK = os.sysconf("SC_CLK_TCK")


def ladder() -> tuple[int, ...]:
    return SCALE.ladder(LADDER_KBPS)


def plan_overrides(max_viewers: int, hosts: int) -> dict[str, str]:
    """metro overrides giving each access link room for its share of the largest step."""
    per_host = math.ceil(max_viewers / hosts)
    access_mbps = max(50, math.ceil(per_host * ladder()[-1] / 1000 * ACCESS_HEADROOM))
    return {"access_bw_mbps": str(access_mbps)}


def _proc_cpu_s(pid: int) -> float | None:
    """CPU seconds of a live process; None once it is gone."""
    try:
        return proc_cpu_s(pid)
    except OSError:
        return None


def _ovs_pids() -> list[int]:
    out = []
    for name in ("ovs-vswitchd", "ovsdb-server"):
        for d in ("/run/openvswitch", "/var/run/openvswitch"):
            p = Path(d) / f"{name}.pid"
            if p.exists():
                out.append(int(p.read_text().split()[0]))
                break
    return out


def cpu_by_component(groups, oca_names: set[str]) -> dict[str, float]:
    """CPU seconds so far of every live process the run started, summed per component."""
    out = {c: 0.0 for c in COMPONENTS}
    for group in groups:
        for label, proc in group.procs:
            comp = component_of(label, oca_names)
            if comp is not None and comp != "players" and (cpu := _proc_cpu_s(proc.pid)) is not None:
                out[comp] += cpu
    out["ovs"] = sum(_proc_cpu_s(p) or 0.0 for p in _ovs_pids())
    return out


def _host_cpu_s() -> tuple[float, float, float]:
    """(busy, total, steal) CPU seconds of all CPUs so far; steal (time the hypervisor gave this
    guest's CPUs to others) is part of busy."""
    total, idle, steal = cpu_times()
    return (total - idle) / CLK_TCK, total / CLK_TCK, steal / CLK_TCK


def run_step(net, svc, viewers: list[str], n: int, seed: int, oca_names: set[str]) -> dict:
    """Play n concurrent viewers (spread over `viewers` hosts) and measure the step."""
    from emulation.probes import link_counters
    from scenarios.logs import sessions
    counts = [n // len(viewers) + (i < n % len(viewers)) for i in range(len(viewers))]
    groups = [net.procs, svc.procs]
    cpu0, host0, kids0 = cpu_by_component(groups, oca_names), _host_cpu_s(), \
        resource.getrusage(resource.RUSAGE_CHILDREN)
    bytes0, t0 = link_counters(net), time.monotonic()
    tag = f"s{n}"
    procs = [svc.play(v, k, SEGMENTS, seed=seed * 1000 + i, tag=f"{tag}-{v}", ramp_s=RAMP_S,
                      max_wall_s=240, max_buffer_s=MAX_BUFFER_S)
             for i, (v, k) in enumerate(zip(viewers, counts)) if k]
    time.sleep(RAMP_S)  # RTT under load: while every viewer of the step plays
    loaded_from = time.time()  # judged until the first viewers run out of segments
    loaded = [(loaded_from, loaded_from + SEGMENTS * 4 - MAX_BUFFER_S - RAMP_S)]
    with Pinger(net, svc.logs / f"loaded-rtt-{tag}", PING_INTERVAL_S) as pings:
        svc.wait_players(procs, 300)
    kids1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu1, host1, bytes1 = cpu_by_component(groups, oca_names), _host_cpu_s(), link_counters(net)
    wall_s = time.monotonic() - t0
    rtt_rows = pair_rows_in(pings.samples, loaded)
    cpu = {c: round(cpu1[c] - cpu0[c], 2) for c in COMPONENTS}
    cpu["players"] = round(kids1.ru_utime + kids1.ru_stime - kids0.ru_utime - kids0.ru_stime, 2)
    relayed = sum(bytes1[k]["to_node_bytes"] + bytes1[k]["from_node_bytes"]
                  - bytes0[k]["to_node_bytes"] - bytes0[k]["from_node_bytes"]
                  for k in bytes1 if k in net._relay_ports)
    sess = [s for v, k in zip(viewers, counts) if k
            for s in sessions(svc.logs / f"sessions-{tag}-{v}.jsonl")]
    busy_s, total_s, steal_s = (b - a for a, b in zip(host0, host1))
    return {"viewers": n, "wall_s": round(wall_s, 1), "qoe": qoe(sess), "rtt": rtt_by_class(rtt_rows),
            "cpu_s": cpu, "host_busy_frac": round(busy_s / total_s, 3) if total_s else None,
            "host_steal_frac": round(steal_s / total_s, 3) if total_s else None,
            "relayed_gbit": round(relayed * 8 / 1e9, 3),
            "relay_cpu_s_per_gbit": relay_cpu_per_gbit(cpu["relays"], relayed)}


def run_bench_scale(out_dir: Path, quick: bool = False) -> dict:
    """Build metro, ramp the steps, judge them; the result dict (bench.run saves it)."""
    from emulation.build import Network, Options
    from harness.sizing import tier_rules
    from harness.services import STEADY_STATE, ServiceOptions, Services
    from topologies.catalog import by_name
    steps = QUICK_STEPS if quick else STEPS
    base_plan = by_name("metro", {})
    hosts = len(base_plan.nodes_of(role="viewer"))
    overrides = plan_overrides(max(steps), hosts)
    plan = by_name("metro", overrides)
    viewers = [v.name for v in plan.nodes_of(role="viewer")]
    oca_names = {n.name for n in plan.nodes_of(role="oca")}
    stamp = time.strftime('%Y%m%dT%H%M%S')  # logs and figure of this run; earlier ones stay
    work = Path(out_dir) / f"scale-logs-{stamp}"
    catalog = {**CATALOG, "ladder_kbps": list(ladder())}
    result: dict = {"steps_planned": list(steps), "plan_overrides": overrides, "viewer_hosts": hosts,
                    "scaling": {"ladder_kbps": list(ladder()), "ladder_divisor": SCALE.bitrate_divisor,
                                "initcwnd": SCALE.initcwnd(),
                                "access_headroom": ACCESS_HEADROOM, "segments": SEGMENTS,
                                "ramp_s": RAMP_S, "max_buffer_s": MAX_BUFFER_S, "abr": ABR,
                                "catalog": CATALOG}, "steps": []}
    started = time.monotonic()
    with Network(plan, Options(work_dir=work / "net", label="bench-scale", initcwnd=SCALE.initcwnd())) as net:
        result["network"] = net.summary()
        svc = Services(net, work / "services", ServiceOptions(
            arm="embedded", catalog=catalog, capacity_rules={t: str(r) for t, r in tier_rules({}).items()}, stage_tiers=STEADY_STATE,
            history={"seed": 1}, fill_segments_per_title=SEGMENTS, abr=ABR))
        try:
            svc.start()
            for n in steps:
                print(f"bench scale: {n} concurrent viewers ...", flush=True)
                progress.phase(f"{n} concurrent viewers")
                step = run_step(net, svc, viewers, n, seed=n, oca_names=oca_names)
                result["steps"].append(step)
                step["verdict"] = step_verdict(step, result["steps"][0])
                print(_step_line(step), flush=True)
        finally:
            svc.stop()
    best = headline(result["steps"])
    result.update(headline_viewers=best, target_viewers=300, elapsed_s=round(time.monotonic() - started, 1),
                  ok=best is not None and best >= min(300, max(steps)))
    result["figure"] = f"scale-{stamp}.png"
    _figure(result, Path(out_dir) / result["figure"])
    print(f"bench scale: QoE and loaded RTT hold up to {best} concurrent viewers "
          f"(target 300; steps {list(steps)})")
    return {"scale": result}


def _step_line(step: dict) -> str:
    q, v = step["qoe"], step["verdict"]
    worst = max((abs(c["err_max_ms"] or 0) for c in step["rtt"].values()), default=0)
    return (f"  {step['viewers']:>4} viewers: startup p50 {q['startup_p50_s']} s, rebuffer "
            f"{q['rebuffer_ratio']}, {q['mean_kbps']} kbit/s, worst loaded RTT error {worst} ms, "
            f"host busy {step['host_busy_frac']} (stolen {step['host_steal_frac']}), relays {step['cpu_s']['relays']} CPU-s "
            f"({step['relay_cpu_s_per_gbit']} per Gbit) -> {'ok' if v['ok'] else '; '.join(v['reasons'])}")


def _figure(result: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    steps = result["steps"]
    if not steps:
        return
    xs = [s["viewers"] for s in steps]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    a1.plot(xs, [s["qoe"]["startup_p50_s"] for s in steps], "o-", label="startup p50 (s)")
    a1.plot(xs, [s["qoe"]["mean_kbps"] / max(1, steps[0]["qoe"]["mean_kbps"] or 1) for s in steps],
            "s-", label="mean bitrate / base")
    a1.set_xlabel("concurrent viewers")
    a1.legend()
    bottom = [0.0] * len(xs)
    for comp in result["steps"][0]["cpu_s"]:
        vals = [s["cpu_s"][comp] / max(1.0, s["wall_s"]) for s in steps]
        a2.bar([str(x) for x in xs], vals, bottom=bottom, label=comp)
        bottom = [b + v for b, v in zip(bottom, vals)]
    a2.set_ylabel("cores (CPU-s per wall s)")
    a2.set_xlabel("concurrent viewers")
    a2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
