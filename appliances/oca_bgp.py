"""What an OCA's BGP speaker learned (--routing bgp), for its /health `bgp_routes`.

The speaker is FRR's bgpd in the OCA's namespace (emulation.frr starts it, receive-only); the
OCA reads its RIB over the vty socket every POLL_S with vtysh. Invariants: `routes_json()` is
None until the first good read (the deployment's declared prefixes apply until then), then the
newest good read; a failed read keeps the last one and is logged once per failure streak.
"""
from __future__ import annotations

import asyncio
import json
import sys

from contracts.steering import LearnedRoute, routes_from_frr

POLL_S = 0.5
VTYSH_TIMEOUT_S = 5.0


class BgpReader:
    def __init__(self, vty_dir: str, poll_s: float = POLL_S) -> None:
        self.vty_dir, self.poll_s = vty_dir, poll_s
        self.routes: list[LearnedRoute] | None = None
        self._task: asyncio.Task | None = None

    def routes_json(self) -> list[dict] | None:
        return None if self.routes is None else [r.to_json() for r in self.routes]

    async def read_once(self) -> list[LearnedRoute]:
        proc = await asyncio.create_subprocess_exec(
            "vtysh", "--vty_socket", self.vty_dir, "-c", "show bgp ipv4 unicast json",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        try:
            out, err = await asyncio.wait_for(proc.communicate(), VTYSH_TIMEOUT_S)
        except asyncio.TimeoutError:
            proc.kill()
            await proc.wait()
            raise OSError(f"vtysh timed out after {VTYSH_TIMEOUT_S:g} s") from None
        if proc.returncode != 0:
            raise OSError(f"vtysh exit {proc.returncode}: {(err or out).decode(errors='replace').strip()}")
        return routes_from_frr(json.loads(out or b"{}"))

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _loop(self) -> None:
        failing = False
        while True:
            try:
                self.routes = await self.read_once()
                failing = False
            except (OSError, ValueError) as exc:
                if not failing:
                    print(f"oca: reading BGP routes from {self.vty_dir} failed: {exc}",
                          file=sys.stderr, flush=True)
                failing = True
            await asyncio.sleep(self.poll_s)
