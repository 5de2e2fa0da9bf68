"""`python -m controller.probe --deployment FILE --push URL [--interval-s S]`

The controller's fast OCA health signal. Runs in the control-plane host (which reaches every OCA
on the data plane and the controller over the management link): one loop per OCA GETs its
/health every interval over a kept-alive connection, with a timeout adapted to that OCA's probe
round trips (controller.probe_timer); every interval one full snapshot is POSTed to URL (the
controller's `POST /ocas`, format in controller.ocas), with each OCA's newest result once or
"pending" while its probe is in flight. A dead OCA process refuses or drops the connection, so
the controller learns of it within about one interval plus one round trip, however slow the
paths to other OCAs are; timeouts (slow, not dead) count as failures only when repeated.
Prints `READY probe <n> ocas` once the first push succeeded; exits 0 on SIGTERM/SIGINT and 2 on
a bad deployment file. Push failures are reported on stderr when they start and when they end.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import signal
import ssl
import sys
import time
from pathlib import Path

import aiohttp

from contracts.deployment import parse_deployment

from .ocas import PENDING_ERROR, PROBE_INTERVAL_S, TIMEOUT_ERROR, url_host
from .probe_timer import ProbeTimer


def targets(deployment: dict) -> tuple[dict, list[dict]]:
    """(origin, OCAs) in the push format from a control-plane deployment dict (parsed by
    contracts.deployment); ValueError naming a bad field, also for a host that is no IP address
    (the controller's push format needs addresses)."""
    dep = parse_deployment(deployment)
    url_host(dep.origin.url, "deployment.origin")
    for i, o in enumerate(dep.ocas):
        url_host(o.url, f"deployment.ocas[{i}]")
    return ({"name": dep.origin.name, "url": dep.origin.url},
            [{"name": o.name, "tier": o.tier, "url": o.url, "serves": [str(n) for n in o.serves]}
             for o in dep.ocas])


Result = tuple[dict | None, str | None, float]  # health JSON, error text, rtt (or time in flight) in ms


def snapshot(origin: dict, ocas: list[dict], results: list[Result],
             timeouts_s: list[float] | None = None) -> dict:
    """The push body: each OCA with its probe outcome (health JSON, error text, rtt in ms, and
    the timeout the probe had)."""
    rows = []
    for i, (o, (health, error, rtt_ms)) in enumerate(zip(ocas, results)):
        probe = {"ok": health is not None, "error": error, "rtt_ms": round(rtt_ms, 3)}
        if timeouts_s is not None:
            probe["timeout_ms"] = round(timeouts_s[i] * 1e3, 1)
        rows.append({**o, "health": health, "probe": probe})
    return {"origin": origin, "ocas": rows, "probed_unix": time.time()}


async def probe_one(http: aiohttp.ClientSession, url: str, timeout_s: float) -> Result:
    t0 = time.monotonic()
    try:
        async with http.get(f"{url}/health", timeout=aiohttp.ClientTimeout(total=timeout_s)) as r:
            body = await r.json(content_type=None)
            if r.status != 200 or not isinstance(body, dict):
                return None, f"HTTP {r.status}", (time.monotonic() - t0) * 1e3
            return body, None, (time.monotonic() - t0) * 1e3
    except asyncio.TimeoutError:
        return None, TIMEOUT_ERROR, (time.monotonic() - t0) * 1e3
    except (aiohttp.ClientError, OSError, ValueError) as e:
        return None, f"{type(e).__name__}: {e}"[:200], (time.monotonic() - t0) * 1e3


class Outcomes:
    """Probe results not yet pushed. Each OCA is probed by its own loop; a push carries every
    OCA's newest result once, and "pending" (controller.ocas.PENDING_ERROR) for an OCA whose
    probe is still in flight, so one slow path never holds back the news of a dead OCA."""

    def __init__(self, n: int) -> None:
        self.fresh: list[Result | None] = [None] * n
        self.sent_at: list[float] = [time.monotonic()] * n
        self.timers = [ProbeTimer() for _ in range(n)]
        self.first = [False] * n
        self.all_seen = asyncio.Event()
        if not n:
            self.all_seen.set()

    def record(self, i: int, result: Result) -> None:
        health, error, rtt_ms = result
        if error == TIMEOUT_ERROR:
            self.timers[i].timed_out()
        elif health is not None or (error or "").startswith("HTTP "):
            self.timers[i].answered(rtt_ms / 1e3)
        self.fresh[i] = result
        self.first[i] = True
        if all(self.first):
            self.all_seen.set()

    def take(self) -> list[Result]:
        now = time.monotonic()
        return [r if r is not None else (None, PENDING_ERROR, (now - t0) * 1e3)
                for r, t0 in zip(self.fresh, self.sent_at)]

    def pushed(self, sent: list[Result]) -> None:
        """Forget what a successful push carried (a newer result that arrived meanwhile stays)."""
        self.fresh = [None if r is s else r for r, s in zip(self.fresh, sent)]


async def probe_loop(http: aiohttp.ClientSession, url: str, i: int, out: Outcomes,
                     interval_s: float, stop: asyncio.Event) -> None:
    """Probe one OCA every interval_s (at once again when a probe took longer)."""
    while not stop.is_set():
        t0 = time.monotonic()
        out.sent_at[i] = t0
        out.record(i, await probe_one(http, url, out.timers[i].timeout_s()))
        try:
            await asyncio.wait_for(stop.wait(), max(0.0, interval_s - (time.monotonic() - t0)))
        except asyncio.TimeoutError:
            pass


def _client_ssl(ca_file: str | None) -> ssl.SSLContext | bool:
    """https OCAs: a TLS 1.3 context trusting only `ca_file` (the lab CA); None: system CAs."""
    if ca_file is None:
        return True
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_verify_locations(cafile=ca_file)
    return ctx


async def run(args: argparse.Namespace, origin: dict, ocas: list[dict]) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    push_t = aiohttp.ClientTimeout(total=max(1.0, args.interval_s * 4))
    failing, ready = False, False
    out = Outcomes(len(ocas))
    # keep-alive: one round trip per probe (the control host is ~100 ms RTT from ISP OCAs); a
    # killed process closes its sockets, so the next probe fails at once (refused or disconnected)
    probe_ssl = _client_ssl(args.ca_file)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit_per_host=1,
                                                                    ssl=probe_ssl)) as probes, \
            aiohttp.ClientSession(timeout=push_t) as pusher:
        loops = [asyncio.create_task(probe_loop(probes, o["url"], i, out, args.interval_s, stop))
                 for i, o in enumerate(ocas)]
        waiters = [asyncio.create_task(out.all_seen.wait()), asyncio.create_task(stop.wait())]
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)  # first push: all probed
        for w in waiters:
            w.cancel()
        while not stop.is_set():
            t0 = time.monotonic()
            sent = out.take()
            body = snapshot(origin, ocas, sent, [t.timeout_s() for t in out.timers])
            try:
                async with pusher.post(args.push, json=body) as r:
                    text = await r.text()
                    if r.status != 200:
                        raise RuntimeError(f"HTTP {r.status}: {text[:300]}")
                out.pushed(sent)
                if failing:
                    print(f"probe: push to {args.push} recovered", file=sys.stderr, flush=True)
                failing = False
                if not ready:
                    print(f"READY probe {len(ocas)} ocas", flush=True)
                    ready = True
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError, RuntimeError) as e:
                if not failing:
                    print(f"probe: push to {args.push} failed: {type(e).__name__}: {e}",
                          file=sys.stderr, flush=True)
                failing = True
            try:
                await asyncio.wait_for(stop.wait(), max(0.0, args.interval_s - (time.monotonic() - t0)))
            except asyncio.TimeoutError:
                pass
        for t in loops:  # a probe in flight may have seconds left of its timeout
            t.cancel()
        await asyncio.gather(*loops, return_exceptions=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m controller.probe", description=__doc__.split("\n")[0])
    p.add_argument("--deployment", required=True, type=Path, help="control-plane deployment JSON")
    p.add_argument("--push", required=True, help="controller URL to POST snapshots to (…/ocas)")
    p.add_argument("--interval-s", type=float, default=PROBE_INTERVAL_S)
    p.add_argument("--ca-file", default=None, help="CA certificate https OCAs must chain to")
    a = p.parse_args(argv)
    if not 0.01 <= a.interval_s <= 60:
        p.error("--interval-s must be in [0.01, 60]")
    try:
        origin, ocas = targets(json.loads(a.deployment.read_text()))
    except (OSError, json.JSONDecodeError, ValueError) as e:
        print(f"probe: bad deployment {a.deployment}: {e}", file=sys.stderr)
        return 2
    try:
        _client_ssl(a.ca_file)
    except OSError as e:  # ssl.SSLError is an OSError
        print(f"probe: bad --ca-file {a.ca_file}: {e}", file=sys.stderr)
        return 2
    return asyncio.run(run(a, origin, ocas))


if __name__ == "__main__":
    sys.exit(main())
