"""The fault schedule of `ocalab run chaos` (pure: no root, no clock, no global random).

`schedule(plan, seed, duration_s, quick)` returns FaultEvents in time order. Invariants:
- the same (plan, seed, duration_s, quick) gives the same schedule (random.Random(seed) only);
- one fault at a time: each starts after a warm-up (sessions playing) and at least GAP_S[quick]
  after the previous one ended (recovered), so every effect can be attributed to one fault;
- every event ends at least that gap before duration_s (the run sees the recovery);
- every kind the plan has targets for appears at least once (quick and full); full adds more
  faults, drawn at random, while they fit;
- targets exist in the plan: OCA nodes, link names, the control-plane node; the controller is
  "controller" (it is not a plan node).
Kinds (each is undone when its duration_s ends): oca_kill (SIGKILL, restart), link_down (every
frame dropped both ways, then up), link_impair (extra one-way delay and loss each way, then
cleared), control_plane_kill (the control host's services SIGKILLed, restarted), controller_kill
(SIGKILL, restarted on the same ports).
"""
from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field

from topologies.plan import Plan

KINDS = ("oca_kill", "link_down", "link_impair", "control_plane_kill", "controller_kill")
CONTROLLER = "controller"
WARMUP_S = {True: 10.0, False: 30.0}   # by quick: playback before the first fault
GAP_S = {True: 10.0, False: 20.0}      # by quick: recovery time after a fault, before the next
# by quick: (shortest, longest) duration of a fault, s
DURATION_S = {True: (6.0, 6.0), False: (10.0, 30.0)}
IMPAIR_DELAY_MS = (10.0, 20.0, 50.0)
IMPAIR_LOSS_PCT = (0.5, 1.0, 2.0)
LINK_DOWN_CLASSES = ("peering",)          # plus every link of an OCA: traffic has a fallback
LINK_IMPAIR_CLASSES = ("access", "peering", "transit", "backbone")


@dataclass(frozen=True)
class FaultEvent:
    """One fault: starts at time_s (from the start of playback), undone after duration_s."""

    time_s: float
    kind: str
    target: str
    duration_s: float
    params: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return asdict(self)


def targets(plan: Plan) -> dict[str, list[str]]:
    """The candidate targets of each kind in `plan` (sorted; a kind may have none)."""
    ocas = sorted(n.name for n in plan.nodes_of(role="oca"))
    # only links with a delay line take run-time faults on every backend (a LAN port realized by
    # its switch alone has no relay to drop or delay frames: topologies.plan.SWITCH_PORT_DELAY_MS)
    lines = [lk for lk in plan.links if lk.impaired]
    down = sorted(lk.name for lk in lines if lk.cls in LINK_DOWN_CLASSES
                  or lk.a.node in ocas or lk.b.node in ocas)
    impair = sorted(lk.name for lk in lines if lk.cls in LINK_IMPAIR_CLASSES)
    control = sorted(n.name for n in plan.nodes_of(role="control"))
    return {"oca_kill": ocas, "link_down": down, "link_impair": impair,
            "control_plane_kill": control, "controller_kill": [CONTROLLER]}


def _event(rng: random.Random, kind: str, at_s: float, quick: bool, cands: list[str]) -> FaultEvent:
    low, high = DURATION_S[quick]
    duration_s = round(rng.uniform(low, high), 1)
    params: dict = {"signal": "SIGKILL"} if kind.endswith("kill") else {}
    if kind == "link_impair":
        params = {"extra_delay_ms": rng.choice(IMPAIR_DELAY_MS), "loss_pct": rng.choice(IMPAIR_LOSS_PCT)}
    return FaultEvent(round(at_s, 1), kind, rng.choice(cands), duration_s, params)


def min_duration_s(plan: Plan, quick: bool) -> float:
    """The shortest run that holds one fault of every kind the plan has targets for."""
    n = sum(1 for cands in targets(plan).values() if cands)
    return WARMUP_S[quick] + n * (DURATION_S[quick][1] + 1.5 * GAP_S[quick])


def schedule(plan: Plan, seed: int, duration_s: float, quick: bool) -> list[FaultEvent]:
    """The seeded fault schedule (see the module docstring); ValueError if duration_s is too
    short for one fault of each kind."""
    if duration_s < min_duration_s(plan, quick):
        raise ValueError(f"chaos needs at least {min_duration_s(plan, quick):g} s for "
                         f"{'quick' if quick else 'full'} on plan {plan.name}, got {duration_s:g}")
    rng = random.Random(seed)
    cands = {k: v for k, v in targets(plan).items() if v}
    kinds = [k for k in KINDS if k in cands]
    rng.shuffle(kinds)
    gap = GAP_S[quick]
    events: list[FaultEvent] = []
    at_s = WARMUP_S[quick]
    while True:
        kind = kinds[len(events)] if len(events) < len(kinds) else rng.choice(sorted(cands))
        ev = _event(rng, kind, at_s, quick, cands[kind])
        if ev.time_s + ev.duration_s + gap > duration_s:
            break
        events.append(ev)
        if quick and len(events) == len(kinds):
            break
        at_s = ev.time_s + ev.duration_s + gap + rng.uniform(0.0, gap / 2)
    return events
