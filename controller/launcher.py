"""`python -m controller.launcher --plan FILE --of-port N --api-port M [--stats-interval-s S] [--log FILE]
    [--mgmt-host ADDR] [--anycast-ip ADDR|none] [--relay-map FILE]`

Starts the os-ken app (controller.app) and the HTTP API, both on 127.0.0.1; the API also listens
on ADDR:M with --mgmt-host (the management link the control-plane host reaches). With
--relay-map (written by the builder on the relay backend) it also watches the carrier of the
relay's interfaces (controller.linkwatch), so a link whose far end goes down is seen at once.
Contract:
- prints exactly one line `READY of=<port> api=<port>` on stdout once both listen (port 0 means
  "pick a free one"; the line reports the real ports);
- exits 2 with a message naming the problem on bad arguments or an unreadable/invalid plan,
  1 if the OpenFlow listener does not come up, 70 if a handler fails (CONTROLLER FATAL line);
- SIGTERM/SIGINT: logs, flushes and exits 0 with os._exit (os-ken's run_apps shutdown cannot
  stop native threads).
"""
from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path

from os_ken.base import app_manager  # must be imported before os_ken.cfg is parsed

from topologies.plan import Plan, PlanError

from .anycast import ANYCAST_IP
from .linkwatch import LinkWatcher, RelayMap

LOG = logging.getLogger("ocalab.controller")
LISTEN_HOST = "127.0.0.1"
OF_LISTEN_TIMEOUT_S = 15.0


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m controller.launcher", description=__doc__.split("\n")[0])
    p.add_argument("--plan", required=True, type=Path, help="plan JSON (ocalab-plan/1)")
    p.add_argument("--of-port", required=True, type=int, help="OpenFlow TCP port on 127.0.0.1 (0: pick)")
    p.add_argument("--api-port", required=True, type=int, help="HTTP API port on 127.0.0.1 (0: pick)")
    p.add_argument("--stats-interval-s", type=float, default=1.0, help="port-stats poll interval")
    p.add_argument("--log", type=Path, help="log file (default: stderr only)")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING"])
    p.add_argument("--mgmt-host", help="also serve the API on this local address (same port)")
    p.add_argument("--anycast-ip", default=ANYCAST_IP,
                   help=f"SDN anycast service address (default {ANYCAST_IP}; 'none' disables)")
    p.add_argument("--relay-map", type=Path, help="JSON {netns, links: {link: [a_intf, b_intf]}}")
    a = p.parse_args(argv)
    if a.mgmt_host is not None:
        try:
            ipaddress.ip_address(a.mgmt_host)
        except ValueError:
            p.error(f"--mgmt-host must be an IP address, got {a.mgmt_host!r}")
    a.anycast_ip = None if a.anycast_ip == "none" else a.anycast_ip
    for opt in ("of_port", "api_port"):
        if not 0 <= getattr(a, opt) <= 65535:
            p.error(f"--{opt.replace('_', '-')} must be 0..65535, got {getattr(a, opt)}")
    if not 0.05 <= a.stats_interval_s <= 3600:
        p.error(f"--stats-interval-s must be in [0.05, 3600], got {a.stats_interval_s}")
    return a


def setup_logging(log_file: Path | None, level: str) -> None:
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    root = logging.getLogger()
    root.setLevel(level)
    err = logging.StreamHandler(sys.stderr)
    err.setFormatter(fmt)
    err.setLevel(logging.WARNING if log_file else level)
    root.addHandler(err)
    if log_file:
        fh = logging.FileHandler(log_file)
        fh.setFormatter(fmt)
        root.addHandler(fh)


def die(code: int, msg: str) -> None:
    print(f"ocalab controller: {msg}", file=sys.stderr, flush=True)
    for h in logging.getLogger().handlers:
        h.flush()
    os._exit(code)


def load_plan(path: Path) -> Plan:
    try:
        return Plan.from_json(path.read_text())
    except OSError as e:
        die(2, f"cannot read plan {path}: {e.strerror}")
    except PlanError as e:
        die(2, f"invalid plan {path}: {e}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LISTEN_HOST, 0))
        return s.getsockname()[1]


def check_bindable(port: int) -> None:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((LISTEN_HOST, port))
        except OSError as e:
            die(2, f"OpenFlow port {LISTEN_HOST}:{port} is not free: {e.strerror}")


def tcp_listening(port: int) -> bool:
    """True if some socket of this machine listens on 127.0.0.1:port (read from /proc/net/tcp)."""
    want = f"0100007F:{port:04X}"
    with open("/proc/net/tcp") as f:
        return any(ln.split()[1] == want and ln.split()[3] == "0A" for ln in list(f)[1:])


def run_osken(of_port: int) -> None:
    from os_ken import cfg
    from os_ken.controller import controller  # noqa: F401 - registers the ofp-* options

    cfg.CONF(args=["--ofp-listen-host", LISTEN_HOST, "--ofp-tcp-listen-port", str(of_port)],
             project="os_ken")
    try:
        app_manager.AppManager.run_apps(["controller.app"])
    except BaseException as e:  # noqa: BLE001 - the controller must not stop silently
        from .app import fatal_exit
        fatal_exit("run_apps", e)
    die(1, "os-ken run_apps returned; the controller stopped")


def on_signal(signum, frame) -> None:
    LOG.info("controller stopping (%s)", signal.Signals(signum).name)
    for h in logging.getLogger().handlers:
        h.flush()
    os._exit(0)


def watch_relay(app, state, relay: RelayMap) -> None:
    """Start the relay carrier watcher; its first (full) report arrives before this returns."""
    def on_change(changes: dict[str, bool]) -> None:
        with state.lock:
            lines = state.relay_update(changes, time.time())
        for line in lines:
            LOG.warning("relay: %s", line)

    w = LinkWatcher(relay.netns, on_change, lambda e: app.fatal_exit("linkwatch", e)).start()
    if not w.ready.wait(10):
        die(1, f"relay link watcher in {relay.netns} did not report within 10 s")


def main(argv: list[str] | None = None) -> None:
    a = parse_args(sys.argv[1:] if argv is None else argv)
    setup_logging(a.log, a.log_level)
    plan = load_plan(a.plan)
    from . import app
    from .api import controller_api

    relay = None
    if a.relay_map is not None:
        try:
            relay = RelayMap.load(a.relay_map)
        except (OSError, ValueError) as e:
            die(2, f"relay map {a.relay_map}: {e}")
    try:
        state = app.ControllerState(plan, a.anycast_ip, relay.links if relay else None)
    except (PlanError, ValueError) as e:
        die(2, f"plan {a.plan}: {e}")
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    of_port = a.of_port or free_port()
    check_bindable(of_port)
    try:
        api = controller_api(state, a.api_port, (a.mgmt_host,) if a.mgmt_host else ())
    except OSError as e:
        die(2, f"cannot listen for the API on {LISTEN_HOST}:{a.api_port}"
               f"{f' and {a.mgmt_host}' if a.mgmt_host else ''}: {e.strerror}")
    app.configure(app.Runtime(state, a.stats_interval_s))
    threading.Thread(target=run_osken, args=(of_port,), name="osken", daemon=True).start()
    deadline = time.monotonic() + OF_LISTEN_TIMEOUT_S
    while not tcp_listening(of_port):
        if time.monotonic() > deadline:
            die(1, f"OpenFlow listener on {LISTEN_HOST}:{of_port} did not start within {OF_LISTEN_TIMEOUT_S} s")
        time.sleep(0.05)
    if relay is not None:
        watch_relay(app, state, relay)
    api.start()
    LOG.info("controller for plan %s (%s): OpenFlow %s:%d, API %s port %d, %d switches expected, "
             "anycast %s", plan.name, plan.plan_hash(), LISTEN_HOST, of_port, ",".join(api.hosts),
             api.port, len(state.switches), a.anycast_ip)
    print(f"READY of={of_port} api={api.port}", flush=True)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
