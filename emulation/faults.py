"""Run-time faults on the links of a built Network (the shell around emulation.impair).

`LinkFaults(net)` keeps each link's current Impairment and puts it in place:
- relay backend: writes the link relay's control file (atomically) and sends SIGUSR1 to that
  relay's pid, which the Network tracks; never a process looked up by name. A relay restarted
  later (calibration) reads the same file at start, so the fault survives the restart.
- netem backend: runs emulation.impair.netem_commands (`tc qdisc change`) in each end's node.
A down link is a black hole (frames dropped both ways, carrier up): switches and the controller
do not see it go down, as with a gray failure. Every change is logged in `log` with its time.
"""
from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import time

from emulation.impair import Impairment, netem_commands, render_control
from emulation.linkemu import EmulationError


class LinkFaults:
    """Faults injected into `net`'s links; state starts clear (the plan as built)."""

    def __init__(self, net) -> None:
        self.net = net
        self.state: dict[str, Impairment] = {}
        self.log: list[dict] = []  # {"t_unix", "link", "impairment"} per change applied

    def current(self, link_name: str) -> Impairment:
        self._link(link_name)
        return self.state.get(link_name, Impairment())

    def set(self, link_name: str, imp: Impairment) -> Impairment:
        """Put `imp` in place on the link (replacing its earlier faults); returns it."""
        link = self._link(link_name)
        if self.net.link_backend == "relay":
            self._apply_relay(link_name, imp)
        elif self.net.link_backend == "netem":
            self._apply_netem(link, imp)
        else:
            raise EmulationError("the network is not started: no link backend chosen yet")
        self.state[link_name] = imp
        self.log.append({"t_unix": round(time.time(), 3), "link": link_name,
                         "impairment": dataclasses.asdict(imp)})
        return imp

    def update(self, link_name: str, **changes) -> Impairment:
        """The link's current faults with `changes` (Impairment fields) put in place."""
        return self.set(link_name, dataclasses.replace(self.current(link_name), **changes))

    def clear_all(self) -> None:
        """Every link back to its plan."""
        for name in [n for n, imp in self.state.items() if not imp.cleared]:
            self.set(name, Impairment())

    def _link(self, link_name: str):
        for lk in self.net.plan.links:
            if lk.name == link_name:
                return lk
        sample = ", ".join(lk.name for lk in self.net.plan.links[:3])
        raise EmulationError(f"no link named {link_name!r} in plan {self.net.plan.name} "
                             f"(link names look like {sample})")

    def _apply_relay(self, link_name: str, imp: Impairment) -> None:
        path = self.net.relay_control_files.get(link_name)
        proc = self.net.relay_procs().get(link_name)
        if path is None or proc is None:
            raise EmulationError(f"link {link_name} has no relay (the plan gives it no delay, "
                                 "jitter or loss), so it cannot take run-time faults")
        if proc.poll() is not None:
            raise EmulationError(f"the relay of link {link_name} is not running "
                                 f"(exit status {proc.returncode})")
        tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
        tmp.write_text(render_control(imp))
        tmp.replace(path)
        proc.send_signal(signal.SIGUSR1)  # by the pid we started; the relay reads the file

    def _apply_netem(self, link, imp: Impairment) -> None:
        for node_name, cmd in netem_commands(link, imp):
            if self.net.plan.node(node_name).kind == "switch":  # switch ports: root namespace
                r = subprocess.run(["sh", "-c", cmd], capture_output=True, text=True)
                out, err, rc = r.stdout, r.stderr, r.returncode
            else:
                out, err, rc = self.net.nodes[node_name].pexec(["sh", "-c", cmd])
            if rc != 0:
                raise EmulationError(f"fault on link {link.name}: `{cmd}` in {node_name} failed: "
                                     f"{(err or out).strip()}")
