"""The fidelity gate: measure every emulated link after the build and fail loudly if it is off.

For each L3 node attached to a link we ping a partner on the same layer-2 segment (the segment's
router, or any other node when the node is the router), plus `separating` pairs where those
leave a link's delay undetermined, so every link is crossed by at least one measured pair.
Expected RTT = 2 x the one-way delays along the layer-2 path; tolerance =
max(0.5 ms, 5% of expected) + 2 x jitter on the path.

The verdict is per LINK (emulation.linkfit): the pairs' minimum RTTs are solved for per-link
delays, and each link (or the smallest group of links the pairs can separate) is judged against
the tolerance of its own planned RTT; a relayed link that would need more calibration than
linkfit.COMPENSATION_BUDGET_MS fails too. Each pair must also stay within its own tolerance (the
check this gate had before links were judged). EmulationError names every refused link.

The verdict reads each pair's *minimum* RTT: ok iff |min - plan| <= tolerance (`error_ms`). A relay
never sends a frame more than 50 us early (emulation.relay.EARLY_NS), and host noise (relay wake-ups, a busy CPU, hypervisor steal)
only ever adds delay, so the fastest sample is the one noise leaves alone. A link slower than its
plan moves every sample, the fastest too; a faster one (or too much calibration) lets frames
arrive before the plan, which noise cannot do. Calibration likewise takes off each link's excess
as estimated from the floors (linkfit.calibrate), so a calibrated path's floor sits on the plan and its median above it by the
emulator's own spread (reported as median_rtt_ms, never judged).
Why not a quantile or the median: measured on this 2-core VM with a healthy 8 ms pair, bursts of
host noise moved the median 1.8 ms above the plan in one 0.4 s sample window of 20 while the
minimum stayed within 0.3 ms; with the lower quartile as the verdict, 4 healthy pairs of 6358
(158 saved runs) failed, one of them in a reference run on an idle machine.
The pure parts (pair choice, expectation, tolerance, parsing, verdict) run without root.
"""
from __future__ import annotations

import itertools
import re
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from typing import Callable, TypeVar

import numpy as np

from emulation.linkemu import EmulationError
from emulation.linkfit import all_determined, describe, judge_links, matrix, pinned, tolerance_ms
from topologies.plan import Plan, l2_segments
from topologies.routes import l2_path

# An idle built network keeps the CPUs about 1% busy: above this something else runs, so wait.
QUIET_BUSY_FRAC = 0.25
QUIET_WAIT_S = 60.0
# Host noise comes in bursts that pass, while a wrong delay line is off every time: pairs still off
# get SETTLE_ROUNDS more measurements after pauses of SETTLE_PAUSE_S x round, outlasting ~90 s.
SETTLE_ROUNDS = 6
SETTLE_PAUSE_S = 4.0
SETTLE_BUSY_FRAC = 0.10
LOW_QUANTILE = 0.25  # the verdict's statistic: the lower quartile of a pair's RTT samples
T = TypeVar("T")


@dataclass(frozen=True)
class Pair:
    src: str
    dst: str
    dst_addr: str
    links: tuple[str, ...]
    classes: tuple[str, ...]
    expected_rtt_ms: float
    jitter_ms: float


@dataclass(frozen=True)
class Measurement:
    pair: Pair
    median_rtt_ms: float
    min_rtt_ms: float
    samples: int
    low_rtt_ms: float  # the lower quartile (reported; the verdict reads the minimum: error_ms)
    tolerance_ms: float
    ok: bool


def _pair(plan: Plan, e, p) -> Pair:
    links = l2_path(plan, e.intf, p.intf)
    return Pair(e.node, p.node, p.addr, tuple(lk.name for lk in links), tuple(lk.cls for lk in links),
                round(2 * sum(lk.delay_ms for lk in links), 3), sum(lk.jitter_ms for lk in links))


def pairs(plan: Plan) -> list[Pair]:
    """Measurement pairs covering every link attached to an L3 node: per layer-2 segment, each
    node with its router (routers with every other L3 end), plus `separating` pairs wherever
    those leave a link's delay undetermined."""
    out: list[Pair] = []
    for seg in l2_segments(plan):
        routers = [e for e in seg if plan.node(e.node).kind == "router"]
        mine: list[Pair] = []
        for e in seg:
            partners = [r for r in routers if r.node != e.node] or [x for x in seg if x.node != e.node]
            if not partners:
                continue
            # one partner suffices for hosts; routers also pair with every other router so
            # that the links between routers on a shared fabric are each crossed
            chosen = partners[:1] if plan.node(e.node).kind != "router" else partners
            for p in chosen:
                if plan.node(e.node).kind == "router" and plan.node(p.node).kind == "router" \
                        and p.node < e.node:
                    continue
                mine.append(_pair(plan, e, p))
        out += mine + separating(plan, seg, mine)
    return out


def separating(plan: Plan, seg, have: list[Pair]) -> list[Pair]:
    """Extra pairs between L3 ends of `seg` (in segment order), each added only if it raises the
    rank of the pair -> link incidence, until every unpinned link of the segment is determined
    alone (emulation.linkfit). With a router and two hosts on a switch, one host-host pair does it."""
    pin = pinned(plan)
    paths = [tuple(n for n in p.links if n not in pin) for p in have]
    names = sorted({n for e in seg for n in (lk.name for lk in plan.links_of(e.node))
                    if n not in pin and any(n in q for q in paths)})
    added: list[Pair] = []
    for e, f in itertools.combinations(seg, 2):
        if all_determined(paths, names):
            break
        cand = _pair(plan, e, f)
        path = tuple(n for n in cand.links if n not in pin)
        if np.linalg.matrix_rank(matrix(paths + [path], names)) > np.linalg.matrix_rank(matrix(paths, names)):
            paths.append(path)
            added.append(cand)
    return added


_TIME_RE = re.compile(r"time=([\d.]+) ms")


def parse_ping(text: str) -> list[float]:
    """RTT samples in ms from `ping` output."""
    return [float(x) for x in _TIME_RE.findall(text)]


def low_quantile(samples: list[float]) -> float:
    """The LOW_QUANTILE (lower quartile) of `samples`, nearest rank below. Pure."""
    ordered = sorted(samples)
    return ordered[int(LOW_QUANTILE * (len(ordered) - 1))]


def error_ms(expected_rtt_ms: float, min_rtt_ms: float) -> float:
    """The verdict's error: how far the fastest sample is from the plan, either way. Pure."""
    return abs(min_rtt_ms - expected_rtt_ms)


def judge(pair: Pair, samples: list[float]) -> Measurement:
    """ok iff at least 3 samples and error_ms(plan, min) <= tolerance."""
    tol = tolerance_ms(pair.expected_rtt_ms, pair.jitter_ms)
    if len(samples) < 3:
        nan = float("nan")
        return Measurement(pair, nan, nan, len(samples), nan, tol, False)
    low = round(min(samples), 3)
    return Measurement(pair, round(statistics.median(samples), 3), low, len(samples),
                       round(low_quantile(samples), 3), tol, error_ms(pair.expected_rtt_ms, low) <= tol)


def measured_error_ms(m: Measurement) -> float:
    """The verdict's error of a measurement (inf without enough samples)."""
    return error_ms(m.pair.expected_rtt_ms, m.min_rtt_ms) if m.samples >= 3 else float("inf")


def early(m: Measurement) -> bool:
    """The pair's fastest sample beats its plan by more than the tolerance. Noise cannot do
    that, so on a calibrated path it means too much compensation."""
    return m.samples >= 3 and m.min_rtt_ms < m.pair.expected_rtt_ms - m.tolerance_ms


def cpu_times(stat: str = "/proc/stat") -> tuple[int, int, int]:
    """(total, idle + iowait, steal) jiffies of all CPUs so far, from /proc/stat."""
    with open(stat) as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return sum(v[:8]), v[3] + v[4], v[7] if len(v) > 7 else 0


def cpu_fracs(interval_s: float = 0.5, stat: str = "/proc/stat") -> tuple[float, float]:
    """(busy, steal) fractions of all CPUs' time over `interval_s`, from /proc/stat. Busy is
    everything but idle and iowait, so it includes steal: time the hypervisor gave this VM's
    CPUs to someone else, which no process here can account for."""
    t0, i0, s0 = cpu_times(stat)
    time.sleep(interval_s)
    t1, i1, s1 = cpu_times(stat)
    if t1 <= t0:
        return 0.0, 0.0
    return 1 - (i1 - i0) / (t1 - t0), (s1 - s0) / (t1 - t0)


def cpu_busy_frac(interval_s: float = 0.5, stat: str = "/proc/stat") -> float:
    """Fraction of all CPUs' time not idle (idle + iowait) over `interval_s`, from /proc/stat."""
    return cpu_fracs(interval_s, stat)[0]


def wait_quiet(max_wait_s: float = QUIET_WAIT_S, busy_frac: float = QUIET_BUSY_FRAC) -> float:
    """Block until the CPUs are less than `busy_frac` busy (at most max_wait_s; then measure
    anyway and let the gate judge). Returns the busy fraction of the last sample."""
    deadline = time.monotonic() + max_wait_s
    busy, steal = cpu_fracs()
    if busy >= busy_frac:
        print(f"ocalab: fidelity: CPUs {busy:.0%} busy ({steal:.0%} stolen by the hypervisor), waiting "
              f"up to {max_wait_s:.0f} s for a quiet machine before measuring", file=sys.stderr, flush=True)
    while busy >= busy_frac and time.monotonic() < deadline:
        busy = cpu_busy_frac()
    return busy


def settle(measure: Callable[[], T], error: Callable[[T], float], tolerance: float,
           rounds: int = SETTLE_ROUNDS, pause_s: float = 2.0,
           busy_frac: float = SETTLE_BUSY_FRAC) -> T:
    """The result of `measure()` with the smallest `error`: while the best is off by more than
    `tolerance`, measured again (at most `rounds` times, after pauses of pause_s x round, on a
    machine less than busy_frac busy). The gate's settle for one number: host noise comes in
    bursts that pass, while a wrong delay line or rate is off every time."""
    best = measure()
    for i in range(rounds):
        if error(best) <= tolerance:
            break
        time.sleep(pause_s * (i + 1))
        wait_quiet(QUIET_WAIT_S / 2, busy_frac)
        again = measure()
        if error(again) < error(best):
            best = again
    return best


def closer(first: list[Measurement], again: list[Measurement]) -> list[Measurement]:
    """Per pair of `first`, the measurement (from `first` or a re-measurement in `again`) whose
    lower quartile is closer to the plan. A CPU spike only ever adds latency to some pairs for a few
    seconds, so a pair off in one measurement and on in the next was disturbed, not off. Pure."""
    redo = {(m.pair.src, m.pair.dst): m for m in again}
    return [min((m, redo.get((m.pair.src, m.pair.dst), m)), key=measured_error_ms) for m in first]


def measure(net, count: int = 20, batch: int = 2, plan: Plan | None = None,
            compensation_ms: dict[str, float] | None = None, relayed: set[str] | None = None
            ) -> list[Measurement]:
    """Every pair measured (`gate`), and the suspects (`suspects`: pairs off the plan, and given
    `plan`, pairs crossing a refused link) measured once more (`closer`)."""
    return remeasure(net, gate(net, count, batch, raise_on_fail=False), 1, 0.0, QUIET_BUSY_FRAC,
                     count=count, batch=batch, plan=plan, compensation_ms=compensation_ms, relayed=relayed)


def remeasure(net, results: list[Measurement], rounds: int, pause_s: float, busy_frac: float,
              log: list | None = None, count: int = 20, batch: int = 2, plan: Plan | None = None,
              compensation_ms: dict[str, float] | None = None, relayed: set[str] | None = None
              ) -> list[Measurement]:
    """Up to `rounds` times: the pairs of `results` off the plan (and, given `plan`, every pair
    crossing a link the link verdict refuses: `suspects`), after a pause of pause_s x round and a
    quiet machine, measured again; each pair keeps its closest result (`closer`). Appends to `log`
    the number of pairs measured again in each round."""
    for i in range(rounds):
        bad = suspects(results, plan, compensation_ms, relayed)
        if not bad:
            break
        if pause_s:
            print(f"ocalab: fidelity: {len(bad)} of {len(results)} pairs off the plan; measuring them "
                  f"again in {pause_s * (i + 1):.0f} s (host noise passes, a wrong link does not)",
                  file=sys.stderr, flush=True)
            time.sleep(pause_s * (i + 1))
        wait_quiet(QUIET_WAIT_S / 2 if pause_s else QUIET_WAIT_S, busy_frac)
        if log is not None:
            log.append(len(bad))
        results = closer(results, gate(net, count, batch, raise_on_fail=False, only=bad))
    return results


def suspects(results: list[Measurement], plan: Plan | None = None,
             compensation_ms: dict[str, float] | None = None, relayed: set[str] | None = None) -> list[Pair]:
    """Pairs to measure again: those off their own plan, and (given `plan`) those crossing a
    link of a unit the link verdict refuses (emulation.linkfit.judge_links). Pure."""
    bad_links = set()
    if plan is not None:
        bad_links = {n for u in judge_links(plan, results, compensation_ms, relayed) if not u.ok for n in u.links}
    return [m.pair for m in results if not m.ok or bad_links & set(m.pair.links)]


def gate(net, count: int = 20, batch: int = 2, raise_on_fail: bool = True,
         only: list[Pair] | None = None) -> list[Measurement]:
    """Ping every pair (or `only` these) in `net` (a built Network); raise EmulationError
    listing the failures."""
    plan = net.plan
    todo = pairs(plan) if only is None else only
    results: list[Measurement] = []
    for p in todo:  # ARP warm-up so the first sample is not a resolution delay
        net.host(p.src).cmd(f"ping -c1 -W1 -n {p.dst_addr} >/dev/null 2>&1 &")
    for p in todo:
        net.host(p.src).cmd("wait")
    for i in range(0, len(todo), batch):
        chunk = todo[i:i + batch]
        procs = [(p, net.host(p.src).popen(["ping", "-n", "-c", str(count), "-i", "0.02", "-W", "1",
                                            p.dst_addr])) for p in chunk]
        for p, proc in procs:
            out, _ = proc.communicate(timeout=30)
            results.append(judge(p, parse_ping(out.decode(errors="replace"))[1:]))
    if raise_on_fail:
        check(results)
    return results


def check(results: list[Measurement]) -> None:
    """Raise EmulationError listing every pair off the plan (nothing if all are within tolerance)."""
    lines = pair_lines(results)
    if lines:
        raise EmulationError("fidelity gate failed: measured RTT is off the plan on "
                             f"{len(lines)} of {len(results)} pairs:\n" + "\n".join(lines))


def pair_lines(results: list[Measurement]) -> list[str]:
    """One line per pair off its plan, naming its links and classes."""
    return [f"  {m.pair.src} -> {m.pair.dst} over {' + '.join(m.pair.links)} "
            f"({'+'.join(m.pair.classes)}): min "
            f"{m.min_rtt_ms} ms, median {m.median_rtt_ms} (lower quartile {m.low_rtt_ms}) vs plan "
            f"{m.pair.expected_rtt_ms} ms (tolerance {m.tolerance_ms:.2f} ms, {m.samples} "
            "samples)" for m in results if not m.ok]


def check_links(units: list, results: list[Measurement]) -> None:
    """Raise EmulationError naming every refused link (or group: emulation.linkfit.Unit) with
    its classes, planned vs estimated delay and tolerance, then every pair off its own plan."""
    bad = [u for u in units if not u.ok]
    pairs_off = pair_lines(results)
    if bad or pairs_off:
        text = (f"fidelity gate failed: {len(bad)} of {len(units)} links (or groups) off the plan"
                + (":\n" + "\n".join(describe(u) for u in bad) if bad else ""))
        if pairs_off:
            text += f"\nand {len(pairs_off)} of {len(results)} pairs off their own plan:\n" + "\n".join(pairs_off)
        raise EmulationError(text)


def as_rows(results: list[Measurement]) -> list[dict]:
    rows = []
    for m in results:
        d = asdict(m.pair)
        d.update(median_rtt_ms=m.median_rtt_ms, min_rtt_ms=m.min_rtt_ms, low_rtt_ms=m.low_rtt_ms,
                 samples=m.samples, tolerance_ms=m.tolerance_ms, ok=m.ok)
        rows.append(d)
    return rows
