"""Link emulation: which backend works on this kernel, and the tc commands for a link end.

Two backends with the same semantics (per direction: delay_ms, jitter_ms, Bernoulli loss_pct;
rate bw_mbps by HTB with a queue of queue_pkts on the sender side):
- `netem`: HTB class with a netem leaf on each end's egress (kernel).
- `relay`: HTB class with a pfifo leaf on each end's egress; delay, jitter and loss are done by
  a userspace delay line (emulation.relay) sitting between the two ends.
Mininet prints tc errors and carries on; every command here is checked and a failure raises.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass

from topologies.plan import PREFIX, Link


class EmulationError(RuntimeError):
    """The network could not be emulated as planned (a command failed or a check was off)."""


@dataclass(frozen=True)
class Probe:
    ok: bool
    detail: str


def _sh(script: str, timeout_s: float = 15) -> subprocess.CompletedProcess:
    return subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=timeout_s)


def probe_netem() -> Probe:
    """Try a netem qdisc on a dummy interface in a scratch namespace (nothing else is touched)."""
    if os.geteuid() != 0:
        return Probe(False, "needs root to probe")
    ns = f"{PREFIX}probe{os.getpid()}"
    try:
        r = _sh(f"ip netns add {ns} && ip -n {ns} link add {PREFIX}p0 type veth peer name {PREFIX}p1 && "
                f"ip netns exec {ns} tc qdisc add dev {PREFIX}p0 root netem delay 1ms")
        err = (r.stderr or r.stdout).strip()
        return Probe(r.returncode == 0, "netem qdisc works" if r.returncode == 0 else err)
    finally:
        _sh(f"ip netns del {ns} 2>/dev/null")


def probe_ovs_kernel() -> Probe:
    """Whether OVS can create a bridge with the kernel ("system") datapath."""
    if shutil.which("ovs-vsctl") is None:
        return Probe(False, "ovs-vsctl not installed")
    if os.path.isdir("/sys/module/openvswitch"):
        return Probe(True, "openvswitch kernel module loaded")
    br = f"{PREFIX}prb{os.getpid() % 100000}"
    try:
        # ovs-vsctl records the bridge even when the datapath cannot be opened; the bridge's
        # own interface then has no OpenFlow port number and an error.
        r = _sh(f"ovs-vsctl --timeout=5 add-br {br} -- set bridge {br} datapath_type=system && "
                f"ovs-vsctl --timeout=5 get Interface {br} ofport")
        ofport = r.stdout.strip().splitlines()[-1] if r.stdout.strip() else ""
        if r.returncode == 0 and ofport not in ("", "[]", "-1") and "Error" not in r.stderr:
            return Probe(True, "kernel datapath bridge created")
        detail = (r.stderr.strip().splitlines() or ["bridge has no datapath port"])[0]
        return Probe(False, detail)
    finally:
        _sh(f"ovs-vsctl --timeout=5 --if-exists del-br {br}")


def choose(requested: str, probe: Probe, good: str, fallback: str) -> tuple[str, str]:
    """(choice, reason) honouring an explicit request; 'auto' picks `good` when the probe passed."""
    if requested not in ("auto", good, fallback):
        raise EmulationError(f"unknown choice {requested!r}; use auto, {good} or {fallback}")
    if requested == "auto":
        return (good, probe.detail) if probe.ok else (fallback, f"{good} unavailable: {probe.detail}")
    if requested == good and not probe.ok:
        raise EmulationError(f"{good} was requested but does not work here: {probe.detail}")
    return requested, "requested explicitly"


def burst_bytes(bw_mbps: float) -> int:
    """HTB burst: 1 ms worth of bytes at the rate, at least a few full frames."""
    return max(6000, int(bw_mbps * 1e6 / 8 / 1000))


# The measurement lane: packets whose TOS byte is PROBE_TOS (DSCP EF; ocalab's loaded-RTT pings
# set it with `ping -Q`) go to a priority class of their own, so they measure the path and the
# emulator under load, not the bottleneck queue that the video flows build. Everything else,
# a lab user's ping included, shares the one drop-tail queue.
PROBE_TOS = 0xB8
PROBE_QUEUE_PKTS = 16
PROBE_RATE_MBPS = 0.1  # the lane's own rate (above it, it borrows the link's): probes are ~2 kbit/s a pair


def netem_spec(link: Link, delay_ms: float, loss_pct: float, queue_pkts: int | None = None) -> str:
    """The netem leaf for one direction of `link` at delay_ms and loss_pct (the plan's jitter),
    with queue_pkts (default the link's) of queue.

    netem's limit counts packets still "on the wire" too: it adds the bandwidth-delay product so
    that, as with the relay, only the queue_pkts bottleneck queue can overflow."""
    bdp_pkts = int(link.bw_mbps * 1e6 / 8 * (delay_ms + 2 * link.jitter_ms) / 1000 / 1500) + 1
    queue = link.queue_pkts if queue_pkts is None else queue_pkts
    spec = f"netem limit {queue + bdp_pkts} delay {delay_ms:g}ms"
    if link.jitter_ms:
        spec += f" {link.jitter_ms:g}ms"
    if loss_pct:
        spec += f" loss {loss_pct:g}%"
    return spec


def shaping_script(intf: str, link: Link, backend: str) -> str:
    """Shell lines that shape `intf`'s egress as one direction of `link`: HTB class 1:1 at the
    link's rate; under it the data class 1:10 (queue_pkts drop-tail, or netem) and the
    measurement lane 1:5 (PROBE_TOS packets, served first, same delay, jitter and loss)."""
    rate = f"{link.bw_mbps:g}mbit"
    burst = burst_bytes(link.bw_mbps)
    htb = f"htb rate {rate} ceil {rate} burst {burst} cburst {burst}"
    lane = f"htb rate {min(link.bw_mbps, PROBE_RATE_MBPS):g}mbit ceil {rate} burst {burst} cburst {burst}"
    lines = [f"tc qdisc replace dev {intf} root handle 1: htb default 10",
             f"tc class add dev {intf} parent 1: classid 1:1 {htb}",
             f"tc class add dev {intf} parent 1:1 classid 1:10 {htb} prio 1",
             f"tc class add dev {intf} parent 1:1 classid 1:5 {lane} prio 0"]
    if backend == "netem" and link.impaired:
        lines += [f"tc qdisc add dev {intf} parent 1:10 handle 10: "
                  + netem_spec(link, link.delay_ms, link.loss_pct),
                  f"tc qdisc add dev {intf} parent 1:5 handle 5: "
                  + netem_spec(link, link.delay_ms, link.loss_pct, PROBE_QUEUE_PKTS)]
    else:
        lines += [f"tc qdisc add dev {intf} parent 1:10 handle 10: pfifo limit {link.queue_pkts}",
                  f"tc qdisc add dev {intf} parent 1:5 handle 5: pfifo limit {PROBE_QUEUE_PKTS}"]
    lines.append(f"tc filter add dev {intf} parent 1: protocol ip prio 1 u32 match ip tos "
                 f"{PROBE_TOS:#04x} 0xfc flowid 1:5")
    return "\n".join(lines)


def shaped_at(tc_class_show: str, bw_mbps: float) -> bool:
    """Whether `tc class show` output has our HTB class 1:1 at bw_mbps (within tc's rounding)."""
    import re
    m = re.search(r"class htb 1:1 .*?rate (\d+(?:\.\d+)?)([KMG]?)bit", tc_class_show)
    if not m:
        return False
    scale = {"": 1e-6, "K": 1e-3, "M": 1.0, "G": 1e3}[m.group(2)]
    return abs(float(m.group(1)) * scale - bw_mbps) <= max(0.01 * bw_mbps, 0.01)


def offload_script(intf: str, relay_end: bool) -> str:
    """Turn off offloads that break the userspace datapath and relays (frames must fit the MTU)."""
    feats = "tx off tso off gso off" + (" gro off lro off rx off" if relay_end else "")
    return f"ethtool -K {intf} {feats} >/dev/null 2>&1 || ethtool -K {intf} tx off"
