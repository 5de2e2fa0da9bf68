"""`python -m controller.probe --deployment FILE --push URL [--interval-s S] [--timeout-s S]`

The controller's fast OCA health signal. Runs in the control-plane host (which reaches every OCA
on the data plane and the controller over the management link): every interval it GETs each
OCA's /health concurrently over kept-alive connections, then POSTs one full snapshot to URL (the
controller's `POST /ocas`, format in controller.ocas). A dead OCA process refuses or drops the
connection, so the controller learns of it within about one interval plus one round trip;
timeouts (slow, not dead) count as failures only when repeated (controller.ocas).
Prints `READY probe <n> ocas` once the first push succeeded; exits 0 on SIGTERM/SIGINT and 2 on
a bad deployment file. Push failures are reported on stderr when they start and when they end.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
from pathlib import Path

import aiohttp

from .ocas import PROBE_INTERVAL_S, TIMEOUT_ERROR, url_host


def targets(deployment: dict) -> tuple[dict, list[dict]]:
    """(origin, OCAs) from a control-plane deployment dict; ValueError naming a bad field."""
    origin = deployment.get("origin") if isinstance(deployment, dict) else None
    if not isinstance(origin, dict) or not isinstance(origin.get("name"), str):
        raise ValueError("deployment.origin: expected an object with name and url")
    url_host(origin.get("url"), "deployment.origin")
    ocas = deployment.get("ocas")
    if not isinstance(ocas, list):
        raise ValueError("deployment.ocas: expected a list")
    out = []
    for i, o in enumerate(ocas):
        if not isinstance(o, dict) or not isinstance(o.get("name"), str):
            raise ValueError(f"deployment.ocas[{i}]: expected an object with a name")
        url_host(o.get("url"), f"deployment.ocas[{i}]")
        out.append({"name": o["name"], "tier": o.get("tier"), "url": o["url"].rstrip("/"),
                    "serves": o.get("serves")})
    return {"name": origin["name"], "url": origin["url"].rstrip("/")}, out


def snapshot(origin: dict, ocas: list[dict], results: list[tuple[dict | None, str | None, float]]) -> dict:
    """The push body: each OCA with its probe outcome (health JSON, error text, rtt in ms)."""
    rows = []
    for o, (health, error, rtt_ms) in zip(ocas, results):
        rows.append({**o, "health": health,
                     "probe": {"ok": health is not None, "error": error, "rtt_ms": round(rtt_ms, 3)}})
    return {"origin": origin, "ocas": rows, "probed_unix": time.time()}


async def probe_one(http: aiohttp.ClientSession, url: str) -> tuple[dict | None, str | None, float]:
    t0 = time.monotonic()
    try:
        async with http.get(f"{url}/health") as r:
            body = await r.json(content_type=None)
            if r.status != 200 or not isinstance(body, dict):
                return None, f"HTTP {r.status}", (time.monotonic() - t0) * 1e3
            return body, None, (time.monotonic() - t0) * 1e3
    except asyncio.TimeoutError:
        return None, TIMEOUT_ERROR, (time.monotonic() - t0) * 1e3
    except (aiohttp.ClientError, OSError, ValueError) as e:
        return None, f"{type(e).__name__}: {e}"[:200], (time.monotonic() - t0) * 1e3


async def run(args: argparse.Namespace, origin: dict, ocas: list[dict]) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    probe_t = aiohttp.ClientTimeout(total=args.timeout_s)
    push_t = aiohttp.ClientTimeout(total=max(1.0, args.interval_s * 4))
    failing, ready = False, False
    # keep-alive: one round trip per probe (the control host is ~100 ms RTT from ISP OCAs); a
    # killed process closes its sockets, so the next probe fails at once (refused or disconnected)
    async with aiohttp.ClientSession(timeout=probe_t, connector=aiohttp.TCPConnector(limit_per_host=1)) as probes, \
            aiohttp.ClientSession(timeout=push_t) as pusher:
        while not stop.is_set():
            t0 = time.monotonic()
            results = await asyncio.gather(*(probe_one(probes, o["url"]) for o in ocas))
            body = snapshot(origin, ocas, list(results))
            try:
                async with pusher.post(args.push, json=body) as r:
                    text = await r.text()
                    if r.status != 200:
                        raise RuntimeError(f"HTTP {r.status}: {text[:300]}")
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
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m controller.probe", description=__doc__.split("\n")[0])
    p.add_argument("--deployment", required=True, type=Path, help="control-plane deployment JSON")
    p.add_argument("--push", required=True, help="controller URL to POST snapshots to (…/ocas)")
    p.add_argument("--interval-s", type=float, default=PROBE_INTERVAL_S)
    p.add_argument("--timeout-s", type=float, default=0.5,
                   help="per-probe timeout (above the control host's RTT to the farthest OCA)")
    a = p.parse_args(argv)
    if not 0.01 <= a.interval_s <= 60 or not 0.01 <= a.timeout_s <= 60:
        p.error("--interval-s and --timeout-s must be in [0.01, 60]")
    try:
        origin, ocas = targets(json.loads(a.deployment.read_text()))
    except (OSError, json.JSONDecodeError, ValueError) as e:
        print(f"probe: bad deployment {a.deployment}: {e}", file=sys.stderr)
        return 2
    return asyncio.run(run(a, origin, ocas))


if __name__ == "__main__":
    sys.exit(main())
