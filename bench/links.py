"""Link benchmarks: the userspace relay (and netem, when the kernel has it), and metro's
build and teardown time. `run_bench_links(out_dir, quick)` runs both (root only).

`run_bench_relay(out_dir, quick)` builds its own namespaces (prefix `ocbr`),
measures ping RTT error (p50/p99) idle and under a 100 Mbit/s iperf3 TCP load
across one relayed link, and one TCP flow's throughput through a chain of
relays; prints a table, writes `bench_relay.json` into out_dir and always
removes what it created.  CLI: `python -m bench.links --out DIR`. Percentiles and medians
are contracts.stats' (linear between closest ranks).

`NetnsLab` (namespaces, veths, processes tracked by handle) and the
measurement helpers are shared with tests/test_relay_netns.py.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import select
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from contracts.stats import median, percentile
from harness.rundir import REPO

TARGETS = {"rtt_err_p50_idle_ms": 0.5, "rtt_err_p50_loaded_ms": 1.0,
           "chain4_mbps": 500, "metro_build_s": 15, "metro_teardown_s": 5}  # printed, not asserted
ADDR_A, ADDR_B = "198.18.250.1", "198.18.250.2"
IPERF_PORT = 5201
WAIT_ALL_S = 5.0  # ping_run: how long past its last send ping waits for every reply
_RTT_RE = re.compile(r"icmp_seq=(\d+) .*time=([\d.]+) ms")
_SENT_RE = re.compile(r"(\d+) packets transmitted")


def _run(cmd: list[str], timeout_s: float = 30.0) -> str:
    """Run cmd; raise RuntimeError with its stderr if it fails."""
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({res.returncode}): {res.stderr.strip()}")
    return res.stdout


class NetnsLab:
    """Named namespaces and processes created by one test/bench; close() removes all."""

    def __init__(self, prefix: str) -> None:
        if not prefix.startswith("oc") or len(prefix) > 11:
            raise ValueError(f"prefix must start with 'oc' and have <= 11 chars, got {prefix!r}")
        self.prefix = prefix
        self.namespaces: list[str] = []
        self.procs: list[subprocess.Popen] = []
        self.tmp = Path(tempfile.mkdtemp(prefix=f"{prefix}-"))

    def __enter__(self) -> "NetnsLab":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def add_ns(self, suffix: str) -> str:
        name = f"{self.prefix}{suffix}"
        _run(["ip", "netns", "add", name])
        self.namespaces.append(name)
        self.sh(name, "ip", "link", "set", "lo", "up")
        self.sh(name, "sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1",
                "net.ipv6.conf.default.disable_ipv6=1")
        return name

    def sh(self, ns: str, *cmd: str, timeout_s: float = 30.0) -> str:
        return _run(["ip", "netns", "exec", ns, *cmd], timeout_s=timeout_s)

    def veth(self, ns1: str, if1: str, ns2: str, if2: str) -> None:
        """Veth if1 (in ns1) <-> if2 (in ns2), both up, TX checksum offload off."""
        for name in (if1, if2):
            if len(name) > 15:
                raise ValueError(f"interface name {name!r} is longer than 15 chars")
        _run(["ip", "link", "add", if1, "netns", ns1, "type", "veth", "peer", "name", if2, "netns", ns2])
        for ns, ifname in ((ns1, if1), (ns2, if2)):
            self.sh(ns, "ethtool", "-K", ifname, "tx", "off")
            self.sh(ns, "ip", "link", "set", ifname, "up")

    def popen(self, ns: str, cmd: list[str], **kw) -> subprocess.Popen:
        proc = subprocess.Popen(["ip", "netns", "exec", ns, *cmd], **kw)
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen, timeout_s: float = 5.0) -> int:
        """Terminate one of our processes by handle; returns its exit status."""
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=timeout_s)
        return proc.returncode

    def close(self) -> None:
        errors = []
        for proc in reversed(self.procs):
            self.stop(proc)
        for ns in reversed(self.namespaces):
            res = subprocess.run(["ip", "netns", "del", ns], capture_output=True, text=True)
            if res.returncode != 0:
                errors.append(f"ip netns del {ns}: {res.stderr.strip()}")
        self.namespaces.clear()
        for path in self.tmp.iterdir():
            path.unlink()
        self.tmp.rmdir()
        if errors:
            raise RuntimeError("; ".join(errors))


def relay_cmd(a: str, b: str, delay_ms_ab: float, delay_ms_ba: float, jitter_ms: float = 0.0,
              loss_pct: float = 0.0, seed: int = 1, queue_pkts: int | None = None,
              stats_file: Path | None = None, ready_file: Path | None = None,
              rt_priority: int | None = None, extra_args: tuple[str, ...] = ()) -> list[str]:
    cmd = [sys.executable, "-m", "emulation.relay", "--a", a, "--b", b,
           "--delay-ms-ab", str(delay_ms_ab), "--delay-ms-ba", str(delay_ms_ba),
           "--jitter-ms", str(jitter_ms), "--loss-pct", str(loss_pct), "--seed", str(seed)]
    if queue_pkts is not None:
        cmd += ["--queue-pkts", str(queue_pkts)]
    if stats_file is not None:
        cmd += ["--stats-file", str(stats_file)]
    if ready_file is not None:
        cmd += ["--ready-file", str(ready_file)]
    if rt_priority is not None:
        cmd += ["--rt-priority", str(rt_priority)]
    return cmd + list(extra_args)


def start_relay(lab: NetnsLab, ns: str, a: str, b: str, tag: str, timeout_s: float = 10.0,
                **params) -> tuple[subprocess.Popen, Path]:
    """Start a relay in ns, wait for its ready file; returns (process, stats file path)."""
    ready, stats = lab.tmp / f"{tag}.ready", lab.tmp / f"{tag}.stats.json"
    for stale in (ready, stats):  # a reused tag must not look ready at once
        stale.unlink(missing_ok=True)
    proc = lab.popen(ns, relay_cmd(a, b, ready_file=ready, stats_file=stats, **params),
                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + timeout_s
    while not ready.exists():
        if proc.poll() is not None:
            raise RuntimeError(f"relay {tag} exited {proc.returncode}: {proc.stderr.read().strip()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"relay {tag} not ready after {timeout_s} s")
        time.sleep(0.02)
    return proc, stats


def build_chain(lab: NetnsLab, n_relays: int) -> tuple[str, str, list[tuple[str, str, str]]]:
    """A <-> R1 <-> ... <-> Rn <-> B on one L2 segment; returns (ns_a, ns_b, [(ns_r, ra, rb)]).

    With one relay the relay namespace is `<prefix>r`; otherwise `<prefix>r1..rn`.
    Relay ends get GRO/GSO/TSO/LRO off, every end TX checksum offload off.
    """
    ns_a, ns_b = lab.add_ns("a"), lab.add_ns("b")
    relays = [lab.add_ns("r" if n_relays == 1 else f"r{i + 1}") for i in range(n_relays)]
    nodes = [ns_a, *relays, ns_b]
    ends: list[tuple[str, str]] = []  # per segment k: (end in nodes[k], end in nodes[k+1])
    for k in range(len(nodes) - 1):
        x, y = f"{lab.prefix}s{k}x", f"{lab.prefix}s{k}y"
        lab.veth(nodes[k], x, nodes[k + 1], y)
        ends.append((x, y))
    out = []
    for i, ns_r in enumerate(relays):
        ra, rb = ends[i][1], ends[i + 1][0]
        for ifname in (ra, rb):
            lab.sh(ns_r, "ethtool", "-K", ifname, "gro", "off", "gso", "off", "tso", "off", "lro", "off")
        out.append((ns_r, ra, rb))
    lab.sh(ns_a, "ip", "addr", "add", f"{ADDR_A}/24", "dev", ends[0][0])
    lab.sh(ns_b, "ip", "addr", "add", f"{ADDR_B}/24", "dev", ends[-1][1])
    return ns_a, ns_b, out


def ping_run(lab: NetnsLab, ns: str, dst: str, count: int, interval_s: float = 0.01,
             wait_all: bool = True) -> tuple[int, list[float]]:
    """(echo requests transmitted, RTTs in ms of the replies) of one ping run. With wait_all,
    ping waits up to WAIT_ALL_S past its last send for every reply (-w): without it (-W 1) ping
    stops two RTTs after its last reply once any came, so one reply that host noise delayed
    counts as lost. Use wait_all=False where losses are expected (they would cost the wait)."""
    wait = ["-w", str(math.ceil(count * interval_s + WAIT_ALL_S))] if wait_all else ["-W", "1"]
    timeout_s = count * interval_s + WAIT_ALL_S + 15
    out = subprocess.run(["ip", "netns", "exec", ns, "ping", "-n", "-i", str(interval_s), "-c", str(count),
                          *wait, dst], capture_output=True, text=True, timeout=timeout_s).stdout
    sent = _SENT_RE.search(out)
    if sent is None:
        raise RuntimeError(f"cannot parse ping output: {out[-300:]!r}")
    return int(sent.group(1)), [float(m.group(2)) for m in _RTT_RE.finditer(out)]


def ping_rtts_ms(lab: NetnsLab, ns: str, dst: str, count: int, interval_s: float = 0.01,
                 wait_all: bool = True) -> list[float]:
    """RTTs (ms) of the replies to `count` pings; lost pings are absent (see ping_run)."""
    return ping_run(lab, ns, dst, count, interval_s, wait_all)[1]


def start_iperf_server(lab: NetnsLab, ns: str, bind: str) -> subprocess.Popen:
    """iperf3 -s (one test) in ns; returns once it listens."""
    proc = lab.popen(ns, ["iperf3", "-s", "-1", "--forceflush", "-B", bind, "-p", str(IPERF_PORT)],
                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    fd, seen = proc.stdout.fileno(), b""
    deadline = time.monotonic() + 5.0
    while b"listening" not in seen and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        chunk = os.read(fd, 4096) if ready else b""
        if ready and not chunk:
            break  # EOF: the server exited
        seen += chunk
    if b"listening" in seen:
        return proc
    raise RuntimeError(f"iperf3 server in {ns} did not start (exit status {proc.poll()})")


def iperf_mbps(lab: NetnsLab, ns_c: str, ns_s: str, duration_s: float,
               rate: str | None = None) -> float:
    """Received Mbit/s of one iperf3 TCP flow from ns_c to ADDR_B in ns_s."""
    server = start_iperf_server(lab, ns_s, ADDR_B)
    cmd = ["iperf3", "-c", ADDR_B, "-p", str(IPERF_PORT), "-t", str(duration_s), "-J"]
    if rate:
        cmd += ["-b", rate]
    out = lab.sh(ns_c, *cmd, timeout_s=duration_s + 20)
    lab.stop(server)
    return json.loads(out)["end"]["sum_received"]["bits_per_second"] / 1e6


def netem_available(lab: NetnsLab) -> tuple[bool, str]:
    """Try a netem qdisc on a scratch veth in a private namespace."""
    ns = lab.add_ns("nt")
    lab.veth(ns, f"{lab.prefix}nx", ns, f"{lab.prefix}ny")
    res = subprocess.run(["ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", f"{lab.prefix}nx",
                          "root", "netem", "delay", "1ms"], capture_output=True, text=True)
    return res.returncode == 0, res.stderr.strip()


def _rtt_summary(rtts_ms: list[float], target_ms: float, sent: int) -> dict:
    errors_ms = [r - target_ms for r in rtts_ms]
    return {"target_rtt_ms": target_ms, "pings_sent": sent, "pings_received": len(rtts_ms),
            "rtt_min_ms": round(min(rtts_ms), 3), "rtt_p50_ms": round(percentile(rtts_ms, 50), 3),
            "err_p50_ms": round(percentile(errors_ms, 50), 3),
            "err_p99_ms": round(percentile(errors_ms, 99), 3)}


def _loaded_rtts(lab: NetnsLab, ns_a: str, ns_b: str, count: int, duration_s: float,
                 rate: str) -> tuple[list[float], float]:
    """Ping A->B while one iperf3 TCP flow of `rate` runs A->B; returns (rtts, Mbit/s)."""
    server = start_iperf_server(lab, ns_b, ADDR_B)
    client = lab.popen(ns_a, ["iperf3", "-c", ADDR_B, "-p", str(IPERF_PORT), "-t", str(duration_s),
                              "-b", rate, "-J"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(1.0)  # let the flow reach its rate first
    rtts = ping_rtts_ms(lab, ns_a, ADDR_B, count)
    out, err = client.communicate(timeout=duration_s + 20)
    lab.stop(server)
    if client.returncode != 0:
        raise RuntimeError(f"iperf3 client failed: {err.strip() or out[-500:]}")
    return rtts, json.loads(out)["end"]["sum_received"]["bits_per_second"] / 1e6


def _warm_up(lab: NetnsLab, ns_a: str) -> None:
    """Resolve ARP across the link so the first measured ping is not inflated."""
    ping_rtts_ms(lab, ns_a, ADDR_B, 3, interval_s=0.05)


def bench_link(lab: NetnsLab, delay_ms: float, n_ping: int, load_s: float) -> dict:
    """RTT error of one relayed link, idle and under a 100 Mbit/s TCP flow.

    The loaded case runs twice: with the relay's default SCHED_FIFO priority
    and with `--rt-priority 0`, to show what real-time scheduling buys.
    """
    ns_a, ns_b, relays = build_chain(lab, 1)
    ns_r, ra, rb = relays[0]
    result: dict = {"delay_ms": delay_ms}
    n_loaded = int((load_s - 2.0) / 0.01)
    for label, rt_priority in (("", None), ("_no_rt", 0)):
        proc, stats_path = start_relay(lab, ns_r, ra, rb, f"link{label}", delay_ms_ab=delay_ms,
                                       delay_ms_ba=delay_ms, rt_priority=rt_priority)
        _warm_up(lab, ns_a)
        if not label:
            result["idle"] = _rtt_summary(ping_rtts_ms(lab, ns_a, ADDR_B, n_ping), 2 * delay_ms, n_ping)
        rtts, mbps = _loaded_rtts(lab, ns_a, ns_b, n_loaded, load_s, "100M")
        result[f"loaded_100M{label}"] = {**_rtt_summary(rtts, 2 * delay_ms, n_loaded),
                                         "tcp_mbps": round(mbps, 1)}
        lab.stop(proc)
        result[f"relay_stats{label}"] = json.loads(stats_path.read_text())
    return result


def proc_cpu_s(pid: int) -> float:
    """User+system CPU seconds of a process (`ip netns exec` execs, so the pid is the relay's)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bench_chain(lab: NetnsLab, n_relays: int, delay_ms: float, duration_s: float) -> dict:
    """One TCP flow's throughput through n_relays relays of delay_ms each way."""
    ns_a, ns_b, relays = build_chain(lab, n_relays)
    procs = [start_relay(lab, ns_r, ra, rb, f"chain{i}", delay_ms_ab=delay_ms, delay_ms_ba=delay_ms)
             for i, (ns_r, ra, rb) in enumerate(relays)]
    _warm_up(lab, ns_a)
    rtts = ping_rtts_ms(lab, ns_a, ADDR_B, 50)
    cpu_before_s = sum(proc_cpu_s(proc.pid) for proc, _ in procs)
    mbps = iperf_mbps(lab, ns_a, ns_b, duration_s)
    cpu_s = sum(proc_cpu_s(proc.pid) for proc, _ in procs) - cpu_before_s
    stats = []
    for proc, path in procs:
        lab.stop(proc)
        stats.append(json.loads(path.read_text()))
    relayed_gbit = mbps / 1000 * duration_s * n_relays  # every relay forwards the flow
    return {"n_relays": n_relays, "delay_ms": delay_ms, "duration_s": duration_s,
            "rtt": _rtt_summary(rtts, 2 * n_relays * delay_ms, 50), "tcp_mbps": round(mbps, 1),
            "relay_cpu_s_total": round(cpu_s, 2),
            "relay_cpu_s_per_gbit": round(cpu_s / relayed_gbit, 3) if relayed_gbit else None,
            "engines": sorted({s.get("engine", "python") for s in stats}),
            "frames_send_errors": sum(s[d]["frames_send_errors"] for s in stats for d in ("ab", "ba"))}


def _print_table(result: dict) -> None:
    link, chain = result["relay"]["link"], result["relay"]["chain"]
    print(f"relay benchmark (one link, {link['delay_ms']} ms each way; target RTT "
          f"{link['idle']['target_rtt_ms']} ms)")
    print(f"{'case':<28}{'rtt p50 ms':>12}{'err p50 ms':>12}{'err p99 ms':>12}{'TCP Mbit/s':>12}")
    for name, row in (("idle", link["idle"]), ("under 100M TCP", link["loaded_100M"]),
                      ("under 100M TCP, no RT prio", link["loaded_100M_no_rt"])):
        print(f"{name:<28}{row['rtt_p50_ms']:>12}{row['err_p50_ms']:>12}{row['err_p99_ms']:>12}"
              f"{row.get('tcp_mbps', ''):>12}")
    print(f"{'chain of %d x %g ms' % (chain['n_relays'], chain['delay_ms']):<28}"
          f"{chain['rtt']['rtt_p50_ms']:>12}{chain['rtt']['err_p50_ms']:>12}"
          f"{chain['rtt']['err_p99_ms']:>12}{chain['tcp_mbps']:>12}")
    one = result["relay"]["one_link"]
    print(f"one link, one TCP flow: {one['tcp_mbps']} Mbit/s ({', '.join(one['engines'])} relay)")
    for name, row in (("chain", chain), ("one link", one)):
        print(f"{name}: relays used {row['relay_cpu_s_total']} CPU-s in {row['duration_s']} s of TCP, "
              f"{row['relay_cpu_s_per_gbit']} CPU-s per Gbit forwarded per relay")
    netem = result["netem"]
    print("netem: " + ("available" if netem["available"] else f"unavailable ({netem['reason']})"))


def _bench_netem(prefix: str, delay_ms: float, n_ping: int) -> dict:
    """Idle RTT error of a netem link (only called where netem works)."""
    with NetnsLab(prefix) as lab:
        ns_a, ns_b = lab.add_ns("a"), lab.add_ns("b")
        x, y = f"{prefix}x", f"{prefix}y"
        lab.veth(ns_a, x, ns_b, y)
        for ns, ifname in ((ns_a, x), (ns_b, y)):
            lab.sh(ns, "tc", "qdisc", "add", "dev", ifname, "root", "netem", "delay", f"{delay_ms}ms")
        lab.sh(ns_a, "ip", "addr", "add", f"{ADDR_A}/24", "dev", x)
        lab.sh(ns_b, "ip", "addr", "add", f"{ADDR_B}/24", "dev", y)
        _warm_up(lab, ns_a)
        idle = _rtt_summary(ping_rtts_ms(lab, ns_a, ADDR_B, n_ping), 2 * delay_ms, n_ping)
        return {"delay_ms": delay_ms, "idle": idle}


def run_bench_relay(out_dir: Path, quick: bool = False) -> dict:
    """Run the relay benchmark (< 60 s), print a table, write out_dir/bench_relay.json."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tag = f"ocbr{os.getpid() % 100000}"
    started = time.monotonic()
    n_ping, load_s, chain_s = (50, 4.0, 3.0) if quick else (200, 8.0, 6.0)
    with NetnsLab(tag + "n") as lab:
        ok, reason = netem_available(lab)
    with NetnsLab(tag + "l") as lab:
        link = bench_link(lab, 10.0, n_ping, load_s)
    with NetnsLab(tag + "c") as lab:
        chain = bench_chain(lab, 4, 1.0, chain_s)
    with NetnsLab(tag + "o") as lab:
        one = bench_chain(lab, 1, 1.0, chain_s)
    netem: dict = {"available": ok, "reason": reason or None}
    if ok:
        netem["link"] = _bench_netem(tag + "m", 10.0, n_ping)
    result = {"machine": {"cpus": os.cpu_count(), "kernel": os.uname().release},
              "quick": quick, "relay": {"link": link, "chain": chain, "one_link": one}, "netem": netem,
              "elapsed_s": round(time.monotonic() - started, 1)}
    _print_table(result)
    (out_dir / "bench_relay.json").write_text(json.dumps(result, indent=1) + "\n")
    return result


def bench_metro_build(repeat: int = 2) -> dict:
    """Build and tear down metro (no fidelity gate) `repeat` times; median seconds per phase."""
    from emulation.build import Network, Options
    from topologies.catalog import metro
    builds, teardowns = [], []
    for _ in range(repeat):
        net = Network(metro(), Options(verify=False, label="bench",
                                       controller=_controller_available()))
        net.start()
        net.stop()
        builds.append(net.timings_s["build"])
        teardowns.append(net.timings_s["teardown"])
    return {"metro_build_s": round(median(builds), 2),
            "metro_teardown_s": round(median(teardowns), 2),
            "builds_s": [round(x, 2) for x in builds],
            "teardowns_s": [round(x, 2) for x in teardowns], "relays": net.summary()["relays"], "link_backend": net.link_backend,
            "switch_datapath": net.datapath}


def _controller_available() -> bool:
    """Metro is built with the os-ken controller whenever the project ships its launcher."""
    return (REPO / "controller" / "launcher.py").exists()


def run_bench_links(out_dir: Path, quick: bool = False) -> dict:
    """`ocalab bench links`: relay figures, metro build/teardown times, what new flows cost on
    metro's embedded and IXP paths (bench.newflows), and the targets they are printed beside;
    sections of the saved JSON. Needs root (namespaces)."""
    if os.geteuid() != 0:
        raise SystemExit("ocalab bench links: needs root")
    links = run_bench_relay(out_dir, quick=quick)
    m = bench_metro_build(repeat=1 if quick else 3)
    print(f"metro build {m['metro_build_s']} s (target <= {TARGETS['metro_build_s']}), teardown "
          f"{m['metro_teardown_s']} s (target <= {TARGETS['metro_teardown_s']}), "
          f"{m['relays']} relays, backend {m['link_backend']}, datapath {m['switch_datapath']}")
    from bench.newflows import bench_new_flows
    return {"links": links, "metro": m, "new_flows": bench_new_flows(quick), "targets": TARGETS}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.links")
    parser.add_argument("--out", required=True, type=Path, help="directory for bench_relay.json")
    parser.add_argument("--quick", action="store_true", help="shorter runs")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("bench_relay: needs root (network namespaces)", file=sys.stderr)
        return 1
    run_bench_relay(args.out, quick=args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
