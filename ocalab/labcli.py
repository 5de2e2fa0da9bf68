"""`ocalab cli` for a class: a short banner of what runs where, and Mininet's CLI that runs every
line of a piped script.

The banner is built from the plan and the started services only (pure, tested without root);
the network's details (backends' reasons, calibration, timings) go to a file and are printed
with `--details`.
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import TextIO

from contracts.deployment import OCA_PORT
from topologies.plan import ROUTE_SERVER_ROLE


def banner(plan, summary: dict, arm: str, urls: dict[str, str], details_path: Path | None,
           python: str = sys.executable) -> list[str]:
    """The lines printed before the prompt: hosts with addresses, the services and one example
    command each. `urls` holds control, origin and api, and may hold logs, the services' logs
folder where the example player writes (empty when no services run). Pure."""
    ip = plan.primary_ip
    viewers = plan.nodes_of(role="viewer")
    ocas = [n for n in plan.nodes_of(role="oca") if arm == "embedded" or (arm == "ixp" and n.tier == "ixp")]
    origin = plan.nodes_of(role="origin")[0].name
    lines = [f"ocalab cli: {plan.name} is up (links: {summary.get('link_backend')}, switches: "
             f"{summary.get('switch_datapath')}); services: {arm}",
             "  viewers  " + "  ".join(f"{v.name} {ip(v.name)}" for v in viewers)]
    if ocas:
        lines.append("  OCAs     " + "  ".join(f"{n.name} {ip(n.name)} ({n.tier})" for n in ocas))
    if urls:
        lines.append(f"  origin   {urls['origin']}   control plane {urls['control']}   controller API {urls['api']}")
    v = viewers[0]
    own = [n for n in ocas if n.domain == v.domain]  # the viewer's own embedded OCA when it runs
    v, target = v.name, (own or ocas)[0].name if ocas else origin
    lines += ["try:", f"  {v} ping -c 3 {ip(target)}", f"  {v} traceroute -n {ip(origin)}"]
    if summary.get("routing") == "bgp":
        border = plan.nodes_of(kind="router", domain=viewers[0].domain)[0].name
        lines.append(f"  {border} vtysh -c 'show bgp summary'")
        for rs in plan.nodes_of(role=ROUTE_SERVER_ROLE):
            lines.append(f"  {rs.name} vtysh -c 'show bgp summary'    # the IXP route server")
    if ocas:
        lines.append(f"  {v} curl -s http://{ip(target)}:{OCA_PORT}/health")
    if urls:
        logs = urls.get("logs", "/tmp")  # `--web` shows players whose chunk logs are in the services' logs
        lines.append(f"  {v} {python} -m appliances.player --control {urls['control']} --viewers 1 "
                     f"--titles t0001 --segments 3 --chunk-log {logs}/chunks-{v}.csv "
                     f"--session-log {logs}/sessions-{v}.jsonl")
    if details_path is not None:
        lines.append(f"network details (backends, calibration, timings): {details_path}; --details prints them")
    lines.append("type 'help' for Mininet's commands, 'exit' to stop and clean up")
    return lines


def write_details(summary: dict, work_dir: Path) -> Path:
    path = work_dir / "network.json"
    path.write_text(json.dumps(summary, indent=1, default=str))
    return path


def run_cli(mn, stdin: TextIO = sys.stdin) -> None:
    """Mininet's CLI on a terminal; otherwise every line of `stdin` in turn, each echoed.

    Mininet forwards its stdin to a host command while that command runs, so a piped script
    would feed its own later lines to the first command; the script is read whole first and
    the CLI gets a pipe that never has data instead."""
    from mininet.cli import CLI
    if stdin.isatty():
        CLI(mn)
        return

    class EchoCLI(CLI):
        def onecmd(self, line: str):
            if line.strip():
                print(f"mininet> {line.rstrip()}", flush=True)
            return super().onecmd(line)

    with tempfile.NamedTemporaryFile("w", prefix="ocalab-cli-", suffix=".txt", delete=False) as f:
        f.write(stdin.read())
    r, w = os.pipe()
    try:
        with os.fdopen(r) as silent:
            EchoCLI(mn, stdin=silent, script=f.name)
    finally:
        os.close(w)
        os.unlink(f.name)
