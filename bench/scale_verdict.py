"""Pure parts of `ocalab bench scale`: QoE of a step, loaded RTT error per link class, CPU per
component, and the verdict that names the highest step the emulator carries faithfully.

A step passes when, against the base step (the smallest):
- QoE holds: median startup at most QOE_REL above the base (and at most STARTUP_FLOOR_S more,
  whichever is larger: a 0.5 s startup has no meaningful 10%), rebuffer ratio at most
  REBUF_ABS above the base's (a ratio of 0 has no relative 10%), mean bitrate at least
  (1 - QOE_REL) of the base's, and no failed sessions;
- every link class's loaded RTT error (median of the step's samples minus the plan's RTT) is at
  most emulation.loaded.loaded_tolerance_ms: max(1 ms, 5% of the plan RTT) + 2 x the path's jitter.
The headline is the highest step that passes with every smaller step passing too.
"""
from __future__ import annotations

from contracts.stats import median, percentile

QOE_REL = 0.10
STARTUP_FLOOR_S = 0.05
REBUF_ABS = 0.01
COMPONENTS = ("relays", "ovs", "ocas", "origin", "players", "controller", "control_plane")


def qoe(sessions: list[dict]) -> dict:
    """Startup p50/p90 (s), mean rebuffer ratio, mean bitrate (kbit/s) and status counts of
    one step's session summaries (player session JSON lines)."""
    ok = [s for s in sessions if s.get("status") == "ok"]
    startup = [float(s["startup_s"]) for s in ok if s.get("startup_s") is not None]
    rebuf = [float(s.get("rebuffer_ratio") or 0.0) for s in ok]
    kbps = [float(s["mean_kbps"]) for s in ok if s.get("mean_kbps") is not None]
    return {"sessions": len(sessions), "sessions_ok": len(ok),
            "startup_p50_s": round(median(startup), 3) if startup else None,
            "startup_p90_s": round(percentile(startup, 90), 3) if startup else None,
            "rebuffer_ratio": round(sum(rebuf) / len(rebuf), 4) if rebuf else None,
            "mean_kbps": round(sum(kbps) / len(kbps), 1) if kbps else None}


def component_of(label: str, oca_names: set[str]) -> str | None:
    """The component a process label of the run belongs to (None: not one of COMPONENTS)."""
    head = label.split(":", 1)[0]
    if head == "relay":
        return "relays"
    if head == "player":
        return "players"
    if label in ("controller", "probe"):  # the probe feeds the controller's steering
        return "controller"
    if label == "origin":
        return "origin"
    if label == "control":
        return "control_plane"
    if label in oca_names:
        return "ocas"
    return None


def step_verdict(step: dict, base: dict) -> dict:
    """Why a step passes or fails against the base step; {"ok": bool, "reasons": [...]}."""
    reasons: list[str] = []
    q, b = step["qoe"], base["qoe"]
    if q["sessions_ok"] < q["sessions"]:
        reasons.append(f"{q['sessions'] - q['sessions_ok']} of {q['sessions']} sessions not ok")
    if None in (q["startup_p50_s"], b["startup_p50_s"], q["mean_kbps"], b["mean_kbps"]):
        reasons.append("no finished session to judge")
    else:
        limit = b["startup_p50_s"] + max(QOE_REL * b["startup_p50_s"], STARTUP_FLOOR_S)
        if q["startup_p50_s"] > limit:
            reasons.append(f"startup p50 {q['startup_p50_s']} s > {limit:.3f} s")
        if q["rebuffer_ratio"] > b["rebuffer_ratio"] + REBUF_ABS:
            reasons.append(f"rebuffer ratio {q['rebuffer_ratio']} > {b['rebuffer_ratio'] + REBUF_ABS:.4f}")
        if q["mean_kbps"] < (1 - QOE_REL) * b["mean_kbps"]:
            reasons.append(f"mean bitrate {q['mean_kbps']} < {(1 - QOE_REL) * b['mean_kbps']:.1f} kbit/s")
    for cls, c in step["rtt"].items():
        if not c["ok"]:
            reasons.append(f"loaded RTT of {cls}: error {c['err_max_ms']} ms over tolerance")
    return {"ok": not reasons, "reasons": reasons}


def headline(steps: list[dict]) -> int | None:
    """The highest viewer count whose step and every smaller step passed (None: not even one)."""
    best = None
    for s in sorted(steps, key=lambda s: s["viewers"]):
        if not s["verdict"]["ok"]:
            break
        best = s["viewers"]
    return best


def relay_cpu_per_gbit(relay_cpu_s: float, relayed_bytes: int) -> float | None:
    """Relay CPU-seconds per Gbit forwarded (= cores per Gbit/s); None when nothing moved."""
    gbit = relayed_bytes * 8 / 1e9
    return round(relay_cpu_s / gbit, 3) if gbit > 0 else None
