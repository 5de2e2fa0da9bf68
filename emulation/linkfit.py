"""Per-link delays from pair RTTs: the fidelity gate's estimator, verdict and calibration (pure).

Model: a pair's fastest RTT = 2 x the sum of the one-way delays of the links on its layer-2 path.
A ping crosses each link both ways, so RTTs see a link's two directions only as their sum: a
link's delay here is the mean of its two directions, and an asymmetric link shows as that mean
off the plan (per-direction estimates would need one-way measurements; none are taken).
Unknowns: one delay per link crossed by a measured pair. Links without delay emulation (a plan
delay of at most topologies.plan.SWITCH_PORT_DELAY_MS and no jitter or loss: veth and switch
port only, no delay line) are pinned at their planned delay, not estimated.
Estimates: least squares (numpy.linalg.lstsq, minimum norm) over the pair -> link incidence.
Identifiability: a sum of link delays is determined by the pairs iff its indicator is orthogonal
to the incidence's null space. A link that is not determined alone (e.g. two L3 ends on one
switch: only their sum is measured) is judged in the smallest identifiable group containing it,
and its Unit says `group`. Every unit is judged against tolerance_ms of ITS OWN planned RTT.
Calibration budget: compensation per relayed link is at most COMPENSATION_BUDGET_MS one way; a
unit whose links would need more fails, naming them, instead of being corrected.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass

import numpy as np

from topologies.plan import Plan

# The emulator's own one-way latency per relayed link, the only thing calibration may take off.
# `ocalab bench links` (results/bench/links-*.json): one relay alone adds 0.04-0.1 ms one way
# (RTT error p50 0.1-0.2 ms over one 10 ms link, 0.11 ms over one 1 ms link; a chain of 4 relays
# 0.32-0.47 ms RTT); in metro, with the OVS userspace datapath on the path, calibrated runs took
# off 0.09-0.35 ms per link (results/*/manifest.json network.compensation_ms). Issue 16 caps it at
# 0.5 ms one way: a link that would need more is wrong, not uncalibrated.
COMPENSATION_BUDGET_MS = 0.5
ABS_TOL_MS, REL_TOL = 0.5, 0.05  # the gate's tolerance on an RTT: max(0.5 ms, 5%) + 2 x jitter
COMPENSATION_FRAC = 0.8  # nor more than this fraction of the link's own delay (never a 0 ms link)
_EPS = 1e-7              # numerical zero for identifiability tests
MAX_GROUP_SEARCH = 10    # exhaustive smallest-group search over at most this many candidates


def tolerance_ms(expected_rtt_ms: float, jitter_ms: float = 0.0) -> float:
    """The gate's tolerance on an RTT (a pair's, or a link's 2 x delay)."""
    return max(ABS_TOL_MS, REL_TOL * expected_rtt_ms) + 2 * jitter_ms


@dataclass(frozen=True)
class Unit:
    """One judged quantity: a link, or the smallest identifiable group of links (one way, ms).
    kind: link | group | pinned (no delay emulation: taken as planned) | unmeasured (no pair with
    samples crosses it: fails). `needed_ms` is, per link, the compensation its estimate asks for
    (applied compensation + its share of the excess; 0 for links without a relay)."""
    links: tuple[str, ...]
    classes: tuple[str, ...]
    kind: str
    planned_delay_ms: float
    estimated_delay_ms: float
    tolerance_ms: float          # on the unit's RTT (2 x delay)
    compensation_ms: tuple[float, ...]
    needed_ms: tuple[float, ...]
    ok: bool

    @property
    def name(self) -> str:
        return " + ".join(self.links)

    @property
    def error_ms(self) -> float:
        """|estimated - planned| RTT of the unit (inf when not estimated)."""
        if not math.isfinite(self.estimated_delay_ms):
            return math.inf
        return abs(2 * (self.estimated_delay_ms - self.planned_delay_ms))

    @property
    def over_budget(self) -> tuple[str, ...]:
        """Links whose needed compensation exceeds COMPENSATION_BUDGET_MS."""
        return tuple(n for n, x in zip(self.links, self.needed_ms) if x > COMPENSATION_BUDGET_MS + 1e-9)


def pinned(plan: Plan) -> set[str]:
    """Links without delay emulation: their delay is taken as planned, not estimated."""
    return {lk.name for lk in plan.links if not lk.impaired}


def matrix(paths: list[tuple[str, ...]], names: list[str]) -> np.ndarray:
    """Incidence: row per path, column per name, 1 where the path crosses the link."""
    col = {n: i for i, n in enumerate(names)}
    a = np.zeros((len(paths), len(names)))
    for r, path in enumerate(paths):
        for n in path:
            if n in col:
                a[r, col[n]] += 1.0
    return a


def null_space(a: np.ndarray) -> np.ndarray:
    """Orthonormal basis (columns) of the null space of `a`."""
    n = a.shape[1]
    if a.shape[0] == 0:
        return np.eye(n)
    _, s, vt = np.linalg.svd(a)
    rank = int((s > _EPS * max(1.0, float(s.max(initial=0.0)))).sum())
    return vt[rank:].T


def determined(v: np.ndarray, null: np.ndarray) -> bool:
    """Whether the combination v . x is fixed by the measurements (v orthogonal to the null space)."""
    return null.shape[1] == 0 or float(np.abs(v @ null).max()) < _EPS


def all_determined(paths: list[tuple[str, ...]], names: list[str]) -> bool:
    """Every one of `names` is determined alone by `paths`."""
    return not names or np.linalg.matrix_rank(matrix(paths, names)) == len(names)


def smallest_group(i: int, names: list[str], paths: list[tuple[str, ...]], null: np.ndarray) -> tuple[str, ...]:
    """names[i] alone if determined, else the smallest determined group containing it: searched
    among links tied to it through the null space, else the shortest path crossing it."""
    e = np.eye(len(names))
    if determined(e[i], null):
        return (names[i],)
    tied = sorted(j for j in range(len(names)) if j != i and
                  any(abs(null[i, c]) > _EPS and abs(null[j, c]) > _EPS for c in range(null.shape[1])))
    if len(tied) <= MAX_GROUP_SEARCH:
        for k in range(1, len(tied) + 1):
            for combo in itertools.combinations(tied, k):
                if determined(e[i] + e[list(combo)].sum(axis=0), null):
                    return tuple(names[j] for j in sorted((i, *combo)))
    shortest = min((p for p in paths if names[i] in p), key=len)
    return tuple(n for n in names if n in shortest)


def groups(paths: list[tuple[str, ...]], names: list[str]) -> list[tuple[str, ...]]:
    """The judged units over `names` (each crossed by some path), deduplicated, in names order."""
    null = null_space(matrix(paths, names))
    out: list[tuple[str, ...]] = []
    for i in range(len(names)):
        g = smallest_group(i, names, paths, null)
        if g not in out:
            out.append(g)
    return out


def _valid(measurements) -> list:
    return [m for m in measurements if m.samples >= 3 and math.isfinite(m.min_rtt_ms)]


def estimate(plan: Plan, measurements) -> tuple[dict[str, float], list[tuple[str, ...]]]:
    """Least-squares one-way delay per unpinned link crossed by a measurement with >= 3 samples
    (minimum norm: only determined sums are meaningful), and the unpinned paths used."""
    pin = pinned(plan)
    valid = _valid(measurements)
    paths = [tuple(n for n in m.pair.links if n not in pin) for m in valid]
    names = [lk.name for lk in plan.links if any(lk.name in p for p in paths)]
    if not names:
        return {}, paths
    by_name = {lk.name: lk for lk in plan.links}
    y = np.array([m.min_rtt_ms / 2 - sum(by_name[n].delay_ms for n in m.pair.links if n in pin) for m in valid])
    x = np.linalg.lstsq(matrix(paths, names), y, rcond=None)[0]
    return dict(zip(names, (float(v) for v in x))), paths


def judge_links(plan: Plan, measurements, compensation_ms: dict[str, float] | None = None,
                relayed: set[str] | None = None) -> list[Unit]:
    """Every link crossed by a measured pair, judged alone or in its smallest determined group:
    ok iff estimated within tolerance_ms(planned RTT, jitter) and no relayed link would need
    more than COMPENSATION_BUDGET_MS. `compensation_ms` is what was taken off when measuring."""
    comp = compensation_ms or {}
    relayed = relayed if relayed is not None else set(comp)
    by_name = {lk.name: lk for lk in plan.links}
    crossed = [lk.name for lk in plan.links if any(lk.name in m.pair.links for m in measurements)]
    x, paths = estimate(plan, measurements)
    pin = pinned(plan)
    todo = groups(paths, [n for n in crossed if n in x])
    todo += [(n,) for n in crossed if n not in x]
    units = []
    for g in sorted(todo, key=lambda g: crossed.index(g[0])):
        planned = sum(by_name[n].delay_ms for n in g)
        kind = "pinned" if g[0] in pin else "unmeasured" if g[0] not in x else "link" if len(g) == 1 else "group"
        est = planned if kind == "pinned" else math.nan if kind == "unmeasured" else sum(x[n] for n in g)
        tol = tolerance_ms(2 * planned, sum(by_name[n].jitter_ms for n in g))
        mine = [n for n in g if n in relayed]
        share = (est - planned) / len(mine) if mine and math.isfinite(est) else 0.0
        needed = tuple(round(comp.get(n, 0.0) + share, 3) if n in mine else 0.0 for n in g)
        unit = Unit(g, tuple(by_name[n].cls for n in g), kind, round(planned, 3), round(est, 3),
                    round(tol, 3), tuple(comp.get(n, 0.0) for n in g), needed, False)
        ok = kind == "pinned" or (unit.error_ms <= tol + 1e-9 and not unit.over_budget)
        units.append(Unit(**{**asdict(unit), "ok": ok}))
    return units


def early_unit(u: Unit) -> bool:
    """The unit's estimate beats its plan by more than its tolerance: noise cannot do that, so on
    a relayed link it means too much compensation (or a link faster than planned)."""
    return u.kind in ("link", "group") and 2 * (u.estimated_delay_ms - u.planned_delay_ms) < -u.tolerance_ms


def calibrate(units: list[Unit], plan: Plan, relayed: set[str],
              base: dict[str, float] | None = None) -> dict[str, float]:
    """Per relayed link, the one-way compensation (ms) to take off: its base plus its share of
    its unit's excess (estimate - plan, shared equally over the unit's relayed links), within
    [0, min(COMPENSATION_BUDGET_MS, COMPENSATION_FRAC x its delay)]. A link that would need more
    is left at the cap, and the verdict refuses it (Unit.over_budget). Links in no estimated
    unit keep their base."""
    delays = {lk.name: lk.delay_ms for lk in plan.links}
    comp = dict(base or {})
    for u in units:
        if u.kind not in ("link", "group"):
            continue
        for n, need in zip(u.links, u.needed_ms):
            if n in relayed:
                c = min(max(need, 0.0), COMPENSATION_BUDGET_MS, COMPENSATION_FRAC * delays[n])
                comp[n] = round(c, 3)
    return {k: v for k, v in comp.items() if v > 0}


def describe(u: Unit) -> str:
    """One line naming the unit's links and classes, planned vs estimated, tolerance, budget."""
    what = "" if u.kind == "link" else f" [{u.kind}: not separable by pair RTTs]" if u.kind == "group" \
        else f" [{u.kind}]"
    line = (f"  {u.name} ({'+'.join(u.classes)}){what}: plan {u.planned_delay_ms:g} ms one way, "
            f"estimated {u.estimated_delay_ms:g} ms (RTT error {u.error_ms:.2f} ms, tolerance "
            f"{u.tolerance_ms:.2f} ms)")
    if any(u.compensation_ms):
        line += f"; compensation {'+'.join(f'{c:g}' for c in u.compensation_ms)} ms"
    for n in u.over_budget:
        need = u.needed_ms[u.links.index(n)]
        line += (f"; {n} would need {need:g} ms of compensation one way, over the "
                 f"{COMPENSATION_BUDGET_MS:g} ms budget")
    return line


def as_rows(units: list[Unit]) -> list[dict]:
    """Plain dicts (for the network summary and CSV), with the RTT error and over-budget links."""
    return [{**asdict(u), "estimated_delay_ms": u.estimated_delay_ms if math.isfinite(u.estimated_delay_ms) else None,
             "error_ms": round(u.error_ms, 3) if math.isfinite(u.error_ms) else None,
             "over_budget": list(u.over_budget)} for u in units]
