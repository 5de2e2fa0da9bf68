"""The `ocalab` command line. Subcommands import their modules lazily so that `topo show`,
`report` and `doctor` work without root and start fast."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from harness.overrides import parse_overrides



def _positive_int(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {n}")
    return n


DEFAULT_WEB_PORT = 8765


def _port(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 <= n <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0..65535, got {n}")
    return n


def _need_root(what: str) -> None:
    if os.geteuid() != 0:
        raise SystemExit(f"ocalab {what}: needs root (network namespaces, OVS, tc). Run it with sudo.")


def cmd_doctor(a) -> int:
    from ocalab.doctor import main
    return main(as_json=a.json)


def cmd_topo_show(a) -> int:
    from topologies.catalog import by_name
    from ocalab.topo_show import draw_png, describe
    plan = by_name(a.name, parse_overrides(a.set))
    if a.json:
        print(plan.to_json())
    else:
        print(describe(plan))
    if a.png:
        draw_png(plan, Path(a.png))
        print(f"wrote {a.png}")
    return 0


def _network(a, **kw):
    from emulation.build import Network, Options
    from topologies.catalog import by_name
    plan = by_name(a.name, parse_overrides(a.set))
    return Network(plan, Options(link_backend=a.link_backend, datapath=a.datapath,
                                 verify=not a.no_verify, **kw))


def _cli_services(net, arm: str):
    """The appliances of `arm` started for `ocalab cli`, or None for "none"; the caller stops them."""
    if arm == "none":
        return None
    import tempfile
    from harness.services import ServiceOptions, Services
    svc = Services(net, Path(tempfile.mkdtemp(prefix="ocalab-cli-")), ServiceOptions(arm=arm, warm_titles=5))
    try:
        svc.start()
    except BaseException:
        svc.stop()  # removes its scratch folder too
        raise
    return svc


def cmd_cli(a) -> int:
    _need_root("cli")
    from emulation.ledger import install_signal_handlers
    from ocalab.labcli import banner, run_cli, write_details
    install_signal_handlers()
    with _network(a, label="cli", routing=a.routing) as net:
        summary = net.summary()
        details = write_details(summary, net.work_dir)
        if a.details:
            print(json.dumps(summary, indent=1, default=str))
        svc = _cli_services(net, a.services)
        try:
            urls = {} if svc is None else {"control": svc.control_url, "origin": svc.origin_url,
                                           "api": net.api_url, "logs": str(svc.logs)}
            print("\n".join(banner(net.plan, summary, a.services, urls, details)), flush=True)
            from mininet.log import setLogLevel
            from ocalab.web.serve import live
            setLogLevel("output")  # the build runs quietly; the CLI must print what commands print
            with live(net, None if svc is None else svc.logs, a.web):
                run_cli(net.mn)
        finally:
            if svc is not None:  # the OCAs' stores live in a scratch folder until stop()
                svc.stop()
    return 0


def cmd_clean(a) -> int:
    _need_root("clean")
    from emulation.ledger import clean
    removed = clean(force=a.force, log=(lambda *_: None) if a.quiet else print)
    if not a.quiet or any(removed.values()):
        print("ocalab clean: removed " + ", ".join(f"{v} {k}" for k, v in removed.items()))
    return 0


def cmd_run(a) -> int:
    _need_root("run")
    from ocalab.registry import run_scenario
    if a.web is not None:  # harness.runner calls it once the network is up (run folder: top)
        from ocalab.web.serve import live
        a.on_network = lambda net, top: live(net, top, a.web)
    return run_scenario(a)


def cmd_web(a) -> int:
    from ocalab.web.serve import serve_replay
    return serve_replay(a.run_dirs, a.port)


def cmd_report(a) -> int:
    from ocalab.report import report
    return report([Path(d) for d in a.run_dirs], pack=a.pack, show_traceback=a.traceback)


def cmd_lab(a) -> int:
    from ocalab.labs import command
    return command(a)


def cmd_bench(a) -> int:
    from bench.run import run_bench
    return run_bench(a)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ocalab", description="Open Connect emulation testbed")
    sub = p.add_subparsers(dest="cmd", required=True)

    d = sub.add_parser("doctor", help="check this machine and show the backends ocalab will use")
    d.add_argument("--json", action="store_true")
    d.set_defaults(fn=cmd_doctor)

    t = sub.add_parser("topo", help="topology plans")
    tsub = t.add_subparsers(dest="topo_cmd", required=True)
    ts = tsub.add_parser("show", help="print (and draw) a topology plan; no root needed")
    ts.add_argument("name", nargs="?", default="metro")
    ts.add_argument("--png", metavar="FILE")
    ts.add_argument("--json", action="store_true", help="print the plan's JSON export")
    ts.add_argument("--set", action="append", metavar="KEY=VALUE", default=[])
    ts.set_defaults(fn=cmd_topo_show)

    def web_arg(sp):
        sp.add_argument("--web", nargs="?", type=_port, const=DEFAULT_WEB_PORT, default=None, metavar="PORT",
                        help=f"serve a live view of the network on 127.0.0.1:PORT (default {DEFAULT_WEB_PORT})")

    def net_args(sp):
        sp.add_argument("--set", action="append", metavar="KEY=VALUE", default=[])
        sp.add_argument("--link-backend", choices=["auto", "netem", "relay"], default="auto")
        sp.add_argument("--datapath", choices=["auto", "kernel", "user"], default="auto")
        sp.add_argument("--no-verify", action="store_true",
                        help="skip the fidelity gate (results are marked unverified in manifest.json)")
        sp.add_argument("--routing", choices=["static", "bgp"], default="static",
                        help="routers: the plan's static routes, or FRR's bgpd started after the "
                             "fidelity gate (in `ocalab cli` try: i1br vtysh -c 'show bgp summary')")

    c = sub.add_parser("cli", help="build a topology and open Mininet's CLI")
    c.add_argument("name", nargs="?", default="metro")
    c.add_argument("--services", choices=["embedded", "ixp", "origin", "none"], default="embedded",
                   help="which appliances to start in the hosts (default: all OCAs)")
    c.add_argument("--details", action="store_true",
                   help="also print the network's details (backends' reasons, calibration, timings)")
    net_args(c)
    web_arg(c)
    c.set_defaults(fn=cmd_cli)

    r = sub.add_parser("run", help="run an experiment scenario into a new run folder")
    r.add_argument("scenario")
    r.add_argument("--quick", action="store_true")
    r.add_argument("--seed", type=int, default=1)
    r.add_argument("--out", type=Path, default=None)
    r.add_argument("--repeat", type=_positive_int, default=1, metavar="N",
                   help="run the arms N times on one verified network: rep1..repN and their spread")
    r.add_argument("--abr", choices=["bba", "tput", "fixed"], default=None,
                   help="players' ABR (default: bba); 'fixed' (1750 kbps) makes byte counts "
                        "and hit ratios repeat exactly")
    r.add_argument("--miss", choices=["content_miss", "proxy"], default="content_miss",
                   help="what an OCA does with a request it does not hold: content_miss (Open "
                        "Connect: 404, the player goes to its next location) or proxy (the "
                        "ablation: pull it through from the next tier at once)")
    r.add_argument("--tls", choices=["on", "off"], default=None,
                   help="on: every service speaks TLS 1.3 with a per-run lab CA (https "
                        "manifests, fills, control plane; the default of the scenarios that "
                        "honour it: placement); off: plain HTTP (the ablation; the only mode of "
                        "the other scenarios, which refuse on)")
    r.add_argument("--name", default="metro", help="topology")
    net_args(r)
    web_arg(r)
    r.set_defaults(fn=cmd_run)

    w = sub.add_parser("web", help="replay saved run folders in the browser (no root)")
    w.add_argument("run_dirs", nargs="+", type=Path, metavar="RUN_DIR",
                   help="a run folder (several, e.g. a glob: the newest)")
    w.add_argument("--port", type=_port, default=DEFAULT_WEB_PORT, help="on 127.0.0.1 (0: any free port)")
    w.set_defaults(fn=cmd_web)

    rp = sub.add_parser("report", help="rebuild tables and figures of run folders (no root)")
    rp.add_argument("run_dirs", nargs="+")
    rp.add_argument("--pack", action="store_true",
                    help="first replace the scenario's tables with .csv.gz (to commit them), then rebuild")
    rp.add_argument("--traceback", action="store_true", help="show where a failing summary raised")
    rp.set_defaults(fn=cmd_report)

    lb = sub.add_parser("lab", help="lab exercises for a class (labs/): list, show, check a student's run (no root)")
    lsub = lb.add_subparsers(dest="lab_cmd", required=True)
    lsub.add_parser("list", help="the labs in course order, with their commands")
    lsub.add_parser("show", help="print a lab's text").add_argument("lab")
    lc = lsub.add_parser("check", help="verify that RUN_DIR is a complete, verified run of LAB")
    lc.add_argument("lab")
    lc.add_argument("run_dir")
    lc.add_argument("--allow-unverified", action="store_true",
                    help="accept a run made with --no-verify (its figures include the emulator's own error)")
    lsub.add_parser("render", help="rewrite the labs' reference figures from results/ (maintainers)")
    lb.set_defaults(fn=cmd_lab)

    from bench.run import BENCHES
    b = sub.add_parser("bench", help="benchmarks that print measured figures")
    b.add_argument("what", choices=list(BENCHES))
    b.add_argument("--quick", action="store_true")
    b.add_argument("--tls", action="store_true",
                   help="oca only: serve over TLS 1.3 next to nginx with the same certificate, "
                        "loaded by wrk and the project's client")
    b.add_argument("--out", type=Path, default=None)
    b.set_defaults(fn=cmd_bench)

    cl = sub.add_parser("clean", help="remove leftovers of ocalab runs (and nothing else)")
    cl.add_argument("--force", action="store_true", help="also remove resources of runs still alive")
    cl.add_argument("--quiet", action="store_true")
    cl.set_defaults(fn=cmd_clean)
    return p


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    from emulation.linkemu import EmulationError
    from topologies.plan import PlanError
    try:
        return a.fn(a) or 0
    except PlanError as e:
        print(f"ocalab: invalid plan: {e}", file=sys.stderr)
        return 2
    except EmulationError as e:
        print(f"ocalab: emulation failed: {e}", file=sys.stderr)
        return 3
    except BaseException as e:
        from emulation.ledger import Interrupted
        if not isinstance(e, (KeyboardInterrupt, Interrupted)):
            raise

        print(f"ocalab: interrupted ({e or 'Ctrl-C'}); everything started was stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
