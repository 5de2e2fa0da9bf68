"""Faults injected into a running link: the relay's control file and the netem commands.

A link's run-time impairment is an `Impairment`: extra one-way delay and Bernoulli loss per
direction ("ab" = from the link's a end to its b end) and `down` (every frame dropped both ways).
It adds to the plan's own delay and loss; the zero Impairment is the plan as built.

Relay backend: `render_control` writes it as the relay's control file, which the relay
(emulation.relay, both engines) re-reads on SIGUSR1 and at start. The format, one `key=value` a
line, blank lines and `#` comments allowed, at most CONTROL_MAX_BYTES:

    extra_delay_ms_ab=5
    extra_delay_ms_ba=5
    loss_pct_ab=0
    loss_pct_ba=0
    down=0

A missing key means 0; the file is the whole state, not a change. Numbers are plain decimals
(`12`, `0.5`: no sign, exponent, inf or nan); delays within [0, MAX_DELAY_MS], losses within
[0, 100], down 0 or 1. An unknown or repeated key or a bad value rejects the whole file (the
relay logs it and keeps its previous state). emulation/native/relay.c parses the same grammar.

Netem backend: `netem_commands` gives the `tc` commands (pure) that set a link's netem leaves
to the plan plus the impairment. Everything here is pure: no root, no processes.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

from emulation.delayline import MAX_DELAY_MS
from emulation.linkemu import PROBE_QUEUE_PKTS, netem_spec
from topologies.plan import Link

CONTROL_MAX_BYTES = 4096
CONTROL_KEYS = ("extra_delay_ms_ab", "extra_delay_ms_ba", "loss_pct_ab", "loss_pct_ba", "down")
_NUMBER = re.compile(r"[0-9]{1,9}(\.[0-9]{1,9})?")


@dataclass(frozen=True)
class Impairment:
    """Run-time faults on one link, on top of its plan (validated on construction)."""

    extra_delay_ms_ab: float = 0.0
    extra_delay_ms_ba: float = 0.0
    loss_pct_ab: float = 0.0
    loss_pct_ba: float = 0.0
    down: bool = False

    def __post_init__(self) -> None:
        for key in CONTROL_KEYS[:4]:
            value = getattr(self, key)
            high = MAX_DELAY_MS if key.startswith("extra_delay") else 100.0
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not math.isfinite(value) or not 0.0 <= value <= high:
                raise ValueError(f"{key} must be a number within [0, {high:g}], got {value!r}")
        if not isinstance(self.down, bool):
            raise ValueError(f"down must be True or False, got {self.down!r}")

    @property
    def cleared(self) -> bool:
        return self == Impairment()


def _decimal(value: float) -> str:
    """value as a plain decimal with at most 6 places (1 ns, 1e-6 %): the grammar has no exponent."""
    return f"{value:.6f}".rstrip("0").rstrip(".")


def render_control(imp: Impairment) -> str:
    """The control file text of `imp`; parse_control gives `imp` back to 6 decimal places."""
    return "".join(f"{key}={_decimal(getattr(imp, key))}\n" for key in CONTROL_KEYS[:4]) \
        + f"down={int(imp.down)}\n"


def parse_control(data: bytes | str) -> Impairment:
    """Parse a control file strictly; ValueError naming the first problem. Bytes are read as
    latin-1, as the native relay reads them: any byte may sit in a comment, none in a value."""
    if isinstance(data, str):
        data = data.encode()
    if len(data) > CONTROL_MAX_BYTES:
        raise ValueError(f"control file over {CONTROL_MAX_BYTES} bytes")
    text = data.decode("latin-1")
    values: dict[str, object] = {}
    for number, raw in enumerate(text.split("\n"), 1):
        line = raw.strip(" \t\r")
        if not line or line.startswith("#"):
            continue
        key, sep, value = (part.strip(" \t") for part in line.partition("="))
        if not sep or key not in CONTROL_KEYS:
            raise ValueError(f"line {number}: expected one of {', '.join(CONTROL_KEYS)} =value, got {line!r}")
        if key in values:
            raise ValueError(f"line {number}: {key} given twice")
        if key == "down":
            if value not in ("0", "1"):
                raise ValueError(f"line {number}: down must be 0 or 1, got {value!r}")
            values[key] = value == "1"
        elif not _NUMBER.fullmatch(value):
            raise ValueError(f"line {number}: {key} must be a plain decimal number, got {value!r}")
        else:
            values[key] = float(value)
    return Impairment(**values)  # type: ignore[arg-type]


def combined_loss_pct(plan_pct: float, extra_pct: float) -> float:
    """Loss of a plan loss and an independent injected loss in series (pure)."""
    return 100.0 * (1.0 - (1.0 - plan_pct / 100.0) * (1.0 - extra_pct / 100.0))


def netem_commands(link: Link, imp: Impairment) -> list[tuple[str, str]]:
    """(node, tc command) per end and leaf of a netem-backend link that puts the plan plus `imp`
    in place: the data leaf (10:) and the measurement lane (5:, linkemu.PROBE_TOS) alike, so the
    loaded-RTT probes see the fault too. End a's egress carries a->b, end b's carries b->a. A
    link the plan impairs has netem leaves (`change` keeps their queues); another has pfifo
    leaves, replaced by netem while impaired and put back by `clear`."""
    out = []
    for end, extra_ms, extra_pct in ((link.a, imp.extra_delay_ms_ab, imp.loss_pct_ab),
                                     (link.b, imp.extra_delay_ms_ba, imp.loss_pct_ba)):
        loss = 100.0 if imp.down else combined_loss_pct(link.loss_pct, extra_pct)
        for handle, parent, queue in (("10:", "1:10", link.queue_pkts), ("5:", "1:5", PROBE_QUEUE_PKTS)):
            head = (f"tc qdisc {'change' if link.impaired else 'replace'} dev {end.intf} "
                    f"parent {parent} handle {handle}")
            if not link.impaired and imp.cleared:
                out.append((end.node, f"{head} pfifo limit {queue}"))
            else:
                out.append((end.node, f"{head} {netem_spec(link, link.delay_ms + extra_ms, loss, queue)}"))
    return out
